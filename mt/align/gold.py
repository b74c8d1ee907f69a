"""Gold alignments: reading `i-j` (sure) / `ipj` (possible) links, and scoring (precision, recall, AER)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mt.align.extract import Link
from mt.errors import UserError
from mt.fileio import read_lines


@dataclass
class GoldLine:
    sure: set[Link]
    possible: set[Link]  # includes the sure links (S ⊆ P)


def parse_links(line: str, one_based: bool = False, where: str = "") -> GoldLine:
    """`i-j` (sure) and `ipj` (possible) links -> GoldLine; 0-based unless one_based."""
    sure: set[Link] = set()
    possible: set[Link] = set()
    shift = 1 if one_based else 0
    for token in line.split():
        kind = "p" if "p" in token else "-" if "-" in token else None
        parts = token.split(kind) if kind else []
        if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
            raise UserError(f"{where}: cannot read alignment link '{token}' (expected i-j or ipj)")
        link = (int(parts[0]) - shift, int(parts[1]) - shift)
        if link[0] < 0 or link[1] < 0:
            raise UserError(f"{where}: link '{token}' has index 0 in a one-based file (drop --gold-one-based?)")
        possible.add(link)
        if kind == "-":
            sure.add(link)
    return GoldLine(sure, possible)


def read_alignment_file(path: str | Path, one_based: bool = False) -> list[GoldLine]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"alignment file not found: {path}")
    return [parse_links(line, one_based, f"{path}:{n}") for n, line in enumerate(read_lines(path), start=1)]


def flip_gold(gold: Sequence[GoldLine]) -> list[GoldLine]:
    return [GoldLine({(j, i) for i, j in g.sure}, {(j, i) for i, j in g.possible}) for g in gold]


def check_gold_ranges(
    gold: Sequence[GoldLine],
    path: str | Path,
    src_lines: Sequence[str],
    tgt_lines: Sequence[str],
    one_based: bool = False,
    reversed_: bool = False,
) -> None:
    """Refuse a gold link outside its sentence pair's words (whitespace tokens): it could never be
    matched (a sweep would count it as a miss, a plot would drop it), so the file or its options
    (--gold-one-based, --gold-reversed) are wrong. `gold` is source-target (flipped if reversed_);
    the message names the link and the sentence sizes as the file writes them."""
    for n, (g, src, tgt) in enumerate(zip(gold, src_lines, tgt_lines), start=1):
        sizes = (len(src.split()), len(tgt.split()))
        for i, j in sorted(g.possible | g.sure):
            if i < sizes[0] and j < sizes[1]:
                continue
            first, second = (j, i) if reversed_ else (i, j)
            shift = 1 if one_based else 0
            kind = "-" if (i, j) in g.sure else "p"
            rows, cols = sizes[::-1] if reversed_ else sizes
            raise UserError(
                f"{path} line {n}: link {first + shift}{kind}{second + shift} is outside the {rows} x {cols} "
                "words of that sentence pair"
            )


def require_gold_links(gold: Sequence[GoldLine], path: str | Path) -> None:
    """An AER against a gold file without a single link would be a perfect 0: refuse it instead."""
    if not any(g.possible or g.sure for g in gold):
        raise UserError(f"{path} has no gold links to score against")


@dataclass
class Score:
    precision: float
    recall: float
    aer: float
    hyp_links: int
    sure_links: int
    possible_links: int
    hyp_sure: int  # |A ∩ S|
    hyp_possible: int  # |A ∩ P|


def aer(gold: Sequence[GoldLine], hyp: Sequence[Iterable[Link]]) -> Score:
    """Corpus-level precision, recall and AER (Och & Ney 2003), P including S.

    precision = |A∩P| / |A|, recall = |A∩S| / |S|, AER = 1 - (|A∩S| + |A∩P|) / (|A| + |S|).
    With nothing to count (|A| = 0, |S| = 0) precision / recall are 1 and AER 0.
    """
    if len(gold) != len(hyp):
        raise UserError(f"gold has {len(gold)} sentences but the hypothesis has {len(hyp)}")
    a_total = s_total = p_total = a_s = a_p = 0
    for g, h in zip(gold, hyp):
        links = set(h)
        possible = g.possible | g.sure
        a_total += len(links)
        s_total += len(g.sure)
        p_total += len(possible)
        a_s += len(links & g.sure)
        a_p += len(links & possible)
    precision = a_p / a_total if a_total else 1.0
    recall = a_s / s_total if s_total else 1.0
    error = 1.0 - (a_s + a_p) / (a_total + s_total) if a_total + s_total else 0.0
    return Score(precision, recall, error, a_total, s_total, p_total, a_s, a_p)


def format_score(score: Score) -> str:
    return (
        f"precision {100 * score.precision:.2f}  recall {100 * score.recall:.2f}  AER {100 * score.aer:.2f}"
        f"  (|A| {score.hyp_links}, |S| {score.sure_links}, |P| {score.possible_links})"
    )


def read_gold_pairs(path: Path) -> tuple[list[str], list[str]]:
    """`source ||| target` lines -> whitespace-normalized source and target sentences."""
    if not path.is_file():
        raise UserError(f"gold sentence file not found: {path}")
    src, tgt = [], []
    for n, line in enumerate(read_lines(path), start=1):
        parts = line.split("|||")
        if len(parts) != 2:
            raise UserError(f"{path}:{n}: expected 'source ||| target'")
        src.append(" ".join(parts[0].split()))
        tgt.append(" ".join(parts[1].split()))
    return src, tgt
