"""What every command line shares: composing the Hydra config, and argparse options whose
defaults come from the config dataclasses. Config mistakes are answered with one line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from mt.config import DecodeConfig, MTConfig, register_configs, to_dataclass
from mt.errors import UserError
from mt.paths import CONFIG_DIR


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    if "Available options" in text:
        options = []
        for line in text.split("Available options", 1)[1].splitlines()[1:]:
            if not line.startswith("\t"):
                break  # the indented option list ends where the search path begins
            options.append(line.strip())
        first += f" (available: {', '.join(options)})"
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        first = f"{first.rstrip('.')}: {str(cause).strip().splitlines()[0]}"
    return first


def compose_config(overrides: list[str] | None = None) -> MTConfig:
    """configs/config.yaml with `overrides` (`model=tiny`, `train.lr=1e-3`), as checked dataclasses.

    Every mistake (unknown key or option, wrong type, value out of range) is one UserError.
    """
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return to_dataclass(compose(config_name="config", overrides=list(overrides or [])))
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise UserError(_one_line(err)) from None
    finally:
        GlobalHydra.instance().clear()


def check_overrides(args: list[str]) -> tuple[MTConfig, dict[str, str]]:
    """Compose the config with the command line's plain overrides; raise UserError if it fails.

    Sweep overrides (`a=1,2`) and hydra.* settings are left for Hydra itself; returns the config
    and the plain hydra.* settings (e.g. {"hydra.run.dir": "outputs/x"}).
    """
    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(candidates)
    except HydraException as err:
        raise UserError(_one_line(err)) from None
    plain = [o for o in parsed if not o.is_sweep_override()]
    hydra_settings = {o.key_or_group: str(o.value()) for o in plain if o.key_or_group.startswith("hydra.")}
    return compose_config([o.input_line for o in plain if not o.key_or_group.startswith("hydra")]), hydra_settings


# argparse options shared by the commands --------------------------------------------------------
class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help keeps the description's examples as written and states each option's default
    (unless its help already says it, or there is none to state)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """A mistake in the options is one line, like every other user error (argparse would print
    the whole usage block of a long command first); --help still shows it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def command_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    return CommandParser(prog=prog, description=description, formatter_class=HelpFormatter)


def inference_threads() -> int:
    """The default --threads of the commands that translate: half the cores, at least one.

    Measured on a 2-core CPU (docs/benchmarks.md, scripts/bench_threads.py): alone, one thread
    translates 18 % slower than two; beside a training that uses both cores, two threads made the
    same job 3.6x slower than one (40.6 s against 11.4 s): their threads spin against each other.
    """
    return max(1, (os.cpu_count() or 1) // 2)


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda | cuda:N")
    parser.add_argument(
        "--threads",
        type=int,
        default=inference_threads(),
        help="CPU threads; 0 = one per core (fastest alone, a crawl beside a training) (default: half the "
        "cores: %(default)s)",
    )


def threads_option(args: argparse.Namespace) -> int:
    """--threads, checked (0 = one per core)."""
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0, got {args.threads}")
    return args.threads


def setup_device(args: argparse.Namespace):
    """The torch.device that --device names, with --threads applied; UserError if unusable."""
    import torch

    from mt.device import pick_device

    if threads_option(args) > 0:
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


ENGINES = ("mt", "ct2")


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """--engine and --model: decode with our PyTorch model (default) or a CTranslate2 export."""
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="mt",
        help="mt: our PyTorch decoder (attention, alignments); ct2: a CTranslate2 export (python -m mt.export "
        "ct2), faster on CPUs (default: mt)",
    )
    parser.add_argument("--model", metavar="DIR", help="with --engine ct2: the export folder (or its ct2/ folder)")


def engine_model(args: argparse.Namespace) -> Path | None:
    """The CTranslate2 export that --engine ct2 decodes with; None for our engine. UserError when
    --engine, --model and --checkpoint disagree."""
    if args.engine == "ct2":
        if args.checkpoint:
            raise UserError("--engine ct2 decodes the export --model names; --checkpoint is for mt's engine")
        if not args.model:
            raise UserError("--engine ct2 needs --model DIR, a folder written by python -m mt.export ct2")
        return Path(args.model)
    if args.model:
        raise UserError("--model names a CTranslate2 export for --engine ct2; mt's engine reads --checkpoint")
    return None


def add_decode_args(parser: argparse.ArgumentParser, n_best: bool = False, batch: bool = True) -> None:
    """--beam, --alpha (and --n-best, --max-tokens) with DecodeConfig's defaults."""
    d = DecodeConfig()
    parser.add_argument("--beam", type=int, default=d.beam_size, help="beam size, 1 = greedy (default: %(default)s)")
    parser.add_argument(
        "--alpha", type=float, default=d.length_penalty, help="length penalty, GNMT alpha (default: %(default)s)"
    )
    if n_best:
        parser.add_argument("--n-best", type=int, default=d.n_best, help="print the K best translations with scores")
    if batch:
        parser.add_argument(
            "--max-tokens",
            type=int,
            default=d.max_tokens,
            help="source tokens per decoding batch (default: %(default)s)",
        )


def decode_config(args: argparse.Namespace) -> DecodeConfig:
    """DecodeConfig from the options add_decode_args added, checked like decode.* settings."""
    d = DecodeConfig(
        beam_size=args.beam,
        length_penalty=args.alpha,
        n_best=getattr(args, "n_best", 1),
        max_tokens=getattr(args, "max_tokens", DecodeConfig.max_tokens),
    )
    options = {"beam_size": "--beam", "length_penalty": "--alpha", "n_best": "--n-best", "max_tokens": "--max-tokens"}
    refuse_problems(d.problems(), "decode", options)
    return d


def parse_layer(value: str) -> int | None:
    """--layer: a decoder layer, or 'mean' (None)."""
    if value == "mean":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer number or 'mean', got '{value}'") from None


def parse_heads(value: str) -> int | list[int] | None:
    """--head: a head, several to average ("0,2"), or 'mean' (None)."""
    if value == "mean":
        return None
    try:
        heads = [int(h) for h in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a head, heads like 0,2, or 'mean', got '{value}'") from None
    return heads[0] if len(heads) == 1 else heads


RECORDED = "the aligning heads the checkpoint records (trained, or saved by mt.align sweep --save), else the mean"
ALIGN_OPTIONS = ("layer", "head", "shift", "words", "links")  # AlignConfig fields the alignment options set


def add_heads_args(parser: argparse.ArgumentParser) -> None:
    """--layer/--head: which cross-attention alignments are read from. Left out, they stay out of
    the namespace (SUPPRESS) and the checkpoint decides (mt.align.extract.align_config_for)."""
    parser.add_argument(
        "--layer",
        type=parse_layer,
        default=argparse.SUPPRESS,
        help=f"alignments from this decoder layer (0-based) or 'mean' (default: {RECORDED})",
    )
    parser.add_argument(
        "--head",
        type=parse_heads,
        default=argparse.SUPPRESS,
        help=f"alignments from this head, these heads averaged (0,2) or 'mean' (default: {RECORDED})",
    )


def align_options(args: argparse.Namespace) -> dict:
    """The alignment options given on the command line, as AlignConfig fields."""
    return {key: getattr(args, key) for key in ALIGN_OPTIONS if hasattr(args, key)}


def refuse_problems(found: list[str], group: str, options: dict[str, str]) -> None:
    """UserError listing a config's problems, each `group.key` named as the command-line option."""
    if found:
        text = "; ".join(found)
        for key, option in options.items():
            text = text.replace(f"{group}.{key}", option)
        raise UserError(text)


def hydra_entry(
    task: Callable[[], None],
    prog: str,
    overrides_extra: list[str] | None = None,
    preflight: Callable[[MTConfig, dict[str, str], bool], None] | None = None,
) -> None:
    """Validate the command line, then hand over to the @hydra.main-decorated `task`.

    `preflight(config, hydra settings, multirun)` may refuse (UserError) before Hydra writes anything.
    """
    register_configs()
    args = sys.argv[1:]
    if not any(a in ("--help", "-h", "--hydra-help", "--info", "-i") for a in args):
        try:
            cfg, hydra_settings = check_overrides(args)
            if preflight is not None and not any(a in ("--cfg", "-c") for a in args):  # --cfg only prints
                preflight(cfg, hydra_settings, any(a in ("-m", "--multirun") for a in args))
        except UserError as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            sys.exit(2)
    sys.argv = [sys.argv[0], *args, *(overrides_extra or [])]
    task()


def progress_bar(total: int | None, unit: str, desc: str):
    """A tqdm bar on stderr when it is a terminal; silent (but still usable) when piped or logged."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)
