"""The checkpoint format: what a model file and a resumable training checkpoint hold.

Both are one dict saved with torch.save and read back with weights_only=True (no pickled code).
A model file (best.pt, averaged.pt, step-*.pt snapshots) holds everything a tool needs: model
config, weights and tokenizer. A training checkpoint (last.pt) adds what exact resuming needs:
optimizer and grad-scaler state, the loop's TrainState and one RNG state per process.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from typing_extensions import NotRequired, TypedDict

from mt import distributed
from mt.config import (
    DEFAULT_ALIGN_TEACHER,
    UNRECORDED_ALIGN_TEACHER_RUNS,
    UNRECORDED_ALIGN_TEACHER_SAMPLERS,
    DataConfig,
    ModelConfig,
    TrainConfig,
)
from mt.errors import UserError
from mt.model import Transformer
from mt.rundir import model_file
from mt.tokenizer import Tokenizer

if TYPE_CHECKING:
    from mt.engine import Engine

log = logging.getLogger(__name__)
FORMAT = "mt-checkpoint"
VERSION = 1
WEIGHTS_ONLY_REASON = "WeightsUnpickler error:"  # what precedes the cause in torch.load's refusal


@dataclass
class TrainState:
    """Where training stands; with the seed it fixes everything that comes next."""

    step: int = 0  # optimizer updates done
    epoch: int = 0
    batch_in_epoch: int = 0  # next batch of this epoch's order
    finish_epoch: int = -1  # the first epoch on data.finish_on alone (-1: not reached, or none)
    best_bleu: float = -1.0
    best_step: int = 0
    bad_validations: int = 0
    nonfinite_steps: int = 0
    train_seconds: float = 0.0
    train_tokens: int = 0
    # A linear or cosine lr schedule fitted to train.max_minutes (mt.train): the update it ends at
    # (0: at train.max_steps), the time limit it was fitted to, and the training seconds after the
    # first updates, which the speed is measured from.
    schedule_steps: int = 0
    schedule_minutes: float = 0.0
    seconds_at_speed_start: float = 0.0

    def last_step(self, tc: TrainConfig) -> int:
        """The update training ends at (0: no step limit): train.max_steps, or sooner where a linear or
        cosine schedule was fitted to this same train.max_minutes (a run resumed with others drops it)."""
        fitted = self.schedule_steps and tc.lr_schedule != "inverse_sqrt" and self.schedule_minutes == tc.max_minutes
        return min(self.schedule_steps, tc.max_steps) if fitted and tc.max_steps else tc.max_steps

    history: list[dict[str, float]] = field(default_factory=list)


class AligningHeads(TypedDict):
    """Which cross-attention heads a model's alignments are read from (mt.align's default)."""

    layer: int  # decoder layer, 0-based
    heads: list[int]  # their attention is averaged
    shift: bool  # read target word j from the step where it is the decoder input
    full_context: bool  # teacher-forced without the causal mask (as trained with model.align_full_context)
    source: str  # "supervised" (trained with train.align_weight > 0) | "sweep" (mt.align sweep --save)
    null: NotRequired[bool]  # trained with model.align_null: attention on the source eos = no link
    teacher: NotRequired[str]  # the train.align_teacher it learned (absent before it was recorded: the default)
    teacher_samplers: NotRequired[int]  # train.align_teacher_samplers (absent before it was recorded: 2)
    teacher_runs: NotRequired[int]  # train.align_teacher_runs (absent before it was recorded: 1)
    aer: NotRequired[float]  # the AER measured when it was chosen (sweep), in [0, 1]


def supervised_heads(config: ModelConfig) -> AligningHeads:
    """The heads train.align_weight trains, as the record mt.align reads."""
    return {
        "layer": config.aligning_layer(),
        "heads": list(range(config.align_heads)),
        "shift": False,  # supervised on the row that predicts each target token
        "full_context": config.align_full_context,
        "source": "supervised",
        "null": config.align_null,
    }


class ModelFile(TypedDict):
    format: str  # FORMAT
    version: int  # VERSION
    model_config: dict  # asdict(ModelConfig)
    src_vocab_size: int
    tgt_vocab_size: int
    src_lang: str
    tgt_lang: str
    tokenizer_src: torch.Tensor  # the sentencepiece model's bytes as uint8
    tokenizer_tgt: NotRequired[torch.Tensor]  # absent: one joint vocabulary
    model: dict[str, torch.Tensor]  # state_dict
    data_name: NotRequired[str]  # the corpus config it was trained on (mt.evaluate's default)
    # Its settings as trained (DataConfig.as_record: corpora, held-out seeds, weights, dirs):
    # mt.evaluate rebuilds the same splits from them.
    data_config: NotRequired[dict]
    train_state: NotRequired[dict]  # asdict(TrainState) when it was written
    averaged_from: NotRequired[list[str]]  # mt.average: the checkpoints whose weights it averages
    alignment: NotRequired[AligningHeads]  # absent: no head chosen (mt.align uses its own default)


class TrainingCheckpoint(ModelFile):
    optimizer: dict
    scaler: NotRequired[dict]  # fp16 only
    rng_cpu: list[torch.Tensor]  # one per process (DDP rank)
    rng_cuda: NotRequired[list[torch.Tensor]]


RESUME_KEYS = ("optimizer", "scaler", "rng_cpu", "rng_cuda")  # what only resuming needs


def without_resume_state(ckpt: ModelFile) -> ModelFile:
    """The checkpoint as a model file: weights, config, tokenizer; no optimizer or RNG state."""
    return {k: v for k, v in ckpt.items() if k not in RESUME_KEYS}  # type: ignore[return-value]


def _bytes_to_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _tensor_to_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.numpy().tobytes()


def pack(model: Transformer, tokenizer: Tokenizer, src_lang: str, tgt_lang: str) -> ModelFile:
    """Everything needed to rebuild the model and its tokenizer."""
    ckpt: ModelFile = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": asdict(model.config),
        "src_vocab_size": model.src_vocab_size,
        "tgt_vocab_size": model.tgt_vocab_size,
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "tokenizer_src": _bytes_to_tensor(tokenizer.src_proto),
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    if tokenizer.tgt_proto is not None:
        ckpt["tokenizer_tgt"] = _bytes_to_tensor(tokenizer.tgt_proto)
    return ckpt


def pack_training(engine: Engine, tokenizer: Tokenizer, state: TrainState, data: DataConfig, resumable: bool):
    """A model file with the training state; `resumable` adds optimizer, scaler and every rank's RNG.

    With `resumable`, every DDP rank must call this (the RNG states are gathered).
    """
    ckpt = pack(engine.model, tokenizer, data.src_lang, data.tgt_lang)
    ckpt["train_state"] = asdict(state)
    ckpt["data_name"] = data.name
    ckpt["data_config"] = data.as_record()
    if engine.tc.align_weight > 0:
        ckpt["alignment"] = {
            **supervised_heads(engine.model.config),
            "teacher": engine.tc.align_teacher,
            "teacher_samplers": engine.tc.align_teacher_samplers,
            "teacher_runs": engine.tc.align_teacher_runs,
        }
    if not resumable:
        return ckpt
    full: TrainingCheckpoint = {
        **ckpt,  # type: ignore[typeddict-item]
        "optimizer": engine.optimizer.state_dict(),
        "rng_cpu": distributed.gather(torch.get_rng_state(), engine.dist),
    }
    if engine.scaler.is_enabled():
        full["scaler"] = engine.scaler.state_dict()
    if engine.device.type == "cuda":
        full["rng_cuda"] = distributed.gather(torch.cuda.get_rng_state(), engine.dist)
    return full


def recorded_teacher(record: AligningHeads) -> dict[str, str | int]:
    """The train.align_teacher* settings supervised heads learned from (older records lack some)."""
    return {
        "align_teacher": record.get("teacher", DEFAULT_ALIGN_TEACHER),
        "align_teacher_samplers": record.get("teacher_samplers", UNRECORDED_ALIGN_TEACHER_SAMPLERS),
        "align_teacher_runs": record.get("teacher_runs", UNRECORDED_ALIGN_TEACHER_RUNS),
    }


def check_resumed_teacher(ckpt: TrainingCheckpoint, tc: TrainConfig, path: Path) -> None:
    """Refuse to go on with another teacher than the heads learned from (before any teacher is computed)."""
    record = ckpt.get("alignment")
    if tc.align_weight <= 0 or not record or record.get("source") != "supervised":
        return
    for key, trained in recorded_teacher(record).items():
        if getattr(tc, key) != trained:
            raise UserError(
                f"{path} trained its aligning heads with train.{key}={trained}, not {getattr(tc, key)}; "
                "resume with the same teacher or start a new run directory"
            )


def restore_training(ckpt: TrainingCheckpoint, engine: Engine, path: Path) -> TrainState:
    """Load weights, optimizer, scaler and this rank's RNG from `ckpt`; returns its TrainState."""
    try:  # through ModelConfig: a key added since the checkpoint was written takes its default
        saved_config = asdict(ModelConfig(**ckpt["model_config"]))
    except TypeError:  # a key this version does not know
        saved_config = ckpt["model_config"]
    if saved_config != asdict(engine.model.config):
        raise UserError(
            f"{path} was trained with a different model config; resume with the same "
            "model.* settings or start a new run directory"
        )
    try:
        engine.model.load_state_dict(ckpt["model"])
        engine.optimizer.load_state_dict(ckpt["optimizer"])
        state = TrainState(**ckpt["train_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{path} is not a resumable training checkpoint of this mt version: {err}") from None
    if engine.scaler.is_enabled() and "scaler" in ckpt:
        engine.scaler.load_state_dict(ckpt["scaler"])
    rng_cpu, rng_cuda, dist = ckpt["rng_cpu"], ckpt.get("rng_cuda"), engine.dist
    if len(rng_cpu) == dist.world:  # one RNG state per rank
        torch.set_rng_state(rng_cpu[dist.rank])
        if engine.device.type == "cuda" and rng_cuda is not None:
            torch.cuda.set_rng_state(rng_cuda[dist.rank])
    else:
        log.warning(
            "checkpoint has RNG states for %d processes, this run has %d: dropout RNG reseeded",
            len(rng_cpu),
            dist.world,
        )
    return state


def is_torch_archive(path: Path) -> bool:
    """Whether the file starts as torch.save's output does: a zip archive (before torch 1.6: a pickle)."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    return magic[:2] == b"PK" or magic[:1] == b"\x80"


def _first_sentence(err: BaseException) -> str:
    """The gist of a loading error: PyTorch's own go on for lines of advice (miniz, weights_only)
    that say nothing about this file, so only the first sentence of what is wrong is kept."""
    text = (err.strerror if isinstance(err, OSError) and err.strerror else str(err)).strip()
    if WEIGHTS_ONLY_REASON in text:  # the refused object is named after paragraphs of advice
        text = text.split(WEIGHTS_ONLY_REASON, 1)[1].strip()
    if not text:
        return type(err).__name__
    sentence = re.split(r"(?<=\.)\s", text.splitlines()[0], maxsplit=1)[0].rstrip(".")
    return sentence if len(sentence) <= 200 else sentence[:197] + "..."


def read(path: Path | str, map_location: str | torch.device = "cpu") -> ModelFile:
    """Load a checkpoint of ours safely (weights_only; a run folder's best.pt, or an exported
    model folder), with one clear error otherwise."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    path = model_file(path)
    if path.is_dir():  # an exported model folder: the same record, from safetensors and JSON
        from mt.model_folder import read_model_folder

        return read_model_folder(path)
    if not is_torch_archive(path):
        raise UserError(f"{path} is not a checkpoint file (not a PyTorch archive)")
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
        raise UserError(f"{path} is not a readable checkpoint (truncated or damaged): {_first_sentence(err)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not an mt checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version") != VERSION:
        raise UserError(f"{path} has checkpoint version {ckpt.get('version')}; this mt reads {VERSION}")
    return ckpt  # type: ignore[return-value]


def read_for_resume(path: Path) -> TrainingCheckpoint | None:
    """The training checkpoint to resume from, or None (with a warning) if there is none yet."""
    if not path.exists():
        log.warning("train.resume=true but %s does not exist: starting from scratch", path)
        return None
    return read(path)  # type: ignore[return-value]


@dataclass
class Loaded:
    model: Transformer
    tokenizer: Tokenizer
    src_lang: str
    tgt_lang: str
    ckpt: ModelFile


def build_model(ckpt: ModelFile) -> Transformer:
    config = ModelConfig(**ckpt["model_config"])
    model = Transformer(config, ckpt["src_vocab_size"], ckpt["tgt_vocab_size"], joint_vocab="tokenizer_tgt" not in ckpt)
    model.load_state_dict(ckpt["model"])
    return model


def tokenizer_of(ckpt: ModelFile) -> Tokenizer:
    tgt = ckpt.get("tokenizer_tgt")
    return Tokenizer(_tensor_to_bytes(ckpt["tokenizer_src"]), None if tgt is None else _tensor_to_bytes(tgt))


def load(path: Path | str, device: str | torch.device = "cpu") -> Loaded:
    """Rebuild model (eval mode) and tokenizer from a checkpoint file (a run folder's best.pt, or an
    exported model folder) alone."""
    ckpt = read(path)
    try:
        model = build_model(ckpt).to(device).eval()
        return Loaded(model, tokenizer_of(ckpt), ckpt["src_lang"], ckpt["tgt_lang"], ckpt)
    except (KeyError, TypeError, ValueError, RuntimeError, UserError) as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is damaged or from an incompatible mt version: {reason}") from None
