"""AER of an en->fr and a fr->en model on the Hansards gold: each direction and symmetrized.

    python scripts/align_report.py --forward outputs/align-en-fr/checkpoints/best.pt \
        --reverse outputs/align-fr-en/checkpoints/best.pt [--json docs/results/align_report.json]

Each model is read the way `mt.align` reads it by default: the aligning heads its checkpoint
records (trained with train.align_weight, or saved by `mt.align sweep --save`), else the mean
of all layers and heads; each direction's links both ways `mt.align --links` offers (argmax:
every target word linked; mutual: row and column maxima agree). The reverse model's links are
flipped to English-French, then the two directions' links of each rule are combined
(intersection, union, grow-diag-final-and), and their word matrices averaged (mutual-of-mean),
all scored against the gold. Prints one table; `--json` also writes precision, recall, AER and
counts of every row.

Several checkpoints of one run (e.g. the weight snapshots `train.average_last` keeps) may be
given for a direction: their teacher-forced attention is averaged pair by pair before the links
are read (an ensemble of readings, unlike `mt.average`, which averages the weights).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mt.align.extract import LINKS, WordAlignment, align_config_for, all_alignments, pairs_attention  # noqa: E402
from mt.align.gold import aer, read_alignment_file  # noqa: E402
from mt.align.symmetrize import MUTUAL_OF_MEAN, invert, mutual_of_mean, symmetrize  # noqa: E402
from mt.checkpoint import load  # noqa: E402
from mt.errors import UserError, exit_on_user_error  # noqa: E402
from mt.fileio import read_lines  # noqa: E402
from mt.paths import ALIGNMENT_GOLD  # noqa: E402

COMBINATIONS = ("intersection", "union", "grow-diag-final-and")


def read_both_ways(
    checkpoints: list[str], src: list[str], tgt: list[str]
) -> tuple[dict[str, list[WordAlignment]], str]:
    """The teacher-forced word alignments under each link rule, and where they are read from.

    With several checkpoints (of one run: same tokenizer, same aligning heads), each pair's
    attention is the mean of theirs."""
    first_cfg, first_shape, first_enc, total = None, None, None, None
    for checkpoint in checkpoints:
        model = load(checkpoint)
        cfg, shape = align_config_for(model.ckpt), model.ckpt["model_config"]
        if first_cfg is not None and (cfg != first_cfg or shape != first_shape):  # before a pass over the gold
            raise UserError(
                f"{checkpoint} and {checkpoints[0]}: not one run (the first reads the gold from "
                f"{cfg.describe()}, the second from {first_cfg.describe()}, or their model sizes differ)"
            )
        att, enc = pairs_attention(model, src, tgt, cfg)
        if first_cfg is None:
            first_cfg, first_shape, first_enc, total = cfg, shape, enc, att
            continue
        if enc != first_enc:
            raise UserError(f"{checkpoint} tokenizes the gold differently from {checkpoints[0]}: not one run")
        total = [a + b for a, b in zip(total, att, strict=True)]
    att = [a / len(checkpoints) for a in total]
    where = first_cfg.describe() + (f", mean of {len(checkpoints)} checkpoints" if len(checkpoints) > 1 else "")
    return {rule: all_alignments(att, first_enc, replace(first_cfg, links=rule)) for rule in LINKS}, where


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--forward", required=True, nargs="+", help="en->fr checkpoint(s) (or run folder)")
    p.add_argument(
        "--reverse", nargs="+", help="fr->en checkpoint(s) (or run folder): adds the reverse and symmetrized rows"
    )
    p.add_argument("--src", default="data/align/hansards.en", help="gold English side (mt.align prepare-gold)")
    p.add_argument("--tgt", default="data/align/hansards.fr", help="gold French side")
    p.add_argument("--gold", default=str(ALIGNMENT_GOLD / "hansards.gold"), help="gold links (one-based, en-fr)")
    p.add_argument("--name", default="model", help="what to call the system in the table")
    p.add_argument("--json", help="write the scores here")
    args = p.parse_args()
    with exit_on_user_error("align_report"):
        en, fr = read_lines(Path(args.src)), read_lines(Path(args.tgt))
        gold = read_alignment_file(args.gold, one_based=True)
        if not len(en) == len(fr) == len(gold):
            raise UserError(f"{len(en)} English, {len(fr)} French and {len(gold)} gold lines: they must match")
        forward, forward_source = read_both_ways(args.forward, en, fr)
        rows = {f"en->fr {rule}": (aer(gold, [w.links for w in forward[rule]]), forward_source) for rule in LINKS}
        if args.reverse:
            reverse, reverse_source = read_both_ways(args.reverse, fr, en)
            flipped = {rule: [invert(w.links) for w in reverse[rule]] for rule in LINKS}  # English-French
            for rule in LINKS:
                rows[f"fr->en {rule}"] = (aer(gold, flipped[rule]), reverse_source)
            for rule in LINKS:
                for method in COMBINATIONS:
                    combined = [
                        symmetrize(f.links, r, method) for f, r in zip(forward[rule], flipped[rule], strict=True)
                    ]
                    rows[f"{method} ({rule})"] = (aer(gold, combined), "both directions")
            # a pair's word matrix is the same under either link rule
            pairs = zip(forward["argmax"], reverse["argmax"], strict=True)
            mean_links = [mutual_of_mean(f.matrix, r.matrix) for f, r in pairs]
            rows[MUTUAL_OF_MEAN] = (aer(gold, mean_links), "both matrices")
        print(f"{args.name}: AER on the {len(gold)} Hansards en-fr gold pairs")
        print(f"  {'alignment':<32} {'precision':>9} {'recall':>7} {'AER':>6}  read from")
        for name, (score, source) in rows.items():
            print(
                f"  {name:<32} {100 * score.precision:9.1f} {100 * score.recall:7.1f} {100 * score.aer:6.1f}  {source}"
            )
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            record = {
                "name": args.name,
                "forward": args.forward if len(args.forward) > 1 else args.forward[0],
                "reverse": (args.reverse if len(args.reverse) > 1 else args.reverse[0]) if args.reverse else None,
                "scores": {name: {**asdict(score), "read_from": source} for name, (score, source) in rows.items()},
            }
            Path(args.json).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
