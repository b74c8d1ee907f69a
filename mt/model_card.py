"""The README.md of an exported model folder: what the model is, how it was trained, what it scored.

Every number comes from the checkpoint (its config and training state) or from the files of the
run it belongs to (metrics.json, when the checkpoint lies in a run's checkpoints/ folder); what
those do not record is said to be unknown, never estimated. A test score is reported only for the
checkpoint the run tested (metrics.json's tested_checkpoint), validation scores only for the
checkpoint's own step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mt.checkpoint import Loaded
from mt.config import DEFAULT_ALIGN_TEACHER, UNRECORDED_ALIGN_TEACHER_RUNS, UNRECORDED_ALIGN_TEACHER_SAMPLERS


@dataclass
class RunFiles:
    """The run a checkpoint came from: its folder and metrics.json (None: not in a run folder)."""

    root: Path | None
    metrics: dict[str, Any] | None


def run_of(checkpoint: Path) -> RunFiles:
    """RUN/checkpoints/NAME.pt -> RUN and its metrics.json, when both are there and readable."""
    root = checkpoint.parent.parent
    if checkpoint.is_dir() or checkpoint.parent.name != "checkpoints" or not (root / "metrics.json").is_file():
        return RunFiles(None, None)
    try:
        metrics = json.loads((root / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return RunFiles(root, None)
    return RunFiles(root, metrics if isinstance(metrics, dict) else None)


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    """A two-column markdown table; a | in a cell (sacreBLEU signatures) is escaped."""
    cell = lambda value: str(value).replace("|", "\\|")
    return ["| | |", "|---|---|", *(f"| {cell(key)} | {cell(value)} |" for key, value in rows)]


def _model_section(loaded: Loaded) -> list[str]:
    c, m = loaded.model.config, loaded.model
    return [
        "## Model",
        "",
        f"Transformer encoder-decoder, {m.num_parameters():,} parameters (tied weights counted once).",
        "",
        *_table(
            [
                ("layers (encoder + decoder)", f"{len(m.encoder)} + {len(m.decoder)}"),
                ("d_model / heads / FFN", f"{c.d_model} / {c.heads} / {c.ffn_dim}"),
                ("normalization", f"{c.norm}-norm"),
                ("activation", c.activation),
                ("positions", f"{c.positions}, up to {c.max_positions}"),
                ("vocabulary", _vocab(loaded)),
                ("tied embeddings", "yes" if c.tie_embeddings else "no"),
            ]
        ),  # fmt: skip
    ]


def _vocab(loaded: Loaded) -> str:
    tok = loaded.tokenizer
    if tok.joint:
        return f"{tok.src_vocab_size} sentencepiece pieces, joint (spm.joint.model)"
    return f"{tok.src_vocab_size} source + {tok.tgt_vocab_size} target sentencepiece pieces (spm.src/tgt.model)"


def _training_section(loaded: Loaded, run: RunFiles) -> list[str]:
    ckpt = loaded.ckpt
    state = ckpt.get("train_state") or {}
    config = (run.metrics or {}).get("config") or {}
    data, train, model = config.get("data") or {}, config.get("train") or {}, config.get("model") or {}
    lines = ["## Training", ""]
    corpus = ckpt.get("data_name") or data.get("name")
    lines.append(f"Data: **{corpus or 'not recorded'}**, {loaded.src_lang}→{loaded.tgt_lang}.")
    rows: list[tuple[str, Any]] = []
    if state:
        rows.append(("updates / epochs at this checkpoint", f"{state.get('step')} / {state.get('epoch')}"))
        if state.get("train_seconds"):
            rows.append(
                ("training time", f"{state['train_seconds'] / 60:.1f} min, {state.get('train_tokens', 0):,} tokens")
            )
    train_keys = ("optimizer", "lr", "warmup_steps", "lr_schedule", "max_tokens", "accumulate", "max_steps")
    for key in (*train_keys, "label_smoothing", "seed"):
        if key in train:
            rows.append((f"train.{key}", train[key]))
    for key in ("dropout", "attention_dropout"):
        if key in model:
            rows.append((f"model.{key}", model[key]))
    if train.get("align_weight"):
        rows.append(("train.align_weight (supervised aligning heads)", train["align_weight"]))
        rows.append(("train.align_teacher", train.get("align_teacher", DEFAULT_ALIGN_TEACHER)))
        samplers = train.get("align_teacher_samplers", UNRECORDED_ALIGN_TEACHER_SAMPLERS)
        rows.append(("train.align_teacher_samplers", samplers))
        rows.append(("train.align_teacher_runs", train.get("align_teacher_runs", UNRECORDED_ALIGN_TEACHER_RUNS)))
    if train.get("average_last"):
        rows.append(("train.average_last", train["average_last"]))
    for key in ("vocab_size", "spm_model_type", "max_len"):
        if key in data:
            rows.append((f"data.{key}", data[key]))
    if run.metrics and run.metrics.get("overrides"):
        rows.append(("command-line overrides", "`" + " ".join(run.metrics["overrides"]) + "`"))
    if ckpt.get("averaged_from"):
        rows.append(("weights", f"average of {len(ckpt['averaged_from'])} checkpoints"))
    if rows:
        lines += ["", *_table(rows)]
    if not run.metrics:
        lines += ["", "The recipe's other settings are not known: the checkpoint was not exported from a run folder."]
    return lines


def _history_at(metrics: dict[str, Any], step: Any) -> dict[str, Any] | None:
    return next((r for r in metrics.get("history") or [] if r.get("step") == step), None)


def _multi_reference_row(name: str, multi: dict[str, Any]) -> tuple[str, str]:
    """A test set whose sources repeat, scored once per source against all its references."""
    return (
        f"test BLEU / chrF ({name}, {multi['sources']} distinct sources against all their references)",
        f"{multi['bleu']:.2f} / {multi['chrf']:.2f} `{multi['bleu_signature']}`",
    )


def _results_section(loaded: Loaded, checkpoint: Path, run: RunFiles) -> list[str]:
    lines = ["## Results", ""]
    metrics = run.metrics
    if not metrics:
        return [
            *lines,
            "No scores: there is no run metrics.json beside this checkpoint (none were measured for this card).",
        ]
    config = metrics.get("config") or {}
    rows: list[tuple[str, Any]] = []
    tested = metrics.get("tested_checkpoint", "best.pt")
    per_corpus = metrics.get("test_corpora") or {}
    if "test_bleu" in metrics and checkpoint.name == tested and per_corpus:  # several corpora: each, then the mean
        decode = config.get("decode") or {}
        how = f"beam {decode.get('beam_size', '?')}, length penalty {decode.get('length_penalty', '?')}"
        corpora = (config.get("data") or {}).get("corpora") or {}
        for name, scores in per_corpus.items():
            split = ",".join((corpora.get(name) or {}).get("test") or []) or "held-out test"
            which = f"{name}: {split}, {scores.get('sentences', '?')} sentences"
            rows.append(
                (f"test BLEU ({which}, {how})", f"{scores['test_bleu']:.2f} `{scores.get('bleu_signature', '')}`")
            )
            rows.append((f"test chrF ({name})", f"{scores['test_chrf']:.2f} `{scores.get('chrf_signature', '')}`"))
            if multi := scores.get("test_multi_reference"):
                rows.append(_multi_reference_row(name, multi))
        names = ", ".join(per_corpus)
        rows.append(
            (
                f"test BLEU / chrF, mean of the corpora ({names})",
                f"{metrics['test_bleu']:.2f} / {metrics['test_chrf']:.2f}",
            )
        )
    elif "test_bleu" in metrics and checkpoint.name == tested:
        decode = config.get("decode") or {}
        split = ",".join((config.get("data") or {}).get("test") or ["test"])
        how = f"beam {decode.get('beam_size', '?')}, length penalty {decode.get('length_penalty', '?')}"
        rows.append(
            (f"test BLEU ({split}, {how})", f"{metrics['test_bleu']:.2f} `{metrics.get('bleu_signature', '')}`")
        )
        rows.append((f"test chrF ({split})", f"{metrics['test_chrf']:.2f} `{metrics.get('chrf_signature', '')}`"))
        if multi := metrics.get("test_multi_reference"):
            rows.append(_multi_reference_row(split, multi))
    elif "test_bleu" in metrics:
        rows.append(("test scores", f"the run tested {tested}, not {checkpoint.name}: not this model's"))
    record = _history_at(metrics, (loaded.ckpt.get("train_state") or {}).get("step"))
    if record:
        valid = (config.get("train") or {}).get("valid_max_sentences")
        subset = f"first {valid} sentences" if valid else "whole split"
        step = record["step"]
        for name, entry in (record.get("corpora") or {}).items():
            rows.append((f"validation BLEU / chrF at update {step}, {name} (greedy, {subset})", _pair(entry)))
        mean = ", mean of the corpora" if record.get("corpora") else ""
        rows.append((f"validation BLEU / chrF at update {step}{mean} (greedy, {subset})", _pair(record)))
        if "valid_aer" in record:
            gold = ((config.get("data") or {}).get("align_gold") or {}).get("links") or "the run's gold set"
            rows.append((f"alignment error rate at update {step} ({gold})", f"{100 * record['valid_aer']:.1f} %"))
    if not rows:
        return [*lines, "The run's metrics.json records no score of this checkpoint."]
    return [*lines, "From the run's metrics.json (not measured again for this card):", "", *_table(rows)]


def _pair(record: dict[str, Any]) -> str:
    return f"{record.get('valid_bleu', float('nan')):.2f} / {record.get('valid_chrf', float('nan')):.2f}"


def _files_section(loaded: Loaded, quantization: str | None) -> list[str]:
    spm = "spm.joint.model" if loaded.tokenizer.joint else "spm.src.model, spm.tgt.model"
    rows = [
        ("config.json", "model config, vocabulary sizes, languages, special ids, tied weights, training record"),
        ("model.safetensors", "the weights (float32; tied tensors stored once, named in config.json)"),
        (spm, "sentencepiece; ids: pad 0, unk 1, bos 2, eos 3"),
    ]
    if quantization:
        rows.append(("ct2/", f"the CTranslate2 model ({quantization} weights) with its own copy of {spm}"))
    return ["## Files", "", *_table(rows)]


def _usage_section(loaded: Loaded, folder: str, quantization: str | None) -> list[str]:
    lines = ["## Use", "", "```bash", f'python -m mt.translate --checkpoint {folder} "A dog runs in the park."']
    if not quantization:
        return [*lines, "```"]
    src, tgt = ("spm.joint.model", "spm.joint.model") if loaded.tokenizer.joint else ("spm.src.model", "spm.tgt.model")
    return [
        *lines,
        f'python -m mt.translate --engine ct2 --model {folder} "A dog runs in the park."',
        "```",
        "",
        "With CTranslate2 alone (`pip install ctranslate2 sentencepiece`; mt's own decoding also ranks",
        "the beam with its GNMT length penalty, see mt/ct2.py):",
        "",
        "```python",
        "import ctranslate2, sentencepiece as spm",
        f'src = spm.SentencePieceProcessor(model_file="{folder}/ct2/{src}")',
        f'tgt = spm.SentencePieceProcessor(model_file="{folder}/ct2/{tgt}")',
        f'translator = ctranslate2.Translator("{folder}/ct2", device="cpu")',
        'pieces = src.encode("A dog runs in the park.", out_type=str)',
        "best = translator.translate_batch([pieces], beam_size=5, min_decoding_length=0)[0].hypotheses[0]",
        "print(tgt.decode(best))",
        "```",
    ]


def _licence_section(loaded: Loaded, run: RunFiles) -> list[str]:
    data = ((run.metrics or {}).get("config") or {}).get("data") or {}
    corpus = loaded.ckpt.get("data_name") or data.get("name") or "the training corpus"
    where = data.get("hf_name") or data.get("dir") or ""
    source = f" (read from `{where}`)" if where else ""
    return [
        "## Licence and credits",
        "",
        "The code that trained this model (mt) is MIT-licensed. The weights are derived from "
        f"**{corpus}**{source}: their terms follow that corpus' licence. "
        "**TODO: state the licence of these weights after checking the corpus' terms.**",
        "",
        f"Data credits: **TODO: cite {corpus} (its authors and paper).**",
    ]


def model_card(loaded: Loaded, checkpoint: Path, folder: str, quantization: str | None) -> str:
    """README.md of the folder `folder` exported from `checkpoint` (`quantization`: of its ct2/, if any)."""
    run = run_of(checkpoint)
    origin = f"`{checkpoint}`" + (f" (run `{run.root}`)" if run.root else "")
    sections = [
        [
            f"# {loaded.src_lang}→{loaded.tgt_lang} translation model",
            "",
            f"Exported by `python -m mt.export` from {origin}.",
        ],
        _files_section(loaded, quantization),
        _usage_section(loaded, folder, quantization),
        _model_section(loaded),
        _training_section(loaded, run),
        _results_section(loaded, checkpoint, run),
        _licence_section(loaded, run),
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"
