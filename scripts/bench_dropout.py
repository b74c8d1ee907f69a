"""Dropout masks on the CPU: mt.model.dropout_keep_scale (four mask elements per 64-bit random draw)
against the rand_like mask it replaced, in one process, on the same data.

    python scripts/bench_dropout.py [--steps 20] [--block 5] [--warmup 2] [--set train.threads=1 ...]

1. The mask alone and dropout forward + backward, on an activation of the default recipe's
   largest dropout site ([max_tokens, ffn_dim]); best of --reps timings, the two masks alternating.
2. The real training step (mt.engine.Engine.update) on the recipe's batches, with each mask in
   turn: blocks of --block steps, the order alternating block by block (new/old, old/new, ...),
   so machine noise hits both alike. Both continue training the same model (the mask changes
   which units drop, not the cost of anything else).
Prints the times, tokens/s and the speed-ups, and saves them as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

import mt.model
from mt.cli import compose_config
from mt.device import cpu_info
from mt.errors import exit_on_user_error
from mt.fileio import atomic_write_text
from mt.train import Trainer

if __package__:  # python -m scripts.bench_dropout
    from .bench_train import Contender, best_ms, engine_step, race, recipe_batches
else:  # python scripts/bench_dropout.py (scripts/ is on sys.path)
    from bench_train import Contender, best_ms, engine_step, race, recipe_batches

NEW_MASK = mt.model.dropout_keep_scale


def rand_like_keep_scale(x: torch.Tensor, p: float) -> torch.Tensor:
    """The mask mt used before: one float draw per element."""
    return torch.rand_like(x).ge_(p).div_(1.0 - p)


MASKS = {"dropout_keep_scale": NEW_MASK, "rand_like": rand_like_keep_scale}


def dropout_forward_backward(mask, x: torch.Tensor, p: float) -> None:
    keep = mask(x, p)
    y = x * keep
    y.backward(torch.ones_like(y))  # the backward of x * keep is grad * keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps with each mask")
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10, help="timings of the mask alone (best is kept)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides")
    ap.add_argument("--json", default="outputs/bench/dropout.json")
    args = ap.parse_args()
    if min(args.steps, args.block, args.reps) < 1 or args.warmup < 0:
        ap.error("--steps, --block and --reps must be >= 1, --warmup >= 0")
    with exit_on_user_error("bench_dropout"):
        cfg = compose_config(["train.progress=false", *args.set])
        trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="mt-bench-")))
        trainer.setup()  # sets the threads and mt.device.keep_freed_memory as training does
    p = cfg.model.dropout
    x = torch.randn(cfg.train.max_tokens, cfg.model.ffn_dim, requires_grad=True)
    mask_ms: dict[str, dict[str, float]] = {name: {} for name in MASKS}
    for _ in range(2):  # the second round is kept: the first pays for fresh memory
        for name, mask in MASKS.items():
            mask_ms[name]["mask"] = best_ms(lambda mask=mask: mask(x.detach(), p), args.reps)
            mask_ms[name]["forward_backward"] = best_ms(
                lambda mask=mask: dropout_forward_backward(mask, x, p), args.reps
            )

    engine = trainer.engine

    def use_mask(mask) -> Callable[[], None]:
        def activate() -> None:
            mt.model.dropout_keep_scale = mask

        return activate

    batches = recipe_batches(trainer, args.warmup + args.steps)
    update = engine_step(engine)  # one model trained by both: its steps numbered in the order they run
    raced = race(
        {name: Contender(update, use_mask(mask)) for name, mask in MASKS.items()},
        batches,
        args.warmup,
        args.block,
        engine.device,
    )
    mt.model.dropout_keep_scale = NEW_MASK
    block_speedups = raced.block_speedups("rand_like", "dropout_keep_scale")
    tokens = sum(b.num_tokens for b in batches[args.warmup :])
    result = {
        **cpu_info(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "config": args.set,
        "dropout": p,
        "activation_shape": list(x.shape),
        "mask_ms": mask_ms,
        "mask_speedup": mask_ms["rand_like"]["mask"] / mask_ms["dropout_keep_scale"]["mask"],
        "forward_backward_speedup": mask_ms["rand_like"]["forward_backward"]
        / mask_ms["dropout_keep_scale"]["forward_backward"],
        "steps": args.steps,
        "tokens_per_sec": {name: tokens / s for name, s in raced.seconds.items()},
        "training_step_speedup": raced.speedup("rand_like", "dropout_keep_scale"),
        "training_step_speedup_per_block": block_speedups,
        "training_step_speedup_per_block_median": statistics.median(block_speedups),
    }
    print(json.dumps(result, indent=2))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.json), json.dumps(result, indent=2) + "\n")
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
