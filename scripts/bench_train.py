"""Training throughput of a model config on Multi30k: tokens/s and share of the CPU's fp32 peak.

    python scripts/bench_train.py [--steps 30] [--set model=small train.max_tokens=4096 ...]

Runs the real training step (mt.engine.Engine.update) on real batches. Tokens are
non-pad source + target tokens. Model FLOPs count the matmuls of the forward pass on real
tokens (projections, attention scores, FFN, output layer) x 3 for forward + backward.
The peak is measured (a large fp32 matmul on all threads) and a nominal figure can be given.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from mt.batching import bucket_batches, collate
from mt.cli import compose_config
from mt.errors import exit_on_user_error
from mt.tokenizer import PAD_ID
from mt.train import Trainer


def measured_peak_gflops(n: int = 2048, repeat: int = 10, trials: int = 5) -> float:
    """Best of `trials` timings of `repeat` n x n fp32 matmuls: the machine's attainable peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeat):
            a @ b
        best = max(best, 2 * n**3 * repeat / (time.perf_counter() - start) / 1e9)
    return best


def forward_flops(model, batch) -> float:
    """Matmul FLOPs of one forward pass over the batch's real tokens."""
    c = model.config
    d, f = c.d_model, c.ffn_dim
    src_len = (batch.src != PAD_ID).sum(1).double()
    tgt_len = (batch.tgt_out != PAD_ID).sum(1).double()
    n_enc, n_dec = len(model.encoder), len(model.decoder)
    enc = n_enc * (src_len * (4 * d * d + 2 * d * f) + 2 * src_len * src_len * d).sum()
    dec_self = tgt_len * (4 * d * d) + tgt_len * tgt_len * d  # causal scores: half of 2*T*T*d
    dec_cross = tgt_len * (2 * d * d) + src_len * (2 * d * d) + 2 * tgt_len * src_len * d
    dec = n_dec * (dec_self + dec_cross + tgt_len * 2 * d * f).sum()
    out = tgt_len.sum() * d * model.tgt_vocab_size
    return float(2 * (enc + dec + out))  # 2 FLOPs per multiply-add


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--set", nargs="*", default=[], help="config overrides")
    p.add_argument("--nominal-peak", type=float, default=0.0, help="nominal fp32 GFLOP/s of this CPU, if known")
    p.add_argument("--json", default="outputs/bench/train.json")
    args = p.parse_args()
    overrides = ["data.dir=data/multi30k", "train.progress=false", *args.set]
    with exit_on_user_error("bench_train"):
        cfg = compose_config(overrides)
        trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="mt-bench-")))
        trainer.setup()
    train = trainer.data.splits["train"]
    batches = bucket_batches(trainer.src_lens, trainer.tgt_lens, cfg.train.max_tokens, seed=0)
    tokens = flops = 0.0
    seconds = 0.0
    for i in range(args.warmup + args.steps):
        batch = collate(train, batches[i % len(batches)])
        start = time.perf_counter()
        trainer.engine.update([batch], step=i + 1)
        elapsed = time.perf_counter() - start
        if i >= args.warmup:
            seconds += elapsed
            tokens += batch.num_tokens
            flops += 3 * forward_flops(trainer.model, batch)
    peak = measured_peak_gflops()
    achieved = flops / seconds / 1e9
    result = {
        "config": overrides,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "parameters": trainer.model.num_parameters(),
        "steps": args.steps,
        "tokens_per_sec": tokens / seconds,
        "model_gflops_per_sec": achieved,
        "measured_matmul_peak_gflops": peak,
        "mfu_vs_measured_peak": achieved / peak,
    }
    if args.nominal_peak:
        result["nominal_peak_gflops"] = args.nominal_peak
        result["mfu_vs_nominal_peak"] = achieved / args.nominal_peak
    for key, value in result.items():
        print(f"{key:>28}: {value:,.3f}" if isinstance(value, float) else f"{key:>28}: {value}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
