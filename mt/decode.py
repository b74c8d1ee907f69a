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
    """One decoder step for N rows, R consecutive rows per source (the beams), either incremental
    (cached) or by recomputing the prefix."""

    def __init__(
        self,
        model: Transformer,
        memory: Tensor,
        src_mask: Tensor,
        rows_per_source: int,
        use_cache: bool,
        need_weights: bool,
    ):
        """memory [sources,S,D], src_mask [sources,1,1,S]: one per source, not per row."""
        self.model, self.need_weights = model, need_weights
        self.state = model.start_decoding(memory, src_mask, rows_per_source) if use_cache else None
        if self.state is None:  # the reference path keeps a copy per row
            rows = torch.arange(memory.size(0), device=memory.device).repeat_interleave(rows_per_source)
            self.memory, self.src_mask = memory[rows], src_mask[rows]

    def step(self, last: Tensor, prefix: Tensor) -> tuple[Tensor, Tensor | None]:
        """last [N] = prefix[:, -1]; prefix [N,t] starts with bos -> log-probs [N,V], attn [N,L,H,S]."""
        if self.state is not None:
            return self.model.decode_step(last, self.state, self.need_weights)
        logits, attention = self.model.decode(prefix, self.memory, self.src_mask, self.need_weights)
        weights = torch.stack([a[:, :, -1] for a in attention], dim=1) if attention else None
        return never_emit(logits[:, -1].float().log_softmax(dim=-1)), weights

    def reorder(self, rows: Tensor, sources: Tensor | None) -> None:
        """Go on with the rows `rows` and, when some sentences have ended, the sources `sources`
        (see DecoderState.reorder)."""
        if self.state is not None:
            self.state.reorder(rows, sources)
        else:
            self.memory = self.memory.index_select(0, rows)
            self.src_mask = self.src_mask.index_select(0, rows)


def _force_eos(logp: Tensor, rows: Tensor) -> None:
    """Rows that reached their length limit may only end."""
    if rows.any():
        eos = logp[rows, EOS_ID].clone()
        logp[rows] = float("-inf")
        logp[rows, EOS_ID] = eos


def _append(history: Tensor | None, attention: Tensor | None) -> Tensor | None:
    """Each row's cross-attention so far [N,t,L,H,S], plus this step's [N,L,H,S]."""
    if attention is None:
        return None
    return attention[:, None] if history is None else torch.cat([history, attention[:, None]], dim=1)


# Sentences that have ended leave the batch (fairseq does the same): the rest decode on fewer rows,
# and the output is the same as decoding every sentence to the end of the longest.


@torch.no_grad()
def greedy_search(
    model: Transformer, src: Tensor, cfg: DecodeConfig, need_attention: bool = False, use_cache: bool = True
) -> list[list[Hypothesis]]:
    B = src.size(0)
    memory, src_mask = model.encode(src)
    max_lens = max_output_lengths(src, cfg, model.config.max_positions).to(src.device)
    stepper = _Stepper(model, memory, src_mask, 1, use_cache, need_attention)
    alive = torch.arange(B, device=src.device)  # the sentences still decoding, one row each
    prefix = torch.full((B, 1), BOS_ID, dtype=torch.long, device=src.device)
    log_prob = torch.zeros(B, device=src.device)
    history: Tensor | None = None  # [rows, t, L, H, S]
    results: list[list[Hypothesis]] = [[] for _ in range(B)]
    for t in range(int(max_lens.max())):
        logp, attention = stepper.step(prefix[:, -1], prefix)
        at_limit = t + 1 >= max_lens[alive]
        _force_eos(logp, at_limit)
        best_logp, best = logp.max(dim=-1)
        log_prob += best_logp
        prefix = torch.cat([prefix, best[:, None]], dim=1)
        history = _append(history, attention)
        ended = (best == EOS_ID) | at_limit
        for row in ended.nonzero()[:, 0].tolist():
            raw = float(log_prob[row])
            tokens = [i for i in prefix[row, 1:].tolist() if i != EOS_ID]
            weights = None if history is None else history[row].permute(1, 2, 0, 3).cpu()  # [L,H,t+1,S]
            hyp = Hypothesis(tokens, raw / length_penalty(t + 1, cfg.length_penalty), raw, weights)
            results[int(alive[row])] = [hyp]
        if ended.all():
            break
        if ended.any():
            going_on = (~ended).nonzero()[:, 0]
            alive, prefix, log_prob = alive[going_on], prefix[going_on], log_prob[going_on]
            history = None if history is None else history[going_on]
            stepper.reorder(going_on, going_on)
    return results


@torch.no_grad()
def beam_search(
    model: Transformer, src: Tensor, cfg: DecodeConfig, need_attention: bool = False, use_cache: bool = True
) -> list[list[Hypothesis]]:
    B, K = src.size(0), cfg.beam_size
    device = src.device
    memory, src_mask = model.encode(src)
    max_lens = max_output_lengths(src, cfg, model.config.max_positions).to(device)
    stepper = _Stepper(model, memory, src_mask, K, use_cache, need_attention)
    # The sentences still searching; the beams of the i-th occupy rows i*K .. i*K+K-1 throughout.
    alive = torch.arange(B, device=device)
    prefix = torch.full((B * K, 1), BOS_ID, dtype=torch.long, device=device)
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    history: Tensor | None = None  # [rows, t, L, H, S]
    finalized: list[list[Hypothesis]] = [[] for _ in range(B)]
    positions = torch.arange(2 * K, device=device)
    for t in range(int(max_lens.max())):
        logp, attention = stepper.step(prefix[:, -1], prefix)
        A, V = alive.numel(), logp.size(-1)
        at_limit = t + 1 >= max_lens[alive]  # [A]
        _force_eos(logp, at_limit.repeat_interleave(K))
        # The 2K best of the K*V extensions are among each beam's 2K best tokens: rank those
        # (a top-k over K*2K, not K*V, candidates per sentence).
        per_beam = min(2 * K, V)
        beam_logp, beam_tokens = logp.topk(per_beam, dim=1)  # [A*K, per_beam]
        candidates = (scores.view(-1, 1) + beam_logp).view(A, K * per_beam)
        top_scores, top_index = candidates.topk(min(2 * K, K * per_beam), dim=1)  # [A,2K]
        beam = top_index // per_beam
        token = beam_tokens.view(A, K * per_beam).gather(1, top_index)
        is_eos = token == EOS_ID
        # An eos among the K best candidates ends a hypothesis (fairseq's rule).
        ending = is_eos[:, :K] & torch.isfinite(top_scores[:, :K])
        for i, j in ending.nonzero().tolist():
            b = int(alive[i])
            if len(finalized[b]) >= K:
                continue
            row = i * K + int(beam[i, j])
            raw = float(top_scores[i, j])
            weights = None
            if attention is not None:
                steps = [attention[row : row + 1]] if history is None else [history[row], attention[row : row + 1]]
                weights = torch.cat(steps, dim=0).permute(1, 2, 0, 3).cpu()  # [L,H,t+1,S]
            finalized[b].append(
                Hypothesis(prefix[row, 1:].tolist(), raw / length_penalty(t + 1, cfg.length_penalty), raw, weights)
            )
        counts = torch.tensor([len(finalized[b]) for b in alive.tolist()], device=device)
        done = (counts >= K) | at_limit
        if done.all():
            break
        # Continue with the K best candidates that did not end, of the sentences not done.
        order = (is_eos.long() * positions.numel() + positions).topk(K, dim=1, largest=False).indices
        scores = top_scores.gather(1, order)
        chosen_rows = torch.arange(A, device=device)[:, None] * K + beam.gather(1, order)  # [A,K]
        next_tokens = token.gather(1, order)
        going_on = None
        if done.any():
            going_on = (~done).nonzero()[:, 0]
            alive, scores = alive[going_on], scores[going_on]
            chosen_rows, next_tokens = chosen_rows[going_on], next_tokens[going_on]
        chosen_rows, next_tokens = chosen_rows.view(-1), next_tokens.view(-1)
        stepper.reorder(chosen_rows, going_on)
        prefix = torch.cat([prefix[chosen_rows], next_tokens[:, None]], dim=1)
        if attention is not None:
            history = _append(None if history is None else history[chosen_rows], attention[chosen_rows])
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
