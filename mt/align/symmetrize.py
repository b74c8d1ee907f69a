"""Symmetrization: combine the links of a source->target and a target->source model (Koehn et al.),
or their word matrices (`mutual_of_mean`)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from mt.align.extract import Link, mutual_links
from mt.errors import UserError


def invert(links: Iterable[Link]) -> list[Link]:
    """Links of a tgt->src model (its source = our target) in our source-target order."""
    return sorted((j, i) for i, j in links)


NEIGHBOURS = [(-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]


def _grow(alignment: set[Link], union: set[Link]) -> set[Link]:
    """Koehn's grow-diag: add union points next to (incl. diagonally) aligned points whose
    source or target word is still unaligned, until nothing changes."""
    alignment = set(alignment)
    grown = True
    while grown:
        grown = False
        for i, j in sorted(alignment):
            for di, dj in NEIGHBOURS:
                p = (i + di, j + dj)
                if p in union and p not in alignment:
                    if p[0] not in {a for a, _ in alignment} or p[1] not in {b for _, b in alignment}:
                        alignment.add(p)
                        grown = True
    return alignment


def grow_diag_final(forward: Iterable[Link], backward: Iterable[Link], final_and: bool = False) -> set[Link]:
    """Koehn et al.'s grow-diag-final(-and), both inputs as (source, target) links."""
    f, b = set(forward), set(backward)
    alignment = _grow(f & b, f | b)
    for direction in (f, b):  # final(-and): points of each direction touching an unaligned word
        for p in sorted(direction):
            if p in alignment:
                continue
            unaligned_src = p[0] not in {a for a, _ in alignment}
            unaligned_tgt = p[1] not in {c for _, c in alignment}
            if (unaligned_src and unaligned_tgt) if final_and else (unaligned_src or unaligned_tgt):
                alignment.add(p)
    return alignment


SYMMETRIZE = ("intersection", "union", "grow-diag", "grow-diag-final", "grow-diag-final-and")
MUTUAL_OF_MEAN = "mutual-of-mean"  # from the word matrices, not the links: mutual_of_mean


def mutual_of_mean(forward: Tensor, reverse: Tensor) -> list[Link]:
    """The mutual-argmax links of the two directions' word matrices averaged.

    `forward`: [target words, source words] of the source->target model; `reverse`: the
    target->source model's matrix of the same pair, [source words, target words]. Each cell is then
    the mean attention between the two words as both models see it, and a link needs both its row
    and its column to agree on it. Where a model saw fewer words of a long pair (each side is cut
    to the model's positions), only the words both saw are linked.
    """
    if forward.numel() == 0 or reverse.numel() == 0:
        return []
    rows, cols = min(forward.size(0), reverse.size(1)), min(forward.size(1), reverse.size(0))
    return mutual_links((forward[:rows, :cols] + reverse.t()[:rows, :cols]) / 2)


def symmetrize(forward: Iterable[Link], backward: Iterable[Link], method: str) -> list[Link]:
    """Combine a source->target and a target->source alignment (both given as (source, target))."""
    f, b = set(forward), set(backward)
    if method == "intersection":
        out = f & b
    elif method == "union":
        out = f | b
    elif method == "grow-diag":
        out = _grow(f & b, f | b)
    elif method == "grow-diag-final":
        out = grow_diag_final(f, b)
    elif method == "grow-diag-final-and":
        out = grow_diag_final(f, b, final_and=True)
    else:
        raise UserError(f"--symmetrize must be one of {', '.join(SYMMETRIZE)}, not '{method}'")
    return sorted(out)
