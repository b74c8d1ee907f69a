"""The portable model folder: a model file's content as plain files other tools can read.

    config.json         format marker, ModelConfig, vocabulary sizes, languages, special ids,
                        the sentencepiece file names, the weights that are one tensor (tied), and
                        what the model file recorded (corpus name, training state, aligning heads)
    model.safetensors   the weights (float32, each tied tensor stored once)
    spm.joint.model     the sentencepiece model (spm.src.model + spm.tgt.model without a joint vocabulary)

`python -m mt.export` writes it (with a model card and a CTranslate2 model beside); every tool
that takes `--checkpoint` reads it as it reads a .pt model file (`read_model_folder` gives the
same ModelFile record), so it translates exactly as the checkpoint it came from. No pickle is
involved: the folder is safe to load from anyone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mt.errors import UserError
from mt.fileio import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    import torch

    from mt.checkpoint import ModelFile

FOLDER_FORMAT = "mt-model-folder"
FOLDER_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
RECORDED = (
    "data_name",
    "data_config",
    "train_state",
    "averaged_from",
    "alignment",
)  # optional ModelFile keys kept as JSON


def is_model_folder(path: Path) -> bool:
    """A folder with config.json and model.safetensors (what `read_model_folder` reads)."""
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def tied_names(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Names whose tensor is another name's (tied embeddings): name -> the first name of that tensor.

    safetensors stores every tensor once; a model's state dict names a tied one several times.
    """
    first: dict[tuple[int, tuple[int, ...]], str] = {}
    tied = {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in first:
            tied[name] = first[key]
        else:
            first[key] = name
    return tied


def folder_config(ckpt: ModelFile, tied: dict[str, str]) -> dict[str, Any]:
    """config.json: everything of the model file but its weights and tokenizer bytes."""
    from mt.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

    joint = "tokenizer_tgt" not in ckpt
    config: dict[str, Any] = {
        "format": FOLDER_FORMAT,
        "version": FOLDER_VERSION,
        "model_config": ckpt["model_config"],
        "src_vocab_size": ckpt["src_vocab_size"],
        "tgt_vocab_size": ckpt["tgt_vocab_size"],
        "src_lang": ckpt["src_lang"],
        "tgt_lang": ckpt["tgt_lang"],
        "special_ids": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID},
        "tokenizer": {
            "src": "spm.joint.model" if joint else "spm.src.model",
            "tgt": None if joint else "spm.tgt.model",
        },
        "tied_weights": tied,
    }
    for key in RECORDED:
        if key in ckpt:
            config[key] = ckpt[key]  # type: ignore[literal-required]
    return config


def write_model_folder(ckpt: ModelFile, directory: Path) -> None:
    """Write the folder's three parts (the directory is created; files are written atomically)."""
    from safetensors.torch import save

    from mt.checkpoint import build_model, tokenizer_of

    # The rebuilt model's state dict, not ckpt["model"]: a model file stores tied weights as
    # separate copies, the model shares one tensor, so the ties are found by identity.
    state = build_model(ckpt).state_dict()
    tied = tied_names(state)
    weights = {name: t.detach().contiguous() for name, t in state.items() if name not in tied}
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / WEIGHTS, save(weights, metadata={"format": "pt", "mt_format": FOLDER_FORMAT}))
    tokenizer_of(ckpt).save(directory)
    atomic_write_json(directory / CONFIG, folder_config(ckpt, tied))


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path / CONFIG} is not readable JSON: {str(err).splitlines()[0][:200]}") from None
    if not isinstance(config, dict) or config.get("format") != FOLDER_FORMAT:
        if (path / "model.bin").is_file():
            raise UserError(f"{path} is a CTranslate2 model: translate with it through --engine ct2 --model {path}")
        raise UserError(f"{path / CONFIG} is not an mt model folder's (no '{FOLDER_FORMAT}' marker)")
    if config.get("version") != FOLDER_VERSION:
        raise UserError(f"{path} has model folder version {config.get('version')}; this mt reads {FOLDER_VERSION}")
    return config


def read_model_folder(path: Path) -> ModelFile:
    """The folder as the ModelFile record a .pt model file gives (tied names share one tensor)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from mt.checkpoint import FORMAT, VERSION, _bytes_to_tensor

    config = _read_config(path)
    try:
        weights = load_file(str(path / WEIGHTS))
        state = dict(weights)
        for name, source in config["tied_weights"].items():
            state[name] = weights[source]
        names = config["tokenizer"]
        ckpt: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            **{
                key: config[key] for key in ("model_config", "src_vocab_size", "tgt_vocab_size", "src_lang", "tgt_lang")
            },
            "tokenizer_src": _bytes_to_tensor((path / names["src"]).read_bytes()),
            "model": state,
        }
        if names.get("tgt"):
            ckpt["tokenizer_tgt"] = _bytes_to_tensor((path / names["tgt"]).read_bytes())
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, AttributeError) as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is not a complete mt model folder: {reason}") from None
    for key in RECORDED:
        if key in config:
            ckpt[key] = config[key]
    return ckpt  # type: ignore[return-value]
