"""Alignment experiments: the layer x head x shift x pooling sweep (AER per configuration) and
word-level attention heatmaps of chosen sentence pairs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from torch import Tensor

from mt.align.extract import WORDS, AlignConfig, Encoded, align_words, all_links, encode_pairs, pair_attention
from mt.align.gold import GoldLine, aer
from mt.align.symmetrize import invert, symmetrize
from mt.checkpoint import AligningHeads
from mt.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SWEEP_SYSTEMS = ("forward", "reverse", "intersection", "union", "grow-diag-final", "grow-diag-final-and")


def sweep(
    att: Sequence[Tensor],
    enc: Encoded,
    gold: Sequence[GoldLine],
    layers: int,
    heads: int,
    reverse: tuple[Sequence[Tensor], Encoded] | None = None,
) -> list[dict]:
    """AER of every layer (and mean) x head (and mean) x shift, as a list of rows.

    With `reverse` (attention and encoding of the target->source model on the swapped pairs),
    also the reverse direction and its symmetrizations with the forward one, same configuration.
    """
    rows = []
    for words, shift in itertools.product(WORDS, (True, False)):
        for layer in [*range(layers), None]:
            for head in [*range(heads), None]:
                cfg = AlignConfig(layer, head, shift, words)
                systems = {"forward": all_links(att, enc, cfg)}
                if reverse is not None:
                    backward = [invert(x) for x in all_links(*reverse, cfg)]
                    systems["reverse"] = backward
                    for method in SWEEP_SYSTEMS[2:]:
                        systems[method] = [symmetrize(f, r, method) for f, r in zip(systems["forward"], backward)]
                for system, hyp in systems.items():
                    rows.append(
                        {
                            "system": system,
                            "layer": "mean" if layer is None else layer,
                            "head": "mean" if head is None else head,
                            "shift": shift,
                            "words": words,
                            **asdict(aer(gold, hyp)),
                        }
                    )
    return rows


def sweep_table(rows: Sequence[dict], heads: int, system: str = "forward") -> str:
    """AER (%) as a table: one line per (words, shift, layer), one column per head."""
    rows = [r for r in rows if r.get("system", "forward") == system]
    columns = [*range(heads), "mean"]
    lines = ["words    shift  layer  " + "  ".join(f"{'head ' + str(h):>9}" for h in columns)]
    by_key = {(r.get("words", "sum"), r["shift"], r["layer"], r["head"]): r for r in rows}
    for words in dict.fromkeys(r.get("words", "sum") for r in rows):
        for shift in (True, False):
            for layer in sorted({r["layer"] for r in rows}, key=lambda x: (x == "mean", str(x))):
                cells = [f"{100 * by_key[(words, shift, layer, h)]['aer']:9.1f}" for h in columns]
                lines.append(f"{words:<7}  {'yes' if shift else 'no':<5}  {str(layer):<5}  " + "  ".join(cells))
    best = min(rows, key=lambda r: r["aer"])
    lines.append(
        f"best: layer={best['layer']} head={best['head']} shift={'yes' if best['shift'] else 'no'} "
        f"words={best.get('words', 'sum')}  AER {100 * best['aer']:.2f} "
        f"(precision {100 * best['precision']:.2f}, recall {100 * best['recall']:.2f})"
    )
    return "\n".join(lines)


def best_recordable(rows: Sequence[dict], words: str) -> dict | None:
    """The forward cell with the lowest AER that a checkpoint's alignment record can name: one
    layer (a record has no "mean of layers"), read with `words` pooling (a record has no pooling:
    its readers use the default). None if the sweep has no such cell."""
    cells = [r for r in rows if r["system"] == "forward" and r["layer"] != "mean" and r["words"] == words]
    return min(cells, key=lambda r: r["aer"]) if cells else None


def heads_record(row: dict, heads: int, full_context: bool) -> AligningHeads:
    """A sweep row as a checkpoint's "alignment" record (mt.checkpoint.AligningHeads): head "mean"
    is the list of every head."""
    return {
        "layer": int(row["layer"]),
        "heads": list(range(heads)) if row["head"] == "mean" else [int(row["head"])],
        "shift": bool(row["shift"]),
        "full_context": full_context,
        "source": "sweep",
        "aer": float(row["aer"]),
    }


def pair_figures(
    loaded,
    src_lines: Sequence[str],
    tgt_lines: Sequence[str],
    numbers: Sequence[int],
    cfg: AlignConfig,
    gold: Sequence[GoldLine] | None = None,
    device="cpu",
) -> Iterator[tuple[int, Figure]]:
    """Heatmap of the word matrix of each pair numbered in `numbers` (from 1), with gold links
    (squares: sure solid, possible dotted) and the links (red dots) of `align_words`.

    Yields (line number, figure); the caller writes them (to the outputs it opened beforehand).
    """
    from matplotlib.patches import Rectangle

    from mt.plot import heatmap

    for n in numbers:
        src_words, tgt_words = src_lines[n - 1].split(), tgt_lines[n - 1].split()
        enc = encode_pairs(
            loaded.tokenizer, [src_lines[n - 1]], [tgt_lines[n - 1]], loaded.model.config.max_positions - 1
        )
        att = pair_attention(loaded, enc, device, full_context=cfg.full_context)[0]
        if not att.numel():
            raise UserError(f"line {n} has an empty side")
        matrix, links = align_words(att, enc.src_words[0], enc.tgt_words[0], cfg)
        fig = heatmap(
            matrix,
            src_words[: matrix.size(1)],
            tgt_words[: matrix.size(0)],
            f"line {n}: {cfg.describe()}, words {cfg.words}",
        )
        ax = fig.axes[0]
        if gold is not None:
            g = gold[n - 1]
            for gold_links, style in ((g.possible - g.sure, ":"), (g.sure, "-")):
                for i, j in gold_links:
                    ax.add_patch(
                        Rectangle(
                            (i - 0.5, j - 0.5), 1, 1, fill=False, edgecolor="white", linestyle=style, linewidth=1.2
                        )
                    )
        for i, j in links:
            ax.plot(i, j, "o", color="red", markersize=3)
        yield n, fig
