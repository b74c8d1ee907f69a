"""Scoring a model during and after training: validation loss, greedy BLEU/chrF, the test split.

Pure functions of (model, split, tokenizer, settings): the trainer decides what to do with the
numbers (best checkpoint, early stopping, averaging).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mt.align.extract import AlignConfig, align_config_for, align_words, encode_pairs, teacher_forced_attention
from mt.align.gold import GoldLine, Score, aer, flip_gold, read_alignment_file
from mt.align.teacher import PieceLinks
from mt.batching import Split, bucket_batches, collate
from mt.checkpoint import supervised_heads
from mt.config import DecodeConfig, GoldConfig
from mt.decode import translate_ids
from mt.errors import UserError
from mt.evaluate import score_translations
from mt.fileio import read_lines
from mt.loss import batch_loss
from mt.model import Transformer
from mt.paths import PROJECT_ROOT
from mt.runlog import CorpusValidation, ValidationRecord
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
        result = batch_loss(model, batch, 0.0, output_class=model.output_class)
        total += float(result.nll)
        tokens += result.tokens
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
    return Decoded(text, score_translations(text, list(split.tgt_text), list(split.src_text)), seconds)


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
    results = {
        "test_bleu": s["bleu"],
        "test_chrf": s["chrf"],
        "bleu_signature": s["bleu_signature"],
        "chrf_signature": s["chrf_signature"],
        "test_decode_seconds": decoded.seconds,
    }
    if "multi_reference" in s:  # a source with several translations (Tatoeba), scored against all of them
        results["test_multi_reference"] = s["multi_reference"]
    return results


# Several corpora (data.corpora): scored one by one, combined by the mean (runlog.selection_rule) ----
def combined(decoded: dict[str, Decoded]) -> Decoded:
    """One corpus's Decoded as it is; several: their translations in turn, the mean of their BLEUs
    and chrFs (each corpus weighs the same, whatever its size), the sum of their decoding times."""
    if len(decoded) == 1:
        return next(iter(decoded.values()))
    parts = list(decoded.values())
    scores = {key: sum(d.scores[key] for d in parts) / len(parts) for key in ("bleu", "chrf")}
    first = parts[0].scores
    scores.update(bleu_signature=first["bleu_signature"], chrf_signature=first["chrf_signature"])
    return Decoded([t for d in parts for t in d.text], scores, sum(d.seconds for d in parts))


def corpus_validation(loss: float, scores: dict[str, Any]) -> CorpusValidation:
    """One corpus's entry in a validation record's `corpora`."""
    bleu, chrf = scores["bleu"], scores["chrf"]
    return {"valid_loss": loss, "valid_ppl": math.exp(min(loss, 50)), "valid_bleu": bleu, "valid_chrf": chrf}


def corpora_test_results(decoded: dict[str, Decoded], sentences: dict[str, int]) -> dict[str, Any]:
    """metrics.json's test entries of several corpora: the mean (test_bleu, test_chrf) and each
    corpus's scores under test_corpora."""
    per = {name: {**test_results(d), "sentences": sentences[name]} for name, d in decoded.items()}
    return {**test_results(combined(decoded)), "test_corpora": per}


# Alignment against a gold set (data.align_gold) -------------------------------------------------
@dataclass
class GoldSet:
    """Gold sentence pairs (whitespace tokens, as the links index them) encoded word by word."""

    src_words: list[list[str]]
    tgt_words: list[list[str]]
    src_ids: list[list[int]]
    src_word_ids: list[list[int]]  # word index of each source piece
    tgt_ids: list[list[int]]
    tgt_word_ids: list[list[int]]
    links: list[GoldLine]  # (source word, target word), 0-based


def load_gold(cfg: GoldConfig, tokenizer: Tokenizer, limit: int) -> GoldSet:
    """Read data.align_gold (sentences and links), check they agree, encode both sides."""
    src, tgt = read_lines(_existing(cfg.src)), read_lines(_existing(cfg.tgt))
    links = read_alignment_file(_existing(cfg.links), cfg.one_based)
    if cfg.reversed:
        links = flip_gold(links)
    if not len(src) == len(tgt) == len(links):
        raise UserError(
            f"data.align_gold: {len(src)} source lines, {len(tgt)} target lines, {len(links)} link lines "
            "(they must match)"
        )
    for n, (s, t, g) in enumerate(zip(src, tgt, links), start=1):
        if any(i >= len(s.split()) or j >= len(t.split()) for i, j in g.possible | g.sure):
            raise UserError(
                f"data.align_gold: line {n} links a word beyond the sentence "
                "(wrong data.align_gold.one_based or data.align_gold.reversed?)"
            )
    enc = encode_pairs(tokenizer, src, tgt, limit)
    return GoldSet(
        [s.split() for s in src],
        [t.split() for t in tgt],
        enc.src_ids,
        enc.src_words,
        enc.tgt_ids,
        enc.tgt_words,
        links,
    )


def _existing(name: str) -> Path:
    """A relative path from the current directory, else from the project (as data.dir)."""
    path = Path(name)
    if not path.is_file() and not path.is_absolute() and (PROJECT_ROOT / path).is_file():
        path = PROJECT_ROOT / path
    if not path.is_file():
        raise UserError(f"data.align_gold: file not found: {name} (for the Hansards gold: make align)")
    return path


@dataclass
class GoldAlignment:
    score: Score
    matrices: list[torch.Tensor]  # word-level [target words, source words] per pair (empty if a side is)


def gold_alignment(model: Transformer, gold: GoldSet, supervised: bool, device: torch.device) -> GoldAlignment:
    """AER of the model's teacher-forced alignments of the gold pairs, read as mt.align reads them.

    supervised: the aligning heads (as trained with train.align_weight); otherwise the default
    extraction, the mean of every layer and head.
    """
    cfg = align_config_for({"alignment": supervised_heads(model.config)}) if supervised else AlignConfig()
    n = len(gold.links)
    keep = [i for i in range(n) if gold.src_ids[i] and gold.tgt_ids[i]]
    attention = teacher_forced_attention(
        model, [gold.src_ids[i] for i in keep], [gold.tgt_ids[i] for i in keep], device, full_context=cfg.full_context
    )
    matrices: list[torch.Tensor] = [torch.zeros(0, 0)] * n
    hyp: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for i, a in zip(keep, attention):
        matrices[i], hyp[i] = align_words(a, gold.src_word_ids[i], gold.tgt_word_ids[i], cfg)
    return GoldAlignment(aer(gold.links, hyp), matrices)


def teacher_on_gold(links: PieceLinks, train: Split, gold: GoldSet) -> tuple[Score, int] | None:
    """The teacher links' AER on the gold pairs that are also training pairs (as in make align's
    recipe, which appends the gold sentences to the training data, never their links), read through
    the same word units as the model's: the bound a head that learns them is likely to meet. Also the
    number of gold pairs scored; None if no gold pair is a training pair."""
    wanted = {(tuple(s), tuple(t)) for s, t in zip(gold.src_ids, gold.tgt_ids)}  # a few hundred, not the corpus
    src_lens, tgt_lens = train.lengths()
    lengths = {(len(s), len(t)) for s, t in wanted}
    row: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    for i in range(len(train.src)):
        if (src_lens[i] - 1, tgt_lens[i] - 1) in lengths:  # lengths() counts eos
            pair = (tuple(train.src[i]), tuple(train.tgt[i]))
            if pair in wanted:
                row.setdefault(pair, i)
    hyp, lines = [], []
    for k, line in enumerate(gold.links):
        i = row.get((tuple(gold.src_ids[k]), tuple(gold.tgt_ids[k])))
        if i is None:  # not in training, or encoded otherwise in context (a number split differently)
            continue
        src, tgt = links.of(i)
        src_word, tgt_word = gold.src_word_ids[k], gold.tgt_word_ids[k]
        hyp.append({(src_word[a], tgt_word[b]) for a, b in zip(src.tolist(), tgt.tolist())})
        lines.append(line)
    return (aer(lines, hyp), len(lines)) if lines else None


def alignment_entries(score: Score) -> dict[str, float]:
    """A validation record's alignment keys (fractions)."""
    return {"valid_aer": score.aer, "valid_align_precision": score.precision, "valid_align_recall": score.recall}
