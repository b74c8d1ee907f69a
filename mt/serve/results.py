"""The JSON answer for one translated input, shared by `mt.serve` and `mt.translate --format json`.

source          the input as the model read it (control characters removed, spaces collapsed)
translation     the best hypothesis, detokenized ("" for an empty input)
score           its length-normalized log-probability (null for an empty input)
n_best          [{"translation", "score"}], best first
source_words    the source's word units: its whitespace words, punctuation at their ends split off
                ("cream." -> "cream", "."; mt.align.extract.encode_units)
target_words    the translation's word units (pieces joined; mt.tokenizer.word_units): the words
                that links and matrices index
links           [[source word, target word], ...], 0-based: mt.align's one path (`align_hypothesis`)
                with the checkpoint's AlignConfig, the alignment `mt.translate --show-attention` prints
aligned_by      which attention the links come from: {"layer", "heads" (null = mean: of all layers
                / all heads), "shift", "full_context", "null" (unaligned = attention on the
                source eos), "origin" ("supervised" | "sweep": the
                checkpoint's record; "options"; "default": the mean of all), "description"}
attention       only on request: word-level cross-attention, rows = target words, columns = source
                words, pooled like the links (AlignConfig.words): "by_head" [layer][head][T][S],
                "by_layer" [layer][T][S] (mean of heads), "mean" [T][S] (all layers and heads),
                "aligned" [T][S] (the matrix the links are read from; "mean" unless the checkpoint
                records aligning heads). A full-context AlignConfig reads all of them from a
                teacher-forced pass over the translation without the causal mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from torch import Tensor

from mt.align.extract import AlignConfig, AlignedTranslation, align_hypothesis

if TYPE_CHECKING:
    from mt.decode import Hypothesis
    from mt.tokenizer import Tokenizer
    from mt.translate import Source

DIGITS = 4  # scores and attention values are rounded: enough for a heatmap, a third of the JSON


def translation_result(
    tokenizer: Tokenizer, source: Source, hyps: Sequence[Hypothesis], cfg: AlignConfig, attention: bool = False
) -> dict[str, Any]:
    """The answer for one input: its n-best translations (best first) aligned to its words as `cfg` says."""
    result: dict[str, Any] = {
        "source": " ".join(source.words),
        "translation": "",
        "score": None,
        "n_best": [],
        "source_words": [],
        "target_words": [],
        "links": [],
        "aligned_by": aligned_by(cfg),
    }
    if attention:
        result["attention"] = {"by_head": [], "by_layer": [], "mean": [], "aligned": []}
    if not hyps or not source.ids:  # nothing the model could read (e.g. only characters sentencepiece drops)
        return result
    texts = tokenizer.decode_tgt([h.tokens for h in hyps])
    n_best = [{"translation": text, "score": round(h.score, DIGITS)} for text, h in zip(texts, hyps)]
    aligned = align_hypothesis(tokenizer, source.units, source.unit_ids, hyps[0], cfg)
    result.update(
        translation=n_best[0]["translation"],
        score=n_best[0]["score"],
        n_best=n_best,
        source_words=aligned.src_words,
        target_words=aligned.tgt_words,
        links=[[i, j] for i, j in aligned.links],
    )
    if attention:
        result["attention"] = word_attention(tokenizer, source, hyps[0], aligned, cfg)
    return result


def aligned_by(cfg: AlignConfig) -> dict[str, Any]:
    return {
        "layer": cfg.layer,
        "heads": cfg.heads(),
        "shift": cfg.shift,
        "full_context": cfg.full_context,
        "null": cfg.null,
        "origin": cfg.origin or "default",
        "description": cfg.describe(),
    }


def word_attention(
    tokenizer: Tokenizer, source: Source, hyp: Hypothesis, aligned: AlignedTranslation, cfg: AlignConfig
) -> dict[str, list]:
    """Word matrices of every head, every layer's mean, the all-layer mean and the links' own, each
    through `align_hypothesis` (the pooling path of the links), so a cell means the same in every view."""
    if hyp.attention is None:  # decoded without attention: nothing to show
        return {"by_head": [], "by_layer": [], "mean": [], "aligned": []}
    layers, heads = hyp.attention.shape[:2]

    def matrix(layer: int | None, head: int | None) -> list[list[float]]:
        view = replace(cfg, layer=layer, head=head)
        return rounded(align_hypothesis(tokenizer, source.units, source.unit_ids, hyp, view).matrix)

    return {
        "by_head": [[matrix(layer, head) for head in range(heads)] for layer in range(layers)],
        "by_layer": [matrix(layer, None) for layer in range(layers)],
        "mean": matrix(None, None),
        "aligned": rounded(aligned.matrix),
    }


def rounded(matrix: Tensor) -> list[list[float]]:
    return [[round(value, DIGITS) for value in row] for row in matrix.tolist()]
