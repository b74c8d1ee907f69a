"""Word alignments from cross-attention, and alignment error rate (AER) against gold.

Attention convention (as produced by `mt.decode` and `teacher_forced_attention`):
[L, H, R, S+1] where row r is the decoder step that *predicts* target token r (row n
predicts eos) and the last column is the source eos. "shift" reads target token j from
row j + 1, the step where it is the decoder *input*.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mt.tokenizer import words_of_pieces


@dataclass
class AlignConfig:
    layer: int | None = None  # decoder layer (negative counts from the end); None = mean of layers
    head: int | None = None  # None = mean of heads
    shift: bool = True


def select(attention: Tensor, cfg: AlignConfig) -> Tensor:
    """[L,H,R,S+1] -> [R,S+1] for the configured layer/head (or their mean)."""
    a = attention.float()
    a = a.mean(0) if cfg.layer is None else a[cfg.layer]
    return a.mean(0) if cfg.head is None else a[cfg.head]


def token_matrix(attention: Tensor, n_src: int, n_tgt: int, cfg: AlignConfig) -> Tensor:
    """Rows for the n_tgt target tokens (shifted or not), source eos column dropped -> [n_tgt, n_src]."""
    a = select(attention, cfg)
    rows = a[1 : n_tgt + 1] if cfg.shift else a[:n_tgt]
    return rows[:, :n_src]


def pool_words(matrix: Tensor, src_words: list[int], tgt_words: list[int]) -> Tensor:
    """Subword [n_tgt, n_src] -> word [T_words, S_words]: sum over source pieces, mean over target pieces."""
    n_sw, n_tw = max(src_words) + 1, max(tgt_words) + 1
    src_index = torch.tensor(src_words)
    tgt_index = torch.tensor(tgt_words)
    by_src = torch.zeros(matrix.size(0), n_sw).index_add_(1, src_index, matrix)
    summed = torch.zeros(n_tw, n_sw).index_add_(0, tgt_index, by_src)
    counts = torch.bincount(tgt_index, minlength=n_tw).clamp(min=1).unsqueeze(1)
    return summed / counts


def join_words(pieces: list[str], word_ids: list[int]) -> list[str]:
    words = [""] * (max(word_ids) + 1 if word_ids else 0)
    for piece, w in zip(pieces, word_ids):
        words[w] += piece
    return [w.replace("\u2581", "") or "\u2581" for w in words]


def word_attention(
    attention: Tensor, src_pieces: list[str], tgt_pieces: list[str], cfg: AlignConfig
) -> tuple[Tensor, list[str], list[str]]:
    """Word-level attention [target words, source words] with the words themselves."""
    if not src_pieces or not tgt_pieces:
        return torch.zeros(0, 0), [], []
    src_ids, tgt_ids = words_of_pieces(src_pieces), words_of_pieces(tgt_pieces)
    matrix = pool_words(token_matrix(attention, len(src_pieces), len(tgt_pieces), cfg), src_ids, tgt_ids)
    return matrix, join_words(src_pieces, src_ids), join_words(tgt_pieces, tgt_ids)


def argmax_links(matrix: Tensor) -> list[tuple[int, int]]:
    """Each target word aligned to the source word it attends to most: (source, target) pairs."""
    if matrix.numel() == 0:
        return []
    best = matrix.argmax(dim=1).tolist()
    return sorted((int(i), j) for j, i in enumerate(best))


def attention_grid_text(matrix: Tensor, src_words: list[str], tgt_words: list[str]) -> str:
    """The word-level attention as a text table, in percent; * marks each row's maximum."""
    if matrix.numel() == 0:
        return "(nothing to show)"
    share = matrix / matrix.sum(dim=1, keepdim=True).clamp(min=1e-9)
    widths = [max(4, len(w)) for w in src_words]
    label = max(len(w) for w in tgt_words)
    lines = [" " * label + "  " + " ".join(w.rjust(n) for w, n in zip(src_words, widths))]
    for j, word in enumerate(tgt_words):
        best = int(share[j].argmax())
        cells = [(f"{round(100 * float(v))}" + ("*" if i == best else " ")).rjust(n) for i, (v, n) in
                 enumerate(zip(share[j], widths))]
        lines.append(word.ljust(label) + "  " + " ".join(cells))
    return "\n".join(lines)


def format_links(links: list[tuple[int, int]]) -> str:
    """Pharaoh format, 0-based: `source-target` pairs."""
    return " ".join(f"{i}-{j}" for i, j in sorted(links))
