"""Batches: padding, the source/target tensors a batch needs, and length-bucketed token budgets.

Needs only torch and numpy, so decoding, alignment and serving can pad a batch without loading
the corpus machinery (`datasets`, `pyarrow`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from mt.tokenizer import BOS_ID, EOS_ID, PAD_ID

if TYPE_CHECKING:
    from mt.align.teacher import PieceLinks


@dataclass
class Split:
    """One tokenized split: id sequences without bos/eos, plus the raw text (references).

    The sequences are lists or `mt.data.TokenColumn`s (memory-mapped Arrow columns).
    """

    src_text: Sequence[str]
    tgt_text: Sequence[str]
    src: Sequence[list[int]]
    tgt: Sequence[list[int]]
    align: PieceLinks | None = None  # teacher links per pair (training the aligning heads)
    source: np.ndarray | None = None  # training mix of data.corpora: each pair's corpus index (-1: extra pairs)

    def __len__(self) -> int:
        return len(self.src)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        # +1: the eos (source) and the bos/eos shift (target) each add one position
        return _lengths(self.src) + 1, _lengths(self.tgt) + 1


def used_ids(seqs: Sequence[list[int]], vocab_size: int) -> np.ndarray:
    """bool [vocab_size]: the ids that occur in any of the sequences."""
    if hasattr(seqs, "id_counts"):  # a TokenColumn (mt.data): counted from its Arrow arrays
        return seqs.id_counts(vocab_size) > 0
    used = np.zeros(vocab_size, dtype=bool)
    for seq in seqs:
        used[seq] = True
    return used


def _lengths(seqs: Sequence[list[int]]) -> np.ndarray:
    if hasattr(seqs, "lengths"):  # a TokenColumn (mt.data) counts without materializing rows
        return seqs.lengths()
    return np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))


@dataclass
class Batch:
    src: Tensor  # [B,S] ids + eos, padded
    tgt_in: Tensor  # [B,T] bos + ids, padded
    tgt_out: Tensor  # [B,T] ids + eos, padded
    indices: np.ndarray  # positions in the split
    # Teacher links (split.align): [N,3] (pair in batch, target position, source position) and
    # [N] weights, 1 / (links of that target token), so each aligned target token weighs 1.
    align_index: Tensor | None = None
    align_weight: Tensor | None = None

    @property
    def num_tokens(self) -> int:
        """Real (non-pad) source + target tokens."""
        return int((self.src != PAD_ID).sum() + (self.tgt_out != PAD_ID).sum())

    def to(self, device: torch.device) -> Batch:
        move = lambda t: None if t is None else t.to(device)
        return Batch(
            self.src.to(device),
            self.tgt_in.to(device),
            self.tgt_out.to(device),
            self.indices,
            move(self.align_index),
            move(self.align_weight),
        )


def pad(seqs: list[list[int]]) -> Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def source_tensor(seqs: list[list[int]]) -> Tensor:
    return pad([s + [EOS_ID] for s in seqs])


def collate(split: Split, indices: np.ndarray) -> Batch:
    tgt = [split.tgt[i] for i in indices]
    batch = Batch(
        src=source_tensor([split.src[i] for i in indices]),
        tgt_in=pad([[BOS_ID] + t for t in tgt]),
        tgt_out=pad([t + [EOS_ID] for t in tgt]),
        indices=np.asarray(indices),
    )
    if split.align is not None:
        batch.align_index, batch.align_weight = _align_tensors(split.align, indices)
    return batch


def _align_tensors(links: PieceLinks, indices: np.ndarray) -> tuple[Tensor, Tensor]:
    rows, weights = [], []
    for b, i in enumerate(indices):
        src, tgt = links.of(int(i))
        if len(tgt) == 0:
            continue
        _, inverse, counts = np.unique(tgt, return_inverse=True, return_counts=True)
        rows.append(np.stack([np.full(len(tgt), b), tgt, src], axis=1))
        weights.append(1.0 / counts[inverse])
    if not rows:
        return torch.zeros(0, 3, dtype=torch.long), torch.zeros(0)
    index = torch.from_numpy(np.concatenate(rows).astype(np.int64))
    return index, torch.from_numpy(np.concatenate(weights).astype(np.float32))


def bucket_batches(
    src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int, seed: int | None = None, epoch: int = 0
) -> list[np.ndarray]:
    """Group sentences of similar length so that batch_size * longest <= max_tokens.

    With a seed, ties in length are broken randomly and the batch order is shuffled, both
    determined by (seed, epoch) alone, so a resumed run sees the same batches.
    """
    n = len(src_lens)
    if seed is None:
        order = np.lexsort((np.arange(n), tgt_lens, src_lens))
    else:
        rng = np.random.default_rng([seed, epoch])
        perm = rng.permutation(n)
        order = perm[np.lexsort((tgt_lens[perm], src_lens[perm]))]
    longest = np.maximum(src_lens, tgt_lens)[order]
    batches: list[np.ndarray] = []
    start, width = 0, 0
    for i in range(n):
        new_width = max(width, int(longest[i]))
        if i > start and (i - start + 1) * new_width > max_tokens:
            batches.append(order[start:i])
            start, new_width = i, int(longest[i])
        width = new_width
    if start < n:
        batches.append(order[start:])
    if seed is not None:
        rng.shuffle(batches)
    return batches


def padding_waste(batches: list[np.ndarray], src_lens: np.ndarray, tgt_lens: np.ndarray) -> float:
    """Share of batch positions (source and target) that are padding."""
    real = padded = 0
    for b in batches:
        real += int(src_lens[b].sum() + tgt_lens[b].sum())
        padded += len(b) * int(src_lens[b].max() + tgt_lens[b].max())
    return 1.0 - real / max(padded, 1)


@dataclass
class EpochPlan:
    batches: list[np.ndarray]  # this epoch's batch order, fixed by (seed, epoch)
    usable: int  # how many of them updates use


def epoch_plan(
    src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int, seed: int, epoch: int, per_update: int, processes: int
) -> EpochPlan:
    """The batches of one training epoch. Updates take `per_update` batches (accumulation x DDP
    processes); with several processes an incomplete last group is dropped so every rank has one."""
    batches = bucket_batches(src_lens, tgt_lens, max_tokens, seed=seed, epoch=epoch)
    usable = len(batches) if processes == 1 else len(batches) - len(batches) % per_update
    return EpochPlan(batches, usable)
