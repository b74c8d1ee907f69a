"""Matrix products on the CPU: torch's own BLAS (MKL in the PyPI CPU wheels) against the BLAS numpy
ships (OpenBLAS in its PyPI wheels), on the model's own shapes and in the real training step.

    python scripts/bench_gemm.py [--steps 20] [--block 5] [--warmup 2] [--set train.threads=1 ...]

1. Each distinct linear-layer shape's three products at the recipe's batch size (rows = train.max_tokens):
   forward x @ W.T, backward grad @ W and grad.T @ x; GFLOP/s of each backend, best of --reps,
   the backends alternating.
2. The real training step (mt.engine.Engine.update) on the recipe's batches with every nn.Linear
   computed by torch, then by numpy's BLAS (OpenBLASLinear: the same three products through
   numpy.matmul, on the tensors' memory): blocks of --block steps, the order alternating block by block, so
   machine noise hits both alike. Both continue training the same model.

Why a script and not a setting: the two libraries keep two thread pools (torch's OpenMP workers,
OpenBLAS's own), and each spins for a while after its work is done, so at 2 threads each slows
the other. The JSON records the environment variables that shorten that spinning (GOMP_SPINCOUNT,
OPENBLAS_THREAD_TIMEOUT, ...): they only act when set before the process starts.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mt.cli import compose_config
from mt.device import cpu_info
from mt.errors import UserError, exit_on_user_error
from mt.fileio import atomic_write_text
from mt.train import Trainer

if __package__:  # python -m scripts.bench_gemm
    from .bench_train import Contender, best_ms, engine_step, race, recipe_batches
else:  # python scripts/bench_gemm.py (scripts/ is on sys.path)
    from bench_train import Contender, best_ms, engine_step, race, recipe_batches

# OpenBLAS's idle threads spin for 2^28 cycles by default (about 0.1 s at 2.5 GHz).
QUIET_SECONDS = 0.3
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT")


def numpy_blas() -> str:
    """The BLAS numpy was built with, e.g. 'scipy-openblas 0.3.31.188.0'."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except (TypeError, KeyError):  # numpy < 1.26 prints only
        return "unknown"


def openblas_threads() -> int:
    """The threads numpy's OpenBLAS runs, asked of the library itself where it is loaded (its
    get_num_threads symbol); else what OpenBLAS reads at start: OPENBLAS_NUM_THREADS,
    GOTO_NUM_THREADS, OMP_NUM_THREADS, then the CPUs this process may use."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    for path in sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line.lower()}):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"):
            if hasattr(lib, symbol):
                return int(getattr(lib, symbol)())
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def numpy_matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for CPU float32 tensors through numpy's BLAS. Contiguous operands and their transposes
    go to BLAS as they are (a transpose is a flag), so no copies."""
    return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))


class _OpenBLASLinearFn(torch.autograd.Function):
    """y = x @ W.T + b with all three products (forward, grad_x, grad_W) in numpy_matmul."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = numpy_matmul(x.reshape(-1, x.shape[-1]), weight.detach().t())  # [N,in] @ [in,out]
        if bias is not None:
            out += bias.detach()  # one more pass over out, which torch's addmm fuses: counts against numpy
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_rows = grad.reshape(-1, grad.shape[-1])  # [N,out]
        grad_x = numpy_matmul(grad_rows, weight.detach()).reshape(x.shape) if ctx.needs_input_grad[0] else None
        grad_w = numpy_matmul(grad_rows.t(), x.reshape(-1, x.shape[-1])) if ctx.needs_input_grad[1] else None
        grad_b = grad_rows.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class OpenBLASLinear(nn.Linear):
    """nn.Linear whose products run in numpy's BLAS: float32 CPU tensors outside autocast; anything
    else goes to torch as before (so a bf16 run is never raced against fp32 products)."""

    def forward(self, x: Tensor) -> Tensor:
        if (
            x.dtype != torch.float32
            or x.device.type != "cpu"
            or self.weight.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")
        ):
            return super().forward(x)
        return _OpenBLASLinearFn.apply(x, self.weight, self.bias)


def set_linear_class(model: nn.Module, cls: type[nn.Linear]) -> int:
    """Switch every nn.Linear of the model to `cls` (nn.Linear or OpenBLASLinear; same parameters,
    same state_dict) -> how many were switched. Switching back to nn.Linear would also turn any
    other nn.Linear subclass into a plain one (mt's model has none)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for module in linears:
        module.__class__ = cls
    return len(linears)


def linear_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """The distinct (in_features, out_features) of the model's linear layers."""
    return sorted({(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)})


def gemm_table(shapes: list[tuple[int, int]], rows: int, reps: int) -> list[dict]:
    """GFLOP/s of torch and numpy on each distinct layer shape's forward and two backward products.
    Each backend's timings start after a pause (QUIET_SECONDS), so neither is timed while the other
    library's idle threads still spin, and the order alternates round by round."""
    gen = torch.Generator().manual_seed(0)
    table = []
    for d_in, d_out in shapes:
        x, w, g = (torch.randn(*s, generator=gen) for s in ((rows, d_in), (d_out, d_in), (rows, d_out)))
        products = {  # name: (a, b) for a @ b
            "forward x@W.T": (x, w.t()),
            "backward grad@W": (g, w),
            "backward grad.T@x": (g.t(), x),
        }
        for name, (a, b) in products.items():
            flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
            run = {"torch": lambda a=a, b=b: torch.mm(a, b), "numpy": lambda a=a, b=b: numpy_matmul(a, b)}
            seconds = dict.fromkeys(run, float("inf"))
            for round_ in range(2):  # each backend first once; each one's best is kept
                for backend in list(run) if round_ == 0 else list(run)[::-1]:
                    time.sleep(QUIET_SECONDS)
                    run[backend]()
                    seconds[backend] = min(seconds[backend], best_ms(run[backend], reps) / 1e3)
            gflops = {backend: flops / s / 1e9 for backend, s in seconds.items()}
            table.append(
                {
                    "layer": f"{d_in}->{d_out}",
                    "product": name,
                    "shape": [a.shape[0], a.shape[1], b.shape[1]],
                    "gflops": gflops,
                    "numpy_over_torch": gflops["numpy"] / gflops["torch"],
                }
            )
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps with each backend")
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5, help="timings of each product (best is kept)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides")
    ap.add_argument("--json", default="outputs/bench/gemm.json")
    args = ap.parse_args()
    if min(args.steps, args.block, args.reps) < 1 or args.warmup < 0:
        ap.error("--steps, --block and --reps must be >= 1, --warmup >= 0")
    with exit_on_user_error("bench_gemm"):
        cfg = compose_config(["train.progress=false", *args.set])
        trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="mt-bench-")))
        trainer.setup()  # sets the threads as training does
        if openblas_threads() != torch.get_num_threads():  # a fair race: the same threads on both sides
            raise UserError(
                f"torch runs {torch.get_num_threads()} threads and OpenBLAS would run {openblas_threads()}:"
                f" start with OPENBLAS_NUM_THREADS={torch.get_num_threads()}"
            )
    model, engine = trainer.model, trainer.engine
    table = gemm_table(linear_shapes(model), cfg.train.max_tokens, args.reps)
    for row in table:
        g = row["gflops"]
        print(
            f"{row['layer']:>10s} {row['product']:18s} {'x'.join(map(str, row['shape'])):>16s}"
            f"  torch {g['torch']:6.1f}  numpy {g['numpy']:6.1f} GFLOP/s  ({row['numpy_over_torch']:.2f}x)"
        )

    def use_linear_class(cls: type[nn.Linear]) -> Callable[[], None]:
        def activate() -> None:
            set_linear_class(model, cls)

        return activate

    backends = {"torch": nn.Linear, "numpy": OpenBLASLinear}
    batches = recipe_batches(trainer, args.warmup + args.steps)
    update = engine_step(engine)  # one model trained by both: its steps numbered in the order they run
    raced = race(
        {name: Contender(update, use_linear_class(cls)) for name, cls in backends.items()},
        batches,
        args.warmup,
        args.block,
        engine.device,
    )
    block_speedups = raced.block_speedups("torch", "numpy")
    linears = set_linear_class(model, nn.Linear)
    tokens = sum(b.num_tokens for b in batches[args.warmup :])
    result = {
        **cpu_info(),
        "torch": torch.__version__,
        "torch_blas": next((line.strip() for line in torch.__config__.show().splitlines() if "Math Kernel" in line), "")
        or ("mkl" if torch.backends.mkl.is_available() else "other"),
        "numpy": np.__version__,
        "numpy_blas": numpy_blas(),
        "threads": torch.get_num_threads(),
        "openblas_threads": openblas_threads(),
        "environment": {name: os.environ.get(name) for name in THREAD_ENV},
        "config": args.set,
        "arguments": {"steps": args.steps, "block": args.block, "warmup": args.warmup, "reps": args.reps},
        "rows": cfg.train.max_tokens,
        "gemm": table,
        "linear_layers": linears,
        "steps": args.steps,
        "tokens_per_sec": {name: tokens / s for name, s in raced.seconds.items()},
        "mean_block_loss": {name: statistics.mean(v) for name, v in raced.block_losses.items()},
        "training_step_speedup": raced.speedup("torch", "numpy"),
        "training_step_speedup_per_block": block_speedups,
        "training_step_speedup_per_block_median": statistics.median(block_speedups),
    }
    tps = result["tokens_per_sec"]
    print(
        f"training step ({result['threads']} threads): torch {tps['torch']:,.0f} tokens/s, numpy {tps['numpy']:,.0f}"
        f" -> numpy {result['training_step_speedup']:.3f}x (blocks "
        + ", ".join(f"{s:.2f}" for s in block_speedups)
        + ")"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.json), json.dumps(result, indent=2) + "\n")
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
