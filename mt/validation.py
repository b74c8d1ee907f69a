"""Scoring a model during and after training: validation loss, greedy BLEU/chrF, the test split.

Pure functions of (model, split, tokenizer, settings): the trainer decides what to do with the
numbers (best checkpoint, early stopping, averaging).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from mt.batching import Split, bucket_batches, collate
from mt.config import DecodeConfig
from mt.decode import translate_ids
from mt.evaluate import score_translations
from mt.loss import batch_loss
from mt.model import Transformer
from mt.runlog import ValidationRecord
from mt.tokenizer import Tokenizer


def first_sentences(split: Split, n: int) -> Split:
    """The first n pairs (all for n = 0): train.valid_max_sentences."""
    return Split(split.src_text[:n], split.tgt_text[:n], split.src[:n], split.tgt[:n]) if n else split


@torch.no_grad()
def validation_loss(model: Transformer, split: Split, max_tokens: int, device: torch.device) -> float:
    """Mean NLL per target token (no label smoothing)."""
    model.eval()
    total, tokens = 0.0, 0
    src_lens, tgt_lens = split.lengths()
    for idx in bucket_batches(src_lens, tgt_lens, max_tokens):
        batch = collate(split, idx).to(device)
        _, nll, n = batch_loss(model, batch, 0.0)
        total += float(nll)
        tokens += n
    return total / max(tokens, 1)


@dataclass
class Decoded:
    text: list[str]  # detokenized translations
    scores: dict[str, Any]  # bleu, chrf and their sacreBLEU signatures
    seconds: float


def decode_and_score(
    model: Transformer, split: Split, tokenizer: Tokenizer, cfg: DecodeConfig, device: torch.device
) -> Decoded:
    start = time.perf_counter()
    hyps = translate_ids(model, split.src, cfg, device)
    text = tokenizer.decode_tgt([h[0].tokens for h in hyps])
    seconds = time.perf_counter() - start
    return Decoded(text, score_translations(text, list(split.tgt_text)), seconds)


def greedy(cfg: DecodeConfig) -> DecodeConfig:
    """The decoder that validation uses (greedy: fast, and what selects checkpoints)."""
    return DecodeConfig(
        beam_size=1, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b, length_penalty=cfg.length_penalty
    )


def samples_markdown(split: Split, text: list[str], n: int) -> str:
    """The first n source / reference / translation triples, for TensorBoard's text tab."""
    return "\n\n".join(
        f"**src:** {split.src_text[i]}  \n**ref:** {split.tgt_text[i]}  \n**hyp:** {text[i]}"
        for i in range(min(n, len(split)))
    )


def validation_record(step: int, epoch: int, minutes: float, loss: float, scores: dict[str, Any]) -> ValidationRecord:
    """One row of metrics.json's history."""
    return {
        "step": step,
        "epoch": epoch,
        "minutes": minutes,
        "valid_loss": loss,
        "valid_ppl": math.exp(min(loss, 50)),
        "valid_bleu": scores["bleu"],
        "valid_chrf": scores["chrf"],
    }


def test_results(decoded: Decoded) -> dict[str, Any]:
    """The test split's entries of metrics.json."""
    s = decoded.scores
    return {
        "test_bleu": s["bleu"],
        "test_chrf": s["chrf"],
        "bleu_signature": s["bleu_signature"],
        "chrf_signature": s["chrf_signature"],
        "test_decode_seconds": decoded.seconds,
    }
