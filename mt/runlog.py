"""What a training run reports: TensorBoard scalars, texts and figures, and `metrics.json`.

`metrics.json` is the run's record for people and for `mt.compare`; `RunMetrics` is its format.
On DDP ranks other than 0 the log is disabled and every call does nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from typing_extensions import NotRequired, TypedDict

from mt.checkpoint import TrainState
from mt.config import NOT_HYPERPARAMETERS, MTConfig
from mt.fileio import atomic_write_json
from mt.rundir import RunDir


class CorpusValidation(TypedDict):
    """One corpus's validation scores (data.corpora)."""

    valid_loss: float
    valid_ppl: float
    valid_bleu: float
    valid_chrf: float


class ValidationRecord(TypedDict):
    step: int
    epoch: int
    minutes: float
    valid_loss: float
    valid_ppl: float
    valid_bleu: float  # greedy, on train.valid_max_sentences sentences
    valid_chrf: float
    # With data.align_gold: the gold set's alignment scores (fractions), teacher-forced through
    # the aligning heads (or, without train.align_weight, the mean of all layers and heads).
    valid_aer: NotRequired[float]
    valid_align_precision: NotRequired[float]
    valid_align_recall: NotRequired[float]
    # With data.corpora: each corpus's scores; the keys above are then their means (selection_rule).
    corpora: NotRequired[dict[str, CorpusValidation]]


class MultiReferenceScores(TypedDict):
    """A test set whose sources repeat (one line per translation), scored once per distinct source
    against all its references (mt.evaluate.multi_reference_scores)."""

    bleu: float
    chrf: float
    sources: int
    max_references: int
    bleu_signature: str
    chrf_signature: str


class CorpusTest(TypedDict):
    """One corpus's test scores (data.corpora)."""

    test_bleu: float
    test_chrf: float
    bleu_signature: str
    chrf_signature: str
    test_decode_seconds: float
    sentences: int
    test_multi_reference: NotRequired[MultiReferenceScores]


class RunMetrics(TypedDict, total=False):
    """metrics.json. Runs of older versions may lack keys: readers use .get()."""

    status: str  # running | completed | interrupted | failed
    run_dir: str
    overrides: list[str]  # the command line's Hydra overrides
    steps: int
    epochs: int
    train_minutes: float
    tokens_per_sec: float
    parameters: int | None  # None: setup failed before the model existed
    best_valid_bleu: float | None
    best_step: int
    valid_loss: float | None  # of the last validation
    nonfinite_steps: int
    processes: int
    ddp_max_param_divergence: float | None
    history: list[ValidationRecord]
    config: dict[str, dict[str, Any]]  # data, model, train, decode as dicts
    # With train.align_weight and data.align_gold pairs among the training pairs: the teacher's own
    # links scored on them (fractions), the bound the aligning heads are likely to meet
    teacher_gold_aer: float
    teacher_gold_precision: float
    teacher_gold_recall: float
    teacher_gold_pairs: int
    # A linear or cosine lr schedule: the update it ends at (train.max_steps, or fitted to train.max_minutes)
    schedule_steps: int
    # After training: checkpoint averaging (train.average_last) and the test split
    averaged_checkpoints: int
    averaged_valid_bleu: float
    averaged_valid_chrf: float
    tested_checkpoint: str  # best.pt | averaged.pt
    test_bleu: float
    test_chrf: float
    bleu_signature: str
    chrf_signature: str
    test_decode_seconds: float
    test_multi_reference: MultiReferenceScores  # only where test sources repeat
    # With data.corpora: the corpora, how their validations select best.pt, and each one's test
    # scores (test_bleu and test_chrf above are then their means, test_decode_seconds the sum).
    corpora: list[str]
    selection: str
    test_corpora: dict[str, CorpusTest]


def selection_rule(corpora: list[str]) -> str:
    """How the validations of several corpora combine into the one BLEU that selects best.pt."""
    return f"mean of the validation BLEUs of {', '.join(corpora)}"


def read_metrics(path: Path) -> RunMetrics:
    """metrics.json as a dict; ValueError if it is not a JSON object."""
    metrics = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(metrics, dict):
        raise ValueError("not a JSON object")
    return metrics  # type: ignore[return-value]


def config_dicts(cfg: MTConfig) -> dict[str, dict[str, Any]]:
    groups = {group: asdict(getattr(cfg, group)) for group in ("model", "train", "decode")}
    return {"data": cfg.data.as_record(), **groups}


# What the HParams table shows for every run, besides the keys set on the command line.
HPARAM_KEYS = (
    "data.name", "data.src_lang", "data.tgt_lang", "data.vocab_size", "model.d_model", "model.layers", "model.heads",
    "model.ffn_dim", "model.dropout", "model.norm", "train.lr", "train.warmup_steps", "train.lr_schedule",
    "train.max_tokens", "train.max_steps", "train.label_smoothing", "train.seed",
)  # fmt: skip
# Its metrics: the last value of these scalars (no extra charts; the test scores are in metrics.json).
HPARAM_METRICS = ("valid/bleu", "valid/chrf", "valid/loss", "valid/aer")


def flat_hparams(cfg: MTConfig, overrides: list[str] = ()) -> dict[str, Any]:
    """The hyperparameters that matter (HPARAM_KEYS) and those the command line set, as scalars."""
    flat = {
        f"{group}.{key}": value
        for group, values in config_dicts(cfg).items()
        for key, value in values.items()
        if isinstance(value, (int, float, str, bool))
    }
    chosen = [*HPARAM_KEYS, *(o.split("=", 1)[0].lstrip("+~") for o in overrides)]
    return {key: flat[key] for key in dict.fromkeys(chosen) if key in flat and key not in NOT_HYPERPARAMETERS}


class RunLog:
    def __init__(self, run_dir: RunDir, cfg: MTConfig, overrides: list[str], enabled: bool):
        self.run_dir, self.cfg, self.overrides, self.enabled = run_dir, cfg, overrides, enabled
        self.writer = None

    def open_tensorboard(self, step: int) -> None:
        """Start the event files; a resumed run drops events logged after its checkpoint's step."""
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir.tensorboard), purge_step=step or None)

    def train_update(self, step: int, stats: dict[str, float], tokens_per_sec: float) -> None:
        if self.writer is not None:
            for key in ("loss", "lr", "grad_norm", "align_loss"):
                if key in stats:
                    self.writer.add_scalar(f"train/{key}", stats[key], step)
            self.writer.add_scalar("train/tokens_per_sec", tokens_per_sec, step)

    def validation(self, record: ValidationRecord, samples: dict[str, str], figures: list) -> None:
        """Scalars (valid/KEY; with data.corpora also valid/CORPUS/KEY), sample translations (tag ->
        markdown) and (tag, matplotlib figure) pairs of one validation."""
        if self.writer is None:
            return
        step = record["step"]
        for key in ("loss", "ppl", "bleu", "chrf", "aer", "align_precision", "align_recall"):
            if f"valid_{key}" in record:
                self.writer.add_scalar(f"valid/{key}", record[f"valid_{key}"], step)
        for corpus, scores in record.get("corpora", {}).items():
            for key in ("loss", "ppl", "bleu", "chrf"):
                self.writer.add_scalar(f"valid/{corpus}/{key}", scores[f"valid_{key}"], step)
        for tag, text in samples.items():
            self.writer.add_text(tag, text, step)
        for tag, fig in figures:
            self.writer.add_figure(tag, fig, step, close=True)
        self.writer.flush()

    def write_metrics(
        self,
        status: str,
        state: TrainState,
        parameters: int | None,
        processes: int,
        divergence: float | None = None,
        results: dict[str, Any] | None = None,
    ) -> RunMetrics:
        """Write metrics.json (atomically); `results` adds averaging and test scores."""
        if not self.enabled:
            return {}
        last = state.history[-1] if state.history else {}
        metrics: RunMetrics = {
            "status": status,
            "run_dir": str(self.run_dir.root),
            "overrides": self.overrides,
            "steps": state.step,
            "epochs": state.epoch,
            "train_minutes": state.train_seconds / 60,
            "tokens_per_sec": state.train_tokens / max(state.train_seconds, 1e-9),
            "parameters": parameters,
            "best_valid_bleu": state.best_bleu if state.best_bleu >= 0 else None,
            "best_step": state.best_step,
            "valid_loss": last.get("valid_loss"),
            "nonfinite_steps": state.nonfinite_steps,
            "processes": processes,
            "ddp_max_param_divergence": divergence,
            "history": state.history,  # type: ignore[typeddict-item]
            "config": config_dicts(self.cfg),
        }
        if self.cfg.train.lr_schedule != "inverse_sqrt":
            metrics["schedule_steps"] = state.last_step(self.cfg.train)
        if self.cfg.data.corpora:
            metrics["corpora"] = list(self.cfg.data.corpora)
            metrics["selection"] = selection_rule(metrics["corpora"])
        metrics.update(results or {})  # type: ignore[typeddict-item]
        atomic_write_json(self.run_dir.metrics, metrics)
        return metrics

    def close(self, metrics: RunMetrics | None = None) -> None:
        """Close the event files; with a finished run's metrics, log its HParams first."""
        if self.writer is None:
            return
        if metrics:
            from torch.utils.tensorboard.summary import hparams

            # The plugin's three summaries only: add_hparams would also write one-point
            # `hparam/*` charts that sort above train/ and valid/.
            for summary_proto in hparams(flat_hparams(self.cfg, self.overrides), dict.fromkeys(HPARAM_METRICS, 0.0)):
                self.writer.file_writer.add_summary(summary_proto)
        self.writer.close()
        self.writer = None


def summary(metrics: RunMetrics, run_dir: RunDir) -> str:
    """What a finished run tells its user: the test score and where to look next."""
    per_corpus = metrics.get("test_corpora") or {}
    mean = f" (mean of {len(per_corpus)} corpora)" if per_corpus else ""
    corpora = "".join(
        f"  {name + ':':<16} test BLEU {m['test_bleu']:.2f} chrF {m['test_chrf']:.2f} ({m['sentences']} sentences)\n"
        for name, m in per_corpus.items()
    )
    return (
        f"done: test BLEU{mean} {metrics['test_bleu']:.2f} chrF {metrics['test_chrf']:.2f} "
        f"({metrics['bleu_signature']})\n{corpora}"
        f"  best checkpoint: {run_dir.best}\n"
        f"  tensorboard:     tensorboard --logdir {run_dir.tensorboard}\n"
        f"  metrics:         {run_dir.metrics}"
    )


class ConsoleHandler(logging.StreamHandler):
    """The terminal side of `python -m mt.train`'s logging (configs/config.yaml, hydra.job_logging):
    lines go through tqdm so they print above the progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 (logging must never raise)
            self.handleError(record)
