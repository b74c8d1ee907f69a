"""Greedy and beam search with a key/value cache; every hypothesis carries its cross-attention.

Scores are log-probabilities divided by the GNMT length penalty ((5 + len) / 6) ** alpha,
where len counts the output tokens including the final eos.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mt.batching import source_tensor
from mt.config import DecodeConfig
from mt.model import Transformer, never_emit
from mt.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Hypothesis:
    tokens: list[int]  # output ids without bos/eos
    score: float  # length-normalized log-probability
    log_prob: float
    # Cross-attention [L, H, len(tokens) + 1, S]: row i is the step that *predicts* output
    # i (the last row predicts eos); columns are source tokens followed by the source eos.
    attention: Tensor | None = None


def length_penalty(length: int | Tensor, alpha: float) -> float | Tensor:
    return ((5.0 + length) / 6.0) ** alpha


def max_output_lengths(src: Tensor, cfg: DecodeConfig, limit: int) -> Tensor:
    """Per sentence: a * src_len + b output tokens (incl. eos), capped by the model's positions."""
    src_len = (src != PAD_ID).sum(dim=1)
    lengths = (cfg.max_len_a * src_len.float() + cfg.max_len_b).long()
    return lengths.clamp(min=1, max=limit)


class _Stepper:
    """One decoder step for N rows, either incremental (cached) or by recomputing the prefix."""

    def __init__(self, model: Transformer, memory: Tensor, src_mask: Tensor, use_cache: bool, need_weights: bool):
        self.model, self.use_cache, self.need_weights = model, use_cache, need_weights
        self.memory, self.src_mask = memory, src_mask
        self.state = model.start_decoding(memory, src_mask) if use_cache else None

    def step(self, last: Tensor, prefix: Tensor) -> tuple[Tensor, Tensor | None]:
        """last [N] = prefix[:, -1]; prefix [N,t] starts with bos -> log-probs [N,V], attn [N,L,H,S]."""
        if self.state is not None:
            return self.model.decode_step(last, self.state, self.need_weights)
        logits, attention = self.model.decode(prefix, self.memory, self.src_mask, self.need_weights)
        weights = torch.stack([a[:, :, -1] for a in attention], dim=1) if attention else None
        return never_emit(logits[:, -1].float().log_softmax(dim=-1)), weights

    def reorder(self, rows: Tensor) -> None:
        if self.state is not None:
            self.state.reorder(rows)
        else:
            self.memory = self.memory.index_select(0, rows)
            self.src_mask = self.src_mask.index_select(0, rows)


def _force_eos(logp: Tensor, rows: Tensor) -> None:
    """Rows that reached their length limit may only end."""
    if rows.any():
        eos = logp[rows, EOS_ID].clone()
        logp[rows] = float("-inf")
        logp[rows, EOS_ID] = eos


@torch.no_grad()
def greedy_search(
    model: Transformer, src: Tensor, cfg: DecodeConfig, need_attention: bool = False, use_cache: bool = True
) -> list[list[Hypothesis]]:
    B = src.size(0)
    memory, src_mask = model.encode(src)
    max_lens = max_output_lengths(src, cfg, model.config.max_positions).to(src.device)
    stepper = _Stepper(model, memory, src_mask, use_cache, need_attention)
    prefix = torch.full((B, 1), BOS_ID, dtype=torch.long, device=src.device)
    log_prob = torch.zeros(B, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    lengths = torch.zeros(B, dtype=torch.long, device=src.device)
    steps_attention = []
    for t in range(int(max_lens.max())):
        logp, attention = stepper.step(prefix[:, -1], prefix)
        _force_eos(logp, t + 1 >= max_lens)
        best = logp.argmax(dim=-1)
        log_prob += torch.where(finished, 0.0, logp.gather(1, best[:, None])[:, 0])
        lengths += (~finished).long()
        best = torch.where(finished, PAD_ID, best)
        prefix = torch.cat([prefix, best[:, None]], dim=1)
        if attention is not None:
            steps_attention.append(attention)
        finished |= best == EOS_ID
        if finished.all():
            break
    hyps = []
    for b in range(B):
        n = int(lengths[b])
        attention = None
        if steps_attention:
            attention = torch.stack([a[b] for a in steps_attention[:n]], dim=2).cpu()  # [L,H,n,S]
        raw = float(log_prob[b])
        tokens = [i for i in prefix[b, 1 : n + 1].tolist() if i != EOS_ID]
        hyps.append([Hypothesis(tokens, raw / length_penalty(n, cfg.length_penalty), raw, attention)])
    return hyps


@torch.no_grad()
def beam_search(
    model: Transformer, src: Tensor, cfg: DecodeConfig, need_attention: bool = False, use_cache: bool = True
) -> list[list[Hypothesis]]:
    B, K = src.size(0), cfg.beam_size
    device = src.device
    memory, src_mask = model.encode(src)
    max_lens = max_output_lengths(src, cfg, model.config.max_positions).to(device)
    # Beams of sentence b occupy rows b*K .. b*K+K-1 throughout.
    rows_of = torch.arange(B, device=device).repeat_interleave(K)
    stepper = _Stepper(model, memory[rows_of], src_mask[rows_of], use_cache, need_attention)
    prefix = torch.full((B * K, 1), BOS_ID, dtype=torch.long, device=device)
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    history: Tensor | None = None  # [B*K, t, L, H, S]
    finalized: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    positions = torch.arange(2 * K, device=device)
    for t in range(int(max_lens.max())):
        logp, attention = stepper.step(prefix[:, -1], prefix)
        V = logp.size(-1)
        _force_eos(logp, (t + 1 >= max_lens)[rows_of])
        candidates = (scores.view(-1, 1) + logp).view(B, K * V)
        top_scores, top_index = candidates.topk(min(2 * K, K * V), dim=1)  # [B,2K]
        beam, token = top_index // V, top_index % V
        is_eos = token == EOS_ID
        # An eos among the K best candidates ends a hypothesis (fairseq's rule).
        ending = is_eos[:, :K] & ~done[:, None] & torch.isfinite(top_scores[:, :K])
        for b, j in ending.nonzero().tolist():
            if len(finalized[b]) >= K:
                continue
            row = b * K + int(beam[b, j])
            raw = float(top_scores[b, j])
            weights = None
            if attention is not None:
                steps = [attention[row : row + 1]] if history is None else [history[row], attention[row : row + 1]]
                weights = torch.cat(steps, dim=0).permute(1, 2, 0, 3).cpu()  # [L,H,t+1,S]
            finalized[b].append(
                Hypothesis(prefix[row, 1:].tolist(), raw / length_penalty(t + 1, cfg.length_penalty), raw, weights)
            )
        counts = torch.tensor([len(f) for f in finalized], device=device)
        done |= (counts >= K) | (t + 1 >= max_lens)
        if done.all():
            break
        # Continue with the K best candidates that did not end.
        order = (is_eos.long() * positions.numel() + positions).topk(K, dim=1, largest=False).indices
        scores = top_scores.gather(1, order)
        chosen_rows = (torch.arange(B, device=device)[:, None] * K + beam.gather(1, order)).view(-1)
        next_tokens = token.gather(1, order).view(-1)
        stepper.reorder(chosen_rows)
        prefix = torch.cat([prefix[chosen_rows], next_tokens[:, None]], dim=1)
        if attention is not None:
            step = attention[chosen_rows][:, None]
            history = step if history is None else torch.cat([history[chosen_rows], step], dim=1)
    results = []
    for b in range(B):
        hyps = sorted(finalized[b], key=lambda h: h.score, reverse=True)
        results.append(hyps[: cfg.n_best])
    return results


def search(
    model: Transformer, src: Tensor, cfg: DecodeConfig, need_attention: bool = False, use_cache: bool = True
) -> list[list[Hypothesis]]:
    if cfg.beam_size < 1:
        raise ValueError(f"beam size must be at least 1, got {cfg.beam_size}")
    if cfg.beam_size == 1:
        return greedy_search(model, src, cfg, need_attention, use_cache)
    return beam_search(model, src, cfg, need_attention, use_cache)


def translate_ids(
    model: Transformer,
    src_ids: list[list[int]],
    cfg: DecodeConfig,
    device: torch.device | str = "cpu",
    need_attention: bool = False,
    use_cache: bool = True,
    on_batch: Callable[[int], object] | None = None,
) -> list[list[Hypothesis]]:
    """Decode many sentences: sorted by length into token-budget batches, returned in input order.

    `on_batch(n)` is told after each batch how many sentences it held (a progress bar's update).
    """
    model.eval()
    limit = model.config.max_positions - 1  # room for the source eos
    src_ids = [s[:limit] for s in src_ids]
    order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]), reverse=True)
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    start = 0
    while start < len(order):
        width = len(src_ids[order[start]]) + 1
        size = max(1, cfg.max_tokens // (width * max(1, cfg.beam_size // 2)))
        chunk = order[start : start + size]
        src = source_tensor([src_ids[i] for i in chunk]).to(device)
        for i, hyps in zip(chunk, search(model, src, cfg, need_attention, use_cache)):
            for hyp in hyps:  # drop the batch's padding columns
                if hyp.attention is not None:
                    hyp.attention = hyp.attention[..., : len(src_ids[i]) + 1]
            results[i] = hyps
        start += size
        if on_batch is not None:
            on_batch(len(chunk))
    return results
