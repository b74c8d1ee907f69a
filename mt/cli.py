"""Hydra entry points that answer config mistakes with one line, not a stack of them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from mt.config import register_configs, to_dataclass
from mt.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


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


def check_overrides(args: list[str]) -> None:
    """Compose the config with the command line's plain overrides; raise UserError if it fails.

    Sweep overrides (`a=1,2`) and hydra.* settings are left for Hydra itself.
    """
    register_configs()
    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(candidates)
    except HydraException as err:
        raise UserError(_one_line(err)) from None
    plain = [
        o.input_line
        for o in parsed
        if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")
    ]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=plain)
            to_dataclass(cfg)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise UserError(_one_line(err)) from None
    finally:
        GlobalHydra.instance().clear()


def hydra_entry(task: Callable[[], None], prog: str, overrides_extra: list[str] | None = None) -> None:
    """Validate the command line, then hand over to the @hydra.main-decorated `task`."""
    register_configs()
    args = sys.argv[1:]
    if not any(a in ("--help", "-h", "--hydra-help", "--info", "-i") for a in args):
        try:
            check_overrides(args)
        except UserError as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            sys.exit(2)
    sys.argv = [sys.argv[0], *args, *(overrides_extra or [])]
    task()
