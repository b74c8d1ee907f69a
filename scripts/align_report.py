"""AER of an en->fr and a fr->en model on the Hansards gold: each direction and symmetrized.

    python scripts/align_report.py --forward outputs/align-en-fr/checkpoints/best.pt \
        --reverse outputs/align-fr-en/checkpoints/best.pt [--json docs/results/align_report.json]

Each model is read the way `mt.align` reads it by default: the aligning heads its checkpoint
records (trained with train.align_weight, or saved by `mt.align sweep --save`), else the mean
of all layers and heads. The reverse model's links are flipped to English-French, then the two
directions are combined (intersection, union, grow-diag-final-and) and scored against the gold.
Prints one table; `--json` also writes precision, recall, AER and counts of every row.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mt.align.extract import align_config_for, align_pairs  # noqa: E402
from mt.align.gold import aer, read_alignment_file  # noqa: E402
from mt.align.symmetrize import invert, symmetrize  # noqa: E402
from mt.checkpoint import load  # noqa: E402
from mt.errors import UserError, exit_on_user_error  # noqa: E402
from mt.fileio import read_lines  # noqa: E402
from mt.paths import ALIGNMENT_GOLD  # noqa: E402

COMBINATIONS = ("intersection", "union", "grow-diag-final-and")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--forward", required=True, help="en->fr checkpoint (or run folder)")
    p.add_argument("--reverse", help="fr->en checkpoint (or run folder): adds the reverse and symmetrized rows")
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
        forward_model = load(args.forward)
        forward_cfg = align_config_for(forward_model.ckpt)
        forward = align_pairs(forward_model, en, fr, forward_cfg)
        rows = {"en->fr": (aer(gold, forward), forward_cfg.describe())}
        if args.reverse:
            reverse_model = load(args.reverse)
            reverse_cfg = align_config_for(reverse_model.ckpt)
            reverse = [invert(links) for links in align_pairs(reverse_model, fr, en, reverse_cfg)]
            rows["fr->en"] = (aer(gold, reverse), reverse_cfg.describe())
            for method in COMBINATIONS:
                combined = [symmetrize(f, r, method) for f, r in zip(forward, reverse)]
                rows[method] = (aer(gold, combined), "both directions")
        print(f"{args.name}: AER on the {len(gold)} Hansards en-fr gold pairs")
        print(f"  {'alignment':<22} {'precision':>9} {'recall':>7} {'AER':>6}  read from")
        for name, (score, source) in rows.items():
            print(
                f"  {name:<22} {100 * score.precision:9.1f} {100 * score.recall:7.1f} {100 * score.aer:6.1f}  {source}"
            )
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            record = {
                "name": args.name,
                "forward": str(args.forward),
                "reverse": str(args.reverse) if args.reverse else None,
                "scores": {name: {**asdict(score), "read_from": source} for name, (score, source) in rows.items()},
            }
            Path(args.json).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
