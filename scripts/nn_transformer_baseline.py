"""A plain `torch.nn.Transformer` translation model and its training step: the baseline that
scripts/bench_train.py times side by side with mt's own (same size, same batches, one process).

Shapes: B batch, S source length, T target length, D d_model, V target vocabulary, N real
(non-pad) target tokens of the batch.

"Plain" means what a straightforward PyTorch script does: `nn.Transformer` (batch_first, its
own nn.MultiheadAttention, nn.Dropout, a final encoder and decoder LayerNorm), nn.Embedding
scaled by sqrt(D) plus the positions, an nn.Linear output layer, `F.cross_entropy(...,
label_smoothing=eps)`, AdamW. It matches the config in every setting that changes the
arithmetic: D, heads, encoder/decoder layers, FFN size and activation, dropout, pre/post norm,
sinusoidal or learned positions, tied embeddings, vocabulary sizes; the learning-rate schedule
(mt.engine.learning_rate), gradient clipping and autocast precision of train.*. None of mt's
speed-ups: no one-pass loss with a written-out gradient (mt/loss.py), no cheaper dropout masks
(mt.model.Dropout). Logits are computed at the real target positions only (as mt does), so the
comparison does not charge the baseline for padding in the output layer.

Two deliberate choices, both to compare like with like:
- attention dropout: nn.Transformer would drop attention weights with `dropout`; here each
  nn.MultiheadAttention gets `model.attention_dropout` instead (0.0 by default), as in mt.
- no target padding mask: padding sits at the end of each row, so the causal mask already keeps
  every real position from seeing it (mt passes none either).

Parameter count: equal to mt.model.Transformer's for pre-norm; with post-norm nn.Transformer
keeps its final encoder and decoder LayerNorms (4 * D parameters more), which mt leaves out.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mt.batching import Batch
from mt.config import ModelConfig, TrainConfig
from mt.engine import learning_rate
from mt.model import sinusoidal_table
from mt.tokenizer import PAD_ID


class NNTransformerBaseline(nn.Module):
    def __init__(self, c: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, joint_vocab: bool = True):
        super().__init__()
        n_enc = c.encoder_layers if c.encoder_layers is not None else c.layers
        n_dec = c.decoder_layers if c.decoder_layers is not None else c.layers
        self.scale = math.sqrt(c.d_model)
        self.src_embed = nn.Embedding(src_vocab_size, c.d_model, padding_idx=PAD_ID)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, c.d_model, padding_idx=PAD_ID)
        for embed in (self.src_embed, self.tgt_embed):
            nn.init.normal_(embed.weight, mean=0.0, std=c.d_model**-0.5)  # N(0,1) x sqrt(D) would blow up
        self.src_pos: nn.Embedding | None = None
        self.tgt_pos: nn.Embedding | None = None
        if c.positions == "learned":
            self.src_pos = nn.Embedding(c.max_positions, c.d_model)
            self.tgt_pos = nn.Embedding(c.max_positions, c.d_model)
        else:
            self.register_buffer("table", sinusoidal_table(c.max_positions, c.d_model), persistent=False)  # [P,D]
        self.dropout = nn.Dropout(c.dropout)
        with warnings.catch_warnings():  # "enable_nested_tensor is True, but ... norm_first": inference-only
            warnings.filterwarnings("ignore", message="enable_nested_tensor")
            self.transformer = nn.Transformer(
                d_model=c.d_model,
                nhead=c.heads,
                num_encoder_layers=n_enc,
                num_decoder_layers=n_dec,
                dim_feedforward=c.ffn_dim,
                dropout=c.dropout,
                activation=c.activation,
                batch_first=True,
                norm_first=c.norm == "pre",
            )
        for module in self.transformer.modules():
            if isinstance(module, nn.MultiheadAttention):
                module.dropout = c.attention_dropout  # the attention weights' dropout, as in mt
        self.output = nn.Linear(c.d_model, tgt_vocab_size, bias=False)
        if c.tie_embeddings:
            self.output.weight = self.tgt_embed.weight
            if joint_vocab and src_vocab_size == tgt_vocab_size:
                self.src_embed.weight = self.tgt_embed.weight

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # shared tensors are counted once

    def embed(self, ids: Tensor, tokens: nn.Embedding, learned: nn.Embedding | None) -> Tensor:
        """ids [B,L] -> [B,L,D]: token embedding x sqrt(D) + positions, then dropout."""
        L = ids.size(1)
        pos = learned.weight[:L] if learned is not None else self.table[:L]  # [L,D]
        return self.dropout(tokens(ids) * self.scale + pos)

    def forward(self, src: Tensor, tgt_in: Tensor, real: Tensor) -> Tensor:
        """src [B,S], tgt_in [B,T], real [B,T] bool (non-pad target positions) -> logits [N,V]."""
        src_pad = src == PAD_ID  # [B,S], True = padding (nn.Transformer's convention)
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.size(1), device=tgt_in.device)  # [T,T]
        hidden = self.transformer(
            self.embed(src, self.src_embed, self.src_pos),
            self.embed(tgt_in, self.tgt_embed, self.tgt_pos),
            tgt_mask=causal,
            src_key_padding_mask=src_pad,
            memory_key_padding_mask=src_pad,
            tgt_is_causal=True,
        )  # [B,T,D]
        return self.output(hidden[real])  # [N,V]


def baseline_loss(model: NNTransformerBaseline, batch: Batch, label_smoothing: float) -> Tensor:
    """Label-smoothed cross-entropy per real target token (a scalar, with gradient)."""
    real = batch.tgt_out != PAD_ID  # [B,T]
    logits = model(batch.src, batch.tgt_in, real)  # [N,V]
    return F.cross_entropy(logits.float(), batch.tgt_out[real], label_smoothing=label_smoothing)


@dataclass
class BaselineTrainer:
    model: NNTransformerBaseline
    optimizer: torch.optim.AdamW
    scaler: torch.amp.GradScaler  # enabled for fp16 only, as in mt.engine
    amp_dtype: torch.dtype | None  # the autocast dtype of mt's engine; None = fp32
    device: torch.device
    tc: TrainConfig

    @classmethod
    def build(
        cls, model: NNTransformerBaseline, tc: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None
    ) -> BaselineTrainer:
        model.to(device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=tc.lr, betas=(tc.betas[0], tc.betas[1]), weight_decay=tc.weight_decay
        )
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        return cls(model, optimizer, scaler, amp_dtype, device, tc)

    def update(self, batch: Batch, step: int) -> float:
        """Update number `step` on the batch -> its loss per real target token (before the update)."""
        tc = self.tc
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(step, tc.lr, tc.warmup_steps, tc.min_lr, tc.lr_schedule, tc.max_steps)
        batch = batch.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = baseline_loss(self.model, batch, tc.label_smoothing)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if tc.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())
