"""Checkpoint averaging: `python -m mt.average`, and the weights average the trainer uses.

The mean of the last few checkpoints' weights usually sits nearer the minimum the
optimizer circles around than any single one (Vaswani et al. 2017 averaged the last 5 or 20).

    python -m mt.average --run outputs/multi30k-en-de/<run> --last 5 --out last5.pt
    python -m mt.average a.pt b.pt c.pt --out averaged.pt

An existing output is replaced only with --force, and only if it is a checkpoint; an output that
is one of the inputs is refused. Without --out, --run writes RUN/checkpoints/averaged.pt, which
after train.average_last=N is the trainer's own average (the one metrics.json tested): replacing
it takes --force.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mt import checkpoint as ckpt_io
from mt.cli import command_parser
from mt.errors import UserError, exit_on_user_error
from mt.fileio import atomic_torch_save, refuse_output_over_input
from mt.rundir import model_file

log = logging.getLogger("mt.train")
SNAPSHOT_GLOB = "step-*.pt"  # what the trainer keeps when train.average_last > 0


def snapshot_name(step: int) -> str:
    return f"step-{step:07d}.pt"


def snapshots(checkpoint_dir: Path) -> list[Path]:
    """The trainer's weight snapshots, oldest first (the zero-padded step sorts them)."""
    return sorted(Path(checkpoint_dir).glob(SNAPSHOT_GLOB))


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors (summed in float64); other tensors from the last."""
    if not states:
        raise UserError("nothing to average")
    keys = states[0].keys()
    for state in states[1:]:
        if state.keys() != keys:
            raise UserError("checkpoints have different parameters: they are not of one model")
    out = {}
    for key in keys:
        tensors = [s[key] for s in states]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise UserError(f"checkpoints disagree on the shape of {key}: they are not of one model")
        if tensors[0].is_floating_point():
            mean = torch.stack([t.double() for t in tensors]).mean(0)
            out[key] = mean.to(tensors[0].dtype)
        else:
            out[key] = tensors[-1].clone()
    return out


def average_checkpoints(paths: list[Path]) -> dict[str, Any]:
    """One checkpoint whose weights are the mean of `paths`' (same model, same tokenizer)."""
    ckpts = [ckpt_io.read(p) for p in paths]
    for path, ckpt in zip(paths, ckpts):
        if not isinstance(ckpt.get("model"), dict) or "tokenizer_src" not in ckpt:
            raise UserError(f"{path} is damaged or from an incompatible mt version: no model weights or tokenizer")
    first = ckpts[0]
    for path, ckpt in zip(paths[1:], ckpts[1:]):
        for key in ("model_config", "src_vocab_size", "tgt_vocab_size", "src_lang", "tgt_lang"):
            if ckpt.get(key) != first.get(key):
                raise UserError(f"{path} differs from {paths[0]} in {key}: only checkpoints of one run can be averaged")
        if not torch.equal(ckpt["tokenizer_src"], first["tokenizer_src"]):
            raise UserError(f"{path} has another tokenizer than {paths[0]}")
    averaged = ckpt_io.without_resume_state(ckpts[-1])
    averaged["model"] = average_state_dicts([c["model"] for c in ckpts])
    averaged["averaged_from"] = [str(p) for p in paths]
    return averaged


def average_if_better(
    model: torch.nn.Module, paths: list[Path], out: Path, best_bleu: float, score: Callable[[], Any]
) -> dict[str, Any]:
    """Load the average of `paths` into `model`, save it to `out`, and score it (`score()` decodes the
    validation sentences: mt.validation.Decoded); say whether it beats best.pt's validation BLEU."""
    averaged = average_checkpoints(paths)
    model.load_state_dict(averaged["model"])
    scores = score().scores
    atomic_torch_save(out, averaged)
    better = scores["bleu"] > best_bleu
    steps = ", ".join(p.stem.split("-")[1].lstrip("0") for p in paths)
    log.info(
        f"average of {len(paths)} snapshots (steps {steps}): valid BLEU {scores['bleu']:.2f} vs best.pt "
        f"{best_bleu:.2f} -> testing {'the average' if better else 'best.pt'}"
    )
    return {
        "averaged_checkpoints": len(paths),
        "averaged_valid_bleu": scores["bleu"],
        "averaged_valid_chrf": scores["chrf"],
        "tested_checkpoint": "averaged.pt" if better else "best.pt",
    }


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m mt.average", __doc__)
    p.add_argument("checkpoints", nargs="*", type=Path, help="checkpoint files to average")
    p.add_argument("--run", type=Path, help="a run directory: average its last snapshots (train.average_last)")
    p.add_argument("--last", type=int, default=0, help="with --run: how many of the latest snapshots (0 = all)")
    p.add_argument("--out", type=Path, help="output file (default with --run: RUN/checkpoints/averaged.pt)")
    p.add_argument("--force", action="store_true", help="replace --out if it holds an earlier checkpoint")
    return p


def refuse_duplicates(paths: list[Path]) -> None:
    """One line instead of a file named twice: it would count twice in the mean, and the
    "averaged N checkpoints" would be wrong. A run folder is its best.pt here, as read() has it."""
    seen: dict[tuple[int, int], Path] = {}
    for path in paths:
        if not path.exists():
            continue  # read() says it is missing
        stat = model_file(path).stat()
        first = seen.setdefault((stat.st_dev, stat.st_ino), path)
        if first is not path:
            again = "is named twice" if path == first else f"is the same checkpoint as {first}"
            raise UserError(f"{path} {again}: name each checkpoint once")


def check_out(out: Path, given: bool, inputs: list[Path], force: bool) -> None:
    """Refuse, before any checkpoint is read, to write over an input or anything that exists without
    --force, and with --force over anything but a checkpoint (a text file named by mistake stays)."""
    name = f"--out {out}" if given else str(out)
    refuse_output_over_input(out, [model_file(p) for p in inputs if p.exists()], "--out")
    if not out.exists():
        return
    if out.is_dir():
        raise UserError(f"{name} is a folder, not a file")
    if not force:
        raise UserError(f"{name} already exists: add --force to replace it")
    if not ckpt_io.is_torch_archive(out):
        raise UserError(f"{name} is not a checkpoint (not a PyTorch archive): --force replaces checkpoints only")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_user_error("mt.average"):
        if bool(args.run) == bool(args.checkpoints):
            raise UserError("give either checkpoint files or --run DIR")
        if args.last < 0:
            raise UserError(f"--last must be >= 0, got {args.last}")
        paths = list(args.checkpoints)
        if args.run:
            paths = snapshots(args.run / "checkpoints")
            if not paths:
                raise UserError(
                    f"no {SNAPSHOT_GLOB} snapshots in {args.run / 'checkpoints'} "
                    "(train with train.average_last=N to keep them)"
                )
            if args.last > len(paths):
                print(
                    f"mt.average: warning: --last {args.last} but {args.run / 'checkpoints'} keeps only {len(paths)} "
                    f"snapshots: averaging those {len(paths)}",
                    file=sys.stderr,
                )
            paths = paths[-args.last :] if args.last else paths
        out = args.out or (args.run / "checkpoints" / "averaged.pt" if args.run else None)
        if out is None:
            raise UserError("--out is required when averaging named files")
        refuse_duplicates(paths)
        check_out(out, args.out is not None, paths, args.force)
        if len(paths) < 2:
            print(f"mt.average: warning: only {len(paths)} checkpoint; the output equals it", file=sys.stderr)
        averaged = average_checkpoints(paths)
        try:
            atomic_torch_save(out, averaged)
        except OSError as err:
            raise UserError(f"cannot write {out}: {err.strerror}") from None
        print(f"averaged {len(paths)} checkpoints -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
