"""Checkpoints: atomic writes, safe loading, and rebuilding a model from a checkpoint alone."""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mt.config import ModelConfig
from mt.errors import UserError
from mt.model import Transformer
from mt.tokenizer import Tokenizer

FORMAT = "mt-checkpoint"
VERSION = 1
RESUME_KEYS = ("optimizer", "scaler", "rng_cpu", "rng_cuda")  # what only resuming needs


def without_resume_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint as a model file: weights, config, tokenizer; no optimizer or RNG state."""
    return {k: v for k, v in ckpt.items() if k not in RESUME_KEYS}


def _bytes_to_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _tensor_to_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.numpy().tobytes()


def pack(
    model: Transformer,
    tokenizer: Tokenizer,
    src_lang: str,
    tgt_lang: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to rebuild the model and its tokenizer; `extra` adds resume state."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": asdict(model.config),
        "src_vocab_size": model.src_vocab_size,
        "tgt_vocab_size": model.tgt_vocab_size,
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "tokenizer_src": _bytes_to_tensor(tokenizer.src_proto),
        "model": state,
    }
    if tokenizer.tgt_proto is not None:
        ckpt["tokenizer_tgt"] = _bytes_to_tensor(tokenizer.tgt_proto)
    if extra:
        ckpt.update(extra)
    return ckpt


def read(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint of ours safely (weights_only), with one clear error otherwise."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise UserError(f"checkpoint path is a directory, not a file: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        AttributeError,
        TypeError,
    ) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt?): {reason[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not an mt checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version") != VERSION:
        raise UserError(f"{path} has checkpoint version {ckpt.get('version')}; this mt reads {VERSION}")
    return ckpt


@dataclass
class Loaded:
    model: Transformer
    tokenizer: Tokenizer
    src_lang: str
    tgt_lang: str
    ckpt: dict[str, Any]


def build_model(ckpt: dict[str, Any]) -> Transformer:
    config = ModelConfig(**ckpt["model_config"])
    model = Transformer(config, ckpt["src_vocab_size"], ckpt["tgt_vocab_size"],
                        joint_vocab="tokenizer_tgt" not in ckpt)
    model.load_state_dict(ckpt["model"])
    return model


def tokenizer_of(ckpt: dict[str, Any]) -> Tokenizer:
    tgt = ckpt.get("tokenizer_tgt")
    return Tokenizer(_tensor_to_bytes(ckpt["tokenizer_src"]), None if tgt is None else _tensor_to_bytes(tgt))


def load(path: Path | str, device: str | torch.device = "cpu") -> Loaded:
    """Rebuild model (eval mode) and tokenizer from a checkpoint file alone."""
    ckpt = read(path)
    try:
        model = build_model(ckpt).to(device).eval()
        return Loaded(model, tokenizer_of(ckpt), ckpt["src_lang"], ckpt["tgt_lang"], ckpt)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is damaged or from an incompatible mt version: {reason}") from None
