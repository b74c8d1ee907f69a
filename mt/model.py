"""Transformer encoder-decoder whose cross-attention weights are first-class outputs.

Shapes: B batch, S source length, T target length, D d_model, H heads, Dh = D / H, V vocab.
Attention runs through `scaled_dot_product_attention` unless weights are asked for; then an
explicit softmax path returns them as [B, H, T, S] per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mt.config import ModelConfig, validate
from mt.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

SHORTLIST_MULTIPLE = 64  # model.output_shortlist: the shortlist's size is rounded up to this (matmul speed)


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, dropout: float, need_weights: bool
) -> tuple[Tensor, Tensor | None]:
    """q [B,H,T,Dh], k/v [B,H,S,Dh], mask [B,1,1|T,S] bool (True = may attend) -> [B,H,T,Dh]."""
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal), None
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # [B,H,T,S]
    if causal:
        T, S = scores.shape[-2:]
        scores = scores.masked_fill(~torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    out = F.dropout(weights, dropout, training=dropout > 0) @ v
    return out, weights


def dropout_keep_scale(x: Tensor, p: float) -> Tensor:
    """A mask shaped like x: 0 (dropped) or 1/(1 - p') (kept), with p' = p rounded to 1/65536.

    Why not rand_like: on a CPU the random generator is serial and was most of dropout's time.
    One 64-bit draw here gives the 16 random bits of four mask elements: about half the cost.
    """
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)  # all 64 bits
    return keep_scale_from_bits(bits.view(torch.int16)[:n], p).to(x.dtype).view(x.shape)


def keep_scale_from_bits(bits: Tensor, p: float) -> Tensor:
    """int16 values, uniform over [-32768, 32767] -> float32 mask: the round(p * 65536) lowest dropped."""
    dropped = min(round(p * 65536), 65535)  # p just below 1 would round to 65536: divide by zero
    keep = bits.to(torch.float32)  # exact for int16; compared in float32 as a low-precision x would round
    return keep.ge_(dropped - 32768).mul_(65536 / (65536 - dropped))


class _MaskDropout(torch.autograd.Function):
    """Dropout with the mask of dropout_keep_scale, saved for the backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        keep = dropout_keep_scale(x, p)
        ctx.save_for_backward(keep)
        return x * keep

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (keep,) = ctx.saved_tensors
        return grad * keep, None


class Dropout(nn.Module):
    """nn.Dropout, with the cheaper mask on CPU float32 (CUDA's fused kernel is kept there)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type == "cpu" and x.dtype == torch.float32 and x.requires_grad:
            return _MaskDropout.apply(x, self.p)
        return F.dropout(x, self.p, training=True)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor | None, causal: bool, cache: LayerCache | None = None) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3x[B,H,T,Dh]
        if cache is not None:  # incremental decoding: append this step's keys/values
            if cache.self_k is not None:
                k = torch.cat([cache.self_k, k], dim=2)
                v = torch.cat([cache.self_v, v], dim=2)
            cache.self_k, cache.self_v = k, v
            causal = False  # one new query attends to every cached position
        dropout = self.dropout if self.training else 0.0
        y, _ = attend(q, k, v, mask, causal, dropout, need_weights=False)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class CrossAttention(nn.Module):
    """Queries from the decoder, keys/values from the encoder output (memory)."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        B, S, D = memory.shape
        k, v = self.kv(memory).view(B, S, 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        return k, v  # [B,H,S,Dh] each

    def forward(
        self, x: Tensor, memory: Tensor | None, mask: Tensor, need_weights: bool, cache: LayerCache | None = None
    ) -> tuple[Tensor, Tensor | None]:
        B, T, D = x.shape
        if cache is not None:
            return self._cached_step(x, memory, mask, need_weights, cache)
        assert memory is not None
        q = self.q(x).view(B, T, self.heads, D // self.heads).transpose(1, 2)  # [B,H,T,Dh]
        k, v = self.memory_kv(memory)
        dropout = self.dropout if self.training else 0.0
        y, weights = attend(q, k, v, mask, False, dropout, need_weights)
        return self.out(y.transpose(1, 2).reshape(B, T, D)), weights

    def _cached_step(
        self, x: Tensor, memory: Tensor | None, mask: Tensor, need_weights: bool, cache: LayerCache
    ) -> tuple[Tensor, Tensor | None]:
        """x [N,1,D], N = sources x R rows each (R = cache.rows_per_source, the beams); memory
        [sources,S,D] (first step only), mask [sources,1,1,S] -> [N,1,D], weights [N,H,1,S].

        Keys/values are computed once per source and kept per source, not copied to each of its R
        rows: the R rows of a source are its R queries, attention runs on [sources,H,R,S] instead
        of [N,H,1,S] (about 2x faster for test2016's shapes on a CPU), and reordering the beams
        copies nothing."""
        N, _, D = x.shape
        R, H = cache.rows_per_source, self.heads
        if cache.cross_k is None:
            assert memory is not None
            cache.cross_k, cache.cross_v = self.memory_kv(memory)
        q = self.q(x).view(N // R, R, H, D // H).transpose(1, 2)  # [sources,H,R,Dh]
        dropout = self.dropout if self.training else 0.0
        y, weights = attend(q, cache.cross_k, cache.cross_v, mask, False, dropout, need_weights)
        y = y.transpose(1, 2).reshape(N, 1, D)
        if weights is not None:  # [sources,H,R,S] -> [N,H,1,S]
            weights = weights.transpose(1, 2).reshape(N, H, 1, -1)
        return self.out(y), weights


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, dropout: float, activation: str):
        super().__init__()
        self.up = nn.Linear(d_model, ffn_dim)
        self.down = nn.Linear(ffn_dim, d_model)
        self.act = {"relu": F.relu, "gelu": F.gelu}[activation]
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(self.act(self.up(x))))


class Sublayer(nn.Module):
    """Residual wrapper: pre-norm x + f(norm(x)), or post-norm norm(x + f(x))."""

    def __init__(self, d_model: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)
        self.pre_norm = pre_norm

    def inp(self, x: Tensor) -> Tensor:
        return self.norm(x) if self.pre_norm else x

    def residual(self, x: Tensor, fx: Tensor) -> Tensor:
        y = x + self.dropout(fx)
        return y if self.pre_norm else self.norm(y)


class EncoderLayer(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        pre = c.norm == "pre"
        self.attn = SelfAttention(c.d_model, c.heads, c.attention_dropout)
        self.ffn = FeedForward(c.d_model, c.ffn_dim, c.dropout, c.activation)
        self.sub_attn = Sublayer(c.d_model, c.dropout, pre)
        self.sub_ffn = Sublayer(c.d_model, c.dropout, pre)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.sub_attn.residual(x, self.attn(self.sub_attn.inp(x), mask, causal=False))
        return self.sub_ffn.residual(x, self.ffn(self.sub_ffn.inp(x)))


@dataclass
class LayerCache:
    """Per decoder layer: growing self-attention keys/values per row [N,H,t,Dh], cross-attention
    keys/values per source [sources,H,S,Dh] (a source's rows are consecutive), computed once and
    cut to the sources still decoding."""

    rows_per_source: int = 1
    self_k: Tensor | None = None
    self_v: Tensor | None = None
    cross_k: Tensor | None = None
    cross_v: Tensor | None = None

    def reorder(self, rows: Tensor, sources: Tensor | None) -> None:
        if self.self_k is not None:
            self.self_k, self.self_v = self.self_k.index_select(0, rows), self.self_v.index_select(0, rows)
        if sources is not None and self.cross_k is not None:
            self.cross_k, self.cross_v = self.cross_k.index_select(0, sources), self.cross_v.index_select(0, sources)


@dataclass
class DecoderState:
    """What incremental decoding carries between steps: N rows, R consecutive rows per source."""

    src_mask: Tensor  # [sources,1,1,S]
    layers: list[LayerCache]
    step: int = 0
    memory: Tensor | None = field(default=None, repr=False)  # [sources,S,D]; dropped once cross k/v are cached
    output_weight: Tensor | None = field(default=None, repr=False)  # [V',D] the shortlist's rows, gathered once

    def reorder(self, rows: Tensor, sources: Tensor | None = None) -> None:
        """Keep the rows `rows` [N'] (indices of the current rows, in their new order) and, when
        some sources end, only the sources `sources` [sources'] (indices of the current ones, in
        order). Each kept source's R rows must be rows j*R .. j*R+R-1 of the new order, j its
        new index: beams move within their source, never to another one."""
        R = self.layers[0].rows_per_source if self.layers else 1
        kept = sources if sources is not None else torch.arange(self.src_mask.size(0), device=rows.device)
        expected_source = kept.repeat_interleave(R)
        if rows.numel() != expected_source.numel() or not bool((rows // R == expected_source).all()):
            raise ValueError("DecoderState.reorder: rows must stay with their source (beams never change sentence)")
        if sources is not None:
            self.src_mask = self.src_mask.index_select(0, sources)
            if self.memory is not None:
                self.memory = self.memory.index_select(0, sources)
        for layer in self.layers:
            layer.reorder(rows, sources)


class DecoderLayer(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        pre = c.norm == "pre"
        self.self_attn = SelfAttention(c.d_model, c.heads, c.attention_dropout)
        self.cross_attn = CrossAttention(c.d_model, c.heads, c.attention_dropout)
        self.ffn = FeedForward(c.d_model, c.ffn_dim, c.dropout, c.activation)
        self.sub_self = Sublayer(c.d_model, c.dropout, pre)
        self.sub_cross = Sublayer(c.d_model, c.dropout, pre)
        self.sub_ffn = Sublayer(c.d_model, c.dropout, pre)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        src_mask: Tensor,
        need_weights: bool,
        cache: LayerCache | None = None,
        causal: bool = True,
        tgt_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """tgt_mask [B,1,1,T]: the target's padding, needed without the causal mask only."""
        x = self.sub_self.residual(x, self.self_attn(self.sub_self.inp(x), tgt_mask, causal=causal, cache=cache))
        y, weights = self.cross_attn(self.sub_cross.inp(x), memory, src_mask, need_weights, cache)
        x = self.sub_cross.residual(x, y)
        return self.sub_ffn.residual(x, self.ffn(self.sub_ffn.inp(x))), weights


def never_emit(logp: Tensor) -> Tensor:
    """Padding and bos are not outputs; label smoothing leaves them a little probability."""
    logp[:, PAD_ID] = float("-inf")
    logp[:, BOS_ID] = float("-inf")
    return logp


def sinusoidal_table(length: int, d_model: int) -> Tensor:
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)
    return table


class Embedding(nn.Module):
    """Token embedding scaled by sqrt(D) plus positions, then dropout."""

    def __init__(self, vocab: int, c: ModelConfig):
        super().__init__()
        self.tokens = nn.Embedding(vocab, c.d_model, padding_idx=PAD_ID)
        nn.init.normal_(self.tokens.weight, mean=0.0, std=c.d_model**-0.5)
        with torch.no_grad():
            self.tokens.weight[PAD_ID].zero_()
        self.scale = math.sqrt(c.d_model)
        if c.positions == "learned":
            self.learned = nn.Embedding(c.max_positions, c.d_model)
            nn.init.normal_(self.learned.weight, mean=0.0, std=0.02)
        else:
            self.learned = None
            self.register_buffer("table", sinusoidal_table(c.max_positions, c.d_model), persistent=False)
        self.dropout = Dropout(c.dropout)

    def forward(self, ids: Tensor, offset: int = 0) -> Tensor:
        T = ids.size(1)
        pos = self.learned.weight[offset : offset + T] if self.learned is not None else self.table[offset : offset + T]
        return self.dropout(self.tokens(ids) * self.scale + pos)


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, joint_vocab: bool = True):
        super().__init__()
        c = config
        validate(c)  # ranges and choices: one UserError naming every bad model.* value
        self.config = c
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        n_enc = c.encoder_layers if c.encoder_layers is not None else c.layers
        n_dec = c.decoder_layers if c.decoder_layers is not None else c.layers
        self.src_embed = Embedding(src_vocab_size, c)
        self.tgt_embed = Embedding(tgt_vocab_size, c)
        self.encoder = nn.ModuleList(EncoderLayer(c) for _ in range(n_enc))
        self.decoder = nn.ModuleList(DecoderLayer(c) for _ in range(n_dec))
        # Pre-norm stacks need a final norm; post-norm outputs are already normalized.
        self.enc_norm = nn.LayerNorm(c.d_model) if c.norm == "pre" else nn.Identity()
        self.dec_norm = nn.LayerNorm(c.d_model) if c.norm == "pre" else nn.Identity()
        self.output = nn.Linear(c.d_model, tgt_vocab_size, bias=False)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if c.tie_embeddings:
            self.output.weight = self.tgt_embed.tokens.weight
            if joint_vocab and src_vocab_size == tgt_vocab_size:  # one vocabulary: one embedding table
                self.src_embed.tokens.weight = self.tgt_embed.tokens.weight
        # model.output_shortlist: the output layer scores only the pieces marked emittable (the
        # training targets' pieces, set by set_emittable); the others get log-probability -inf.
        # Derived from `emittable` (not saved): [V'] the emittable piece ids, ascending; [V] each
        # piece's output class (its row in the shortlist; unk's for a piece outside it).
        self.register_buffer("shortlist", None, persistent=False)
        self.register_buffer("output_class", None, persistent=False)
        if c.output_shortlist:
            self.register_buffer("emittable", torch.ones(tgt_vocab_size, dtype=torch.bool))
            self.register_load_state_dict_post_hook(lambda module, _keys: module._index_shortlist())
            self._index_shortlist()

    def set_emittable(self, emittable: Tensor, multiple: int = 1) -> None:
        """emittable: bool [V], the pieces the output layer scores (eos and unk always included), with
        the lowest-id others added until their number is a multiple of `multiple` (sentencepiece
        numbers pieces by score, so these are the likeliest of the rest): the output matmul runs
        at 5,446 classes well below its speed at 5,440 or 5,504 (docs/benchmarks.md)."""
        if not self.config.output_shortlist:
            raise ValueError("set_emittable needs model.output_shortlist=true")
        if emittable.shape != self.emittable.shape:
            raise ValueError(f"emittable has shape {tuple(emittable.shape)}, expected {tuple(self.emittable.shape)}")
        with torch.no_grad():
            self.emittable.copy_(emittable)
            self._index_shortlist()
            rest = (~self.emittable).nonzero().squeeze(1)
            rest = rest[(rest != PAD_ID) & (rest != BOS_ID)]
            self.emittable[rest[: -len(self.shortlist) % multiple]] = True
        self._index_shortlist()

    def _index_shortlist(self) -> None:
        e = self.emittable
        e[[EOS_ID, UNK_ID]] = True
        e[[PAD_ID, BOS_ID]] = False  # never outputs (see never_emit)
        self.shortlist = e.nonzero().squeeze(1)
        position = torch.cumsum(e.long(), 0) - 1
        self.output_class = torch.where(e, position, position[UNK_ID])

    def output_logits(self, hidden: Tensor, shortlist_weight: Tensor | None = None) -> Tensor:
        """hidden [...,D] -> logits [...,V'] over the output classes: the shortlist's pieces in
        ascending id order (output_class maps a piece to its class), or all V pieces.
        shortlist_weight: the shortlist's rows of the output weight, when already gathered."""
        if self.shortlist is None:
            return self.output(hidden)
        if shortlist_weight is None:
            shortlist_weight = self.output.weight[self.shortlist]  # index_select: grads reach only these rows
        return F.linear(hidden, shortlist_weight)

    def full_vocabulary(self, scores: Tensor, fill: float) -> Tensor:
        """scores [...,V'] over the output classes -> [...,V], `fill` for the pieces outside the shortlist."""
        if self.shortlist is None:
            return scores
        full = scores.new_full((*scores.shape[:-1], self.tgt_vocab_size), fill)
        full[..., self.shortlist] = scores
        return full

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # shared tensors are counted once

    @staticmethod
    def source_mask(src: Tensor) -> Tensor:
        return (src != PAD_ID)[:, None, None, :]  # [B,1,1,S], True = real token (also for targets)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """src [B,S] -> memory [B,S,D], src_mask [B,1,1,S]."""
        mask = self.source_mask(src)
        x = self.src_embed(src)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.enc_norm(x), mask

    def _decoder_pass(
        self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor, weights_of: range, causal: bool = True, layers=None
    ) -> tuple[Tensor, list[Tensor]]:
        """Decoder layers (all, or the first `layers`) -> hidden [B,T,D] before the final norm and
        the cross-attention [B,H,T,S] of the layers in `weights_of`."""
        x = self.tgt_embed(tgt_in)
        tgt_mask = None if causal else self.source_mask(tgt_in)  # full context: padding must be masked
        attention: list[Tensor] = []
        for i, layer in enumerate(self.decoder[:layers]):
            x, weights = layer(x, memory, src_mask, i in weights_of, causal=causal, tgt_mask=tgt_mask)
            if weights is not None:
                attention.append(weights)
        return x, attention

    def decode_hidden(
        self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor, need_weights: bool = False, full_context: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Teacher-forced decoder: tgt_in [B,T] -> hidden [B,T,D], cross-attention [B,H,T,S] per layer.

        full_context: no causal mask (every position sees the whole target), as the aligning
        layer is trained with model.align_full_context; for reading alignments only.
        """
        every = range(len(self.decoder)) if need_weights else range(0)
        x, attention = self._decoder_pass(tgt_in, memory, src_mask, every, causal=not full_context)
        return self.dec_norm(x), attention

    def decode(
        self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """tgt_in [B,T] -> logits [B,T,V], cross-attention [B,H,T,S] per layer (if asked)."""
        hidden, attention = self.decode_hidden(tgt_in, memory, src_mask, need_weights)
        return self.full_vocabulary(self.output_logits(hidden), float("-inf")), attention

    def aligning_attention(self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor:
        """The supervised heads' cross-attention [B,k,T,S] from a full-context pass (no causal mask)
        through the layers up to the aligning one (model.align_full_context)."""
        L = self.config.aligning_layer()
        _, (weights,) = self._decoder_pass(tgt_in, memory, src_mask, range(L, L + 1), causal=False, layers=L + 1)
        return weights[:, : self.config.align_heads]

    def forward(
        self,
        src: Tensor,
        tgt_in: Tensor,
        need_weights: bool = False,
        select: Tensor | None = None,
        align: bool = False,
        full_context: bool = False,
    ) -> tuple[Tensor, list[Tensor]]:
        """Logits [B,T,V'] (the output classes: see output_logits) and cross-attention: [B,H,T,S] per
        layer with `need_weights`; with `align` (training the aligning heads) one entry, the
        aligning heads' attention [B,k,T,S].

        With `select` (bool [B,T]) only the selected positions' logits, [N,V']: selecting the
        real (non-pad) target positions before the output layer saves its largest matmul on
        padding during training. `full_context`: see decode_hidden.
        """
        memory, src_mask = self.encode(src)
        c = self.config
        if not align:
            hidden, attention = self.decode_hidden(tgt_in, memory, src_mask, need_weights, full_context)
        elif c.align_full_context:
            hidden, _ = self.decode_hidden(tgt_in, memory, src_mask)
            attention = [self.aligning_attention(tgt_in, memory, src_mask)]
        else:  # the aligning layer's weights from the same pass
            L = c.aligning_layer()
            x, (weights,) = self._decoder_pass(tgt_in, memory, src_mask, range(L, L + 1))
            hidden, attention = self.dec_norm(x), [weights[:, : c.align_heads]]
        return self.output_logits(hidden if select is None else hidden[select]), attention

    # Incremental decoding -------------------------------------------------------------
    def start_decoding(self, memory: Tensor, src_mask: Tensor, rows_per_source: int = 1) -> DecoderState:
        """memory [sources,S,D], src_mask [sources,1,1,S]; decode_step then takes rows_per_source
        consecutive rows (the beams) per source."""
        layers = [LayerCache(rows_per_source) for _ in self.decoder]
        # Gathered once, not at every step (a copy of V' x D floats).
        weight = None if self.shortlist is None else self.output.weight[self.shortlist]
        return DecoderState(src_mask=src_mask, layers=layers, memory=memory, output_weight=weight)

    def decode_step(
        self, tokens: Tensor, state: DecoderState, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """One step: tokens [N] (each row's previous output) -> log-probs [N,V], cross-attn [N,L,H,S]."""
        x = self.tgt_embed(tokens[:, None], offset=state.step)  # [N,1,D]
        attention = []
        for layer, cache in zip(self.decoder, state.layers):
            x, weights = layer(x, state.memory, state.src_mask, need_weights, cache)
            if weights is not None:
                attention.append(weights[:, :, 0])  # [N,H,S]
        state.memory = None  # every layer has cached its cross-attention keys/values
        state.step += 1
        logp = self.output_logits(self.dec_norm(x[:, 0]), state.output_weight).float().log_softmax(dim=-1)
        weights = torch.stack(attention, dim=1) if attention else None
        return never_emit(self.full_vocabulary(logp, float("-inf"))), weights
