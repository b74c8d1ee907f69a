"""Device choice shared by every command: auto (CUDA when present), cpu or cuda."""

from __future__ import annotations

import torch

from mt.errors import UserError


def pick_device(name: str, option: str = "--device") -> torch.device:
    """`option` names the setting in error messages (`train.device`, `--device`)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"{option} must be auto, cpu, cuda or cuda:N, not '{name}'")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{option} is cuda but no CUDA device is available")
    return torch.device(name)
