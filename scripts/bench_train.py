"""Training throughput of a model config on its training data (default: the default recipe's):
tokens/s, share of the matmul peak of the precision used, and the speed-up over a plain
`torch.nn.Transformer` trained side by side.

    python scripts/bench_train.py [--steps 30] [--warmup 5] [--block 5] [--set model=small train.max_tokens=4096 ...]

Runs the real training step (mt.engine.Engine.update) on real batches. Tokens are non-pad
source + target tokens. Model FLOPs count the matmuls of the forward pass on real tokens
(projections, attention scores, FFN, output layer) x 3 for forward + backward.

The baseline (scripts/nn_transformer_baseline.py: nn.Transformer of the same size, F.cross_entropy
with label smoothing, AdamW, the same lr schedule, clipping and autocast precision, never
compiled) trains in the same process, on the same threads and the same batches in the same
order, from its own initial weights. How the two are timed, so that machine noise hits both alike:
`--warmup` untimed steps of each model (alternating step by step), then the `--steps` timed
steps in blocks of `--block` consecutive batches; each block runs on mt and then on the baseline
(or the reverse: the order alternates block by block, mt/baseline, baseline/mt, ...). Each
model's tokens/s is its total tokens over its total seconds; `speedup_vs_nn_transformer` is
the ratio of the two; `speedup_per_block` lists the ratio of each block pair and its median is
reported too (a spread between them means the machine was not quiet). Process-wide settings
(threads, mt.device.keep_freed_memory) apply to both models.

MFU is against the peak of the precision the step computes in: fp32, or the autocast dtype
(train.precision=bf16/fp16), measured the same way for each (best of five timings of ten n x n
matmuls on all threads). `--nominal-peak` adds a share of a known nominal figure for that precision.
The JSON records the CPU's model name (`cpu`, from /proc/cpuinfo or lscpu) and whether it has the
bf16 matmul features avx512_bf16 / amx_bf16 / amx_tile (`cpu_flags`; null where unknown).

Runs as `python scripts/bench_train.py` or `python -m scripts.bench_train` from the repository root.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mt.batching import Batch, bucket_batches, collate
from mt.cli import compose_config
from mt.device import cpu_info
from mt.engine import Engine
from mt.errors import exit_on_user_error
from mt.fileio import atomic_write_text
from mt.model import Transformer
from mt.tokenizer import PAD_ID
from mt.train import Trainer

if __package__:  # python -m scripts.bench_train
    from .nn_transformer_baseline import BaselineTrainer, NNTransformerBaseline
else:  # python scripts/bench_train.py (scripts/ is on sys.path)
    from nn_transformer_baseline import BaselineTrainer, NNTransformerBaseline


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_peak_gflops(
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
    n: int = 2048,
    repeat: int = 10,
    trials: int = 5,
) -> float:
    """Best of `trials` timings of `repeat` n x n matmuls in `dtype`: the machine's attainable peak."""
    device = device or torch.device("cpu")
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    sync(device)
    best = 0.0
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeat):
            a @ b
        sync(device)
        best = max(best, 2 * n**3 * repeat / (time.perf_counter() - start) / 1e9)
    return best


def forward_flops(model, batch, classes: int) -> float:
    """Matmul FLOPs of one forward pass over the batch's real tokens, the output layer scoring `classes`."""
    c = model.config
    d, f = c.d_model, c.ffn_dim
    src_len = (batch.src != PAD_ID).sum(1).double()
    tgt_len = (batch.tgt_out != PAD_ID).sum(1).double()
    n_enc, n_dec = len(model.encoder), len(model.decoder)
    enc = n_enc * (src_len * (4 * d * d + 2 * d * f) + 2 * src_len * src_len * d).sum()
    dec_self = tgt_len * (4 * d * d) + tgt_len * tgt_len * d  # causal scores: half of 2*T*T*d
    dec_cross = tgt_len * (2 * d * d) + src_len * (2 * d * d) + 2 * tgt_len * src_len * d
    dec = n_dec * (dec_self + dec_cross + tgt_len * 2 * d * f).sum()
    out = tgt_len.sum() * d * classes
    return float(2 * (enc + dec + out))  # 2 FLOPs per multiply-add


def output_classes(model) -> int:
    """The classes the output layer scores: the shortlist's pieces (model.output_shortlist) or all."""
    shortlist = getattr(model, "shortlist", None)
    return model.tgt_vocab_size if shortlist is None else len(shortlist)


def full_output_twin(model: Transformer, joint_vocab: bool) -> Transformer:
    """The same model and weights, its output layer scoring every piece (no shortlist)."""
    twin = Transformer(
        replace(model.config, output_shortlist=False), model.src_vocab_size, model.tgt_vocab_size, joint_vocab
    )
    twin.load_state_dict(model.state_dict(), strict=False)  # all but the shortlist's `emittable`
    return twin


def best_ms(fn: Callable[[], object], reps: int) -> float:
    """The fastest of `reps` timings of fn(), in milliseconds."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def numbered(update: Callable[[Batch, int], float]) -> Callable[[Batch], float]:
    """update(batch, step) as update(batch), numbering the steps 1, 2, 3, ... in the order of the calls."""
    steps = itertools.count(1)
    return lambda batch: update(batch, next(steps))


def recipe_batches(trainer: Trainer, count: int) -> list[Batch]:
    """The first `count` training batches of the trainer's recipe, in a fixed order (the epoch cycled)."""
    train = trainer.data.splits["train"]
    order = bucket_batches(trainer.src_lens, trainer.tgt_lens, trainer.cfg.train.max_tokens, seed=0)
    return [collate(train, order[i % len(order)]) for i in range(count)]


def engine_step(engine: Engine) -> Callable[[Batch], float]:
    """One update of mt's engine on one batch -> its loss (nan where the loss was not finite and no
    update was made), the steps numbered in the order of the calls."""

    def update(batch: Batch, step: int) -> float:
        stats = engine.update([batch], step=step)
        return stats["loss"] if stats is not None else float("nan")

    return numbered(update)


def timed_block(update: Callable[[Batch], float], batches: list[Batch], device: torch.device) -> tuple[float, float]:
    """Run update(batch) over the batches -> (seconds, mean loss)."""
    losses = []
    seconds = 0.0
    for batch in batches:
        start = time.perf_counter()
        losses.append(update(batch))
        sync(device)
        seconds += time.perf_counter() - start
    return seconds, sum(losses) / len(losses)


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Contender:
    """One side of a race: its training step (batch -> loss), and how to switch the process over to
    it (untimed) where both sides share a model and differ in process-wide state."""

    update: Callable[[Batch], float]
    activate: Callable[[], None] = _nothing


@dataclass
class RaceResult:
    seconds: dict[str, float]  # each contender's timed seconds, all blocks
    block_seconds: list[dict[str, float]]
    block_losses: dict[str, list[float]]  # each contender's mean loss per block

    def speedup(self, slower: str, faster: str) -> float:
        """How many times faster `faster` ran than `slower` over the same batches."""
        return self.seconds[slower] / self.seconds[faster]

    def block_speedups(self, slower: str, faster: str) -> list[float]:
        return [block[slower] / block[faster] for block in self.block_seconds]


def race(
    contenders: dict[str, Contender], batches: list[Batch], warmup: int, block: int, device: torch.device
) -> RaceResult:
    """Time the contenders on the same batches, so that machine noise hits them alike.

    The first `warmup` batches are untimed, the contenders alternating step by step; the rest run in
    blocks of `block` consecutive batches, each block by every contender in turn, the order reversed
    from one block to the next (a/b, b/a, ...).
    """
    for batch in batches[:warmup]:
        for contender in contenders.values():
            contender.activate()
            contender.update(batch)
    result = RaceResult(dict.fromkeys(contenders, 0.0), [], {name: [] for name in contenders})
    for k, first in enumerate(range(warmup, len(batches), block)):
        names = list(contenders) if k % 2 == 0 else list(contenders)[::-1]
        block_seconds = {}
        for name in names:
            contenders[name].activate()
            block_seconds[name], loss = timed_block(contenders[name].update, batches[first : first + block], device)
            result.seconds[name] += block_seconds[name]
            result.block_losses[name].append(loss)
        result.block_seconds.append(block_seconds)
    return result


def profile_steps(update: Callable[[Batch], float], batches: list[Batch], top: int = 25) -> dict:
    """torch.profiler over `batches` training steps: the ops with the most self time (where the
    time is spent, not what calls what), each with its share of the profiled wall-clock."""
    from torch.profiler import ProfilerActivity, profile

    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            update(batch)
    wall_us = (time.perf_counter() - start) * 1e6
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    rows = [
        {
            "op": e.key,
            "calls": e.count,
            "self_ms_per_step": e.self_cpu_time_total / 1e3 / len(batches),
            "share_of_wall": e.self_cpu_time_total / wall_us,
        }
        for e in ops[:top]
    ]
    return {"steps": len(batches), "wall_ms_per_step": wall_us / 1e3 / len(batches), "ops": rows}


def print_profile(profile: dict) -> None:
    print(f"profile: {profile['steps']} steps, {profile['wall_ms_per_step']:.1f} ms per step (profiler on)")
    print(f"  {'op':44s} {'calls':>7s} {'ms/step':>9s} {'share':>6s}")
    for row in profile["ops"]:
        print(f"  {row['op'][:44]:44s} {row['calls']:7d} {row['self_ms_per_step']:9.2f} {row['share_of_wall']:6.1%}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="timed steps of each model")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps of each model first")
    p.add_argument("--block", type=int, default=5, help="consecutive steps of one model before switching")
    p.add_argument("--set", nargs="*", default=[], help="config overrides")
    p.add_argument(
        "--nominal-peak", type=float, default=0.0, help="nominal GFLOP/s of this machine at the precision used"
    )
    p.add_argument("--profile", type=int, default=0, help="then profile this many more of mt's steps (per-op table)")
    p.add_argument("--json", default="outputs/bench/train.json")
    args = p.parse_args()
    if min(args.steps, args.block) < 1 or min(args.warmup, args.profile) < 0:
        p.error("--steps and --block must be >= 1, --warmup and --profile >= 0")
    overrides = ["train.progress=false", *args.set]  # corpora are found by name (data/NAME, else ../shared/data)
    with exit_on_user_error("bench_train"):
        cfg = compose_config(overrides)
        trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="mt-bench-")))
        trainer.setup()
    engine, tok = trainer.engine, trainer.data.tokenizer
    torch.manual_seed(cfg.train.seed)
    baseline = BaselineTrainer.build(
        NNTransformerBaseline(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size, joint_vocab=tok.joint),
        cfg.train,
        engine.device,
        engine.amp_dtype,
    )

    batches = recipe_batches(trainer, args.warmup + args.steps + args.profile)
    ours = engine_step(engine)  # each model numbers its own steps: the same lr on the same batch
    contenders = {"mt": Contender(ours), "baseline": Contender(numbered(baseline.update))}
    if trainer.model.shortlist is not None:  # model.output_shortlist: also time the same model without it
        twin = Engine.build(full_output_twin(trainer.model, tok.joint), cfg.train, engine.device, engine.dist)
        contenders["full_output"] = Contender(engine_step(twin))
    raced = race(contenders, batches[: args.warmup + args.steps], args.warmup, args.block, engine.device)
    seconds = raced.seconds
    block_speedups = raced.block_speedups("baseline", "mt")  # same tokens: time ratio

    timed = batches[args.warmup : args.warmup + args.steps]
    tokens = sum(b.num_tokens for b in timed)
    model = trainer.model
    flops = sum(3 * forward_flops(model, b, output_classes(model)) for b in timed)  # what mt computes
    full_flops = sum(3 * forward_flops(model, b, model.tgt_vocab_size) for b in timed)  # every piece scored
    dtype = engine.amp_dtype or torch.float32
    precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    peak = measured_peak_gflops(dtype, engine.device)
    achieved = {name: (flops if name == "mt" else full_flops) / s / 1e9 for name, s in seconds.items()}
    result = {
        "config": overrides,
        "threads": torch.get_num_threads(),
        **cpu_info(),
        "device": str(engine.device),
        "torch": torch.__version__,
        "precision": precision,
        "parameters": trainer.model.num_parameters(),
        "baseline_parameters": baseline.model.num_parameters(),
        "steps": args.steps,
        "warmup": args.warmup,
        "block": args.block,
        "tokens_per_sec": tokens / seconds["mt"],
        "model_gflops_per_sec": achieved["mt"],
        "measured_matmul_peak_gflops": peak,
        "mfu_vs_measured_peak": achieved["mt"] / peak,
        "baseline_tokens_per_sec": tokens / seconds["baseline"],
        "baseline_model_gflops_per_sec": achieved["baseline"],
        "baseline_mfu_vs_measured_peak": achieved["baseline"] / peak,
        "speedup_vs_nn_transformer": seconds["baseline"] / seconds["mt"],
        "speedup_per_block_median": statistics.median(block_speedups),
        "speedup_per_block": block_speedups,
        "output_classes": output_classes(trainer.model),
        "loss_last_block": raced.block_losses["mt"][-1],
        "baseline_loss_last_block": raced.block_losses["baseline"][-1],
    }
    if "full_output" in seconds:
        result["full_output_tokens_per_sec"] = tokens / seconds["full_output"]
        result["speedup_vs_full_output"] = raced.speedup("full_output", "mt")
        result["speedup_vs_full_output_per_block"] = raced.block_speedups("full_output", "mt")
    if args.profile:
        result["profile"] = profile_steps(ours, batches[args.warmup + args.steps :])  # ours goes on numbering
    if args.nominal_peak:
        result["nominal_peak_gflops"] = args.nominal_peak
        result["mfu_vs_nominal_peak"] = achieved["mt"] / args.nominal_peak
    for key, value in result.items():
        if key == "profile":
            continue
        if key == "cpu_flags" and value is not None:
            shown = ", ".join(f"{f} {'yes' if has else 'no'}" for f, has in value.items())
        elif key.startswith("speedup"):
            shown = ", ".join(f"{v:.2f}" for v in value) if isinstance(value, list) else f"{value:.2f}"
        else:
            shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
        print(f"{key}: {shown}")
    if args.profile:
        print_profile(result["profile"])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.json), json.dumps(result, indent=2) + "\n")
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
