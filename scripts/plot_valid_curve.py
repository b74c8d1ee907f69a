"""Plot validation BLEU against training minutes for one or more runs (from their TensorBoard logs).

python scripts/plot_valid_curve.py outputs/multi30k-en-de/RUN [...] --out docs/img/valid_bleu.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def curve(run_dir: Path) -> tuple[list[float], list[float]]:
    """(wall-clock minutes since the first logged step, validation BLEU) pairs."""
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    start = min(e.wall_time for e in events.Scalars("train/loss"))
    points = events.Scalars("valid/bleu")
    return [(p.wall_time - start) / 60 for p in points], [p.value for p in points]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", default="valid_bleu.png")
    args = p.parse_args()
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in args.runs:
        minutes, bleu = curve(run)
        ax.plot(minutes, bleu, marker="o", label=run.name)
        for m, b in zip(minutes, bleu):
            print(f"{run.name}  {m:6.1f} min  valid BLEU {b:5.2f}")
    ax.set_xlabel("wall-clock minutes (training + validation)")
    ax.set_ylabel("validation BLEU (greedy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
