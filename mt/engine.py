"""One optimizer update: the model as trained (DDP, compile), optimizer, mixed precision, clipping.

The training loop (mt.train) decides which batches and when; `Engine.update` does the arithmetic.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from mt import distributed
from mt.config import TrainConfig
from mt.device import keep_freed_memory, pick_device
from mt.loss import batch_loss
from mt.model import Transformer
from mt.tokenizer import PAD_ID


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def learning_rate(
    step: int, lr: float, warmup: int, min_lr: float = 0.0, schedule: str = "inverse_sqrt", total_steps: int = 0
) -> float:
    """The learning rate of update number `step` (from 1): linear warmup to `lr` over `warmup`
    updates, then the decay `schedule`, never below min_lr.

    inverse_sqrt (Noam) decays forever and never depends on the step budget. linear and cosine decay
    over the updates after warmup up to `total_steps`, the last of them still taking a small step
    (1/(total_steps - warmup + 1) of the way for linear), and reach min_lr after it: a short run ends
    annealed instead of at a high rate.
    """
    step = max(step, 1)
    if warmup > 0 and step < warmup:
        return max(min_lr, lr * step / warmup)
    if schedule == "inverse_sqrt":
        return lr if warmup <= 0 else max(min_lr, lr * math.sqrt(warmup / step))
    if schedule not in ("linear", "cosine"):
        raise ValueError(f"unknown lr schedule {schedule!r}")
    done = min(1.0, (step - warmup) / (max(total_steps, warmup) - warmup + 1))  # share of the decay behind us
    remaining = 1.0 - done if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * done))
    return min_lr + (lr - min_lr) * remaining


def training_device(tc: TrainConfig) -> tuple[torch.device, distributed.Dist]:
    """The device this process trains on, and its place in a torchrun process group (if any)."""
    device = pick_device(tc.device, "train.device")
    dist = distributed.init_from_env(device.type == "cuda")
    if device.type == "cpu":
        keep_freed_memory()
    if dist.enabled and device.type == "cuda":
        device = torch.device(dist.device)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    return device, dist


@dataclass
class Engine:
    model: Transformer  # the weights (what checkpoints hold)
    step_model: torch.nn.Module  # what computes the loss: the model, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # enabled for fp16 only; otherwise every call is the identity
    amp_dtype: torch.dtype | None
    device: torch.device
    dist: distributed.Dist
    tc: TrainConfig

    @classmethod
    def build(cls, model: Transformer, tc: TrainConfig, device: torch.device, dist: distributed.Dist) -> Engine:
        model.to(device)
        optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[tc.optimizer](
            model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay
        )
        amp_dtype = autocast_dtype(tc.precision, device)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        step_model: torch.nn.Module = model
        if dist.enabled:
            # Replicas start from rank 0's weights; dropout differs per rank from here on.
            ids = [device.index] if device.type == "cuda" else None
            # Every buffer is computed alike on every rank (the shortlist's are replaced on resume,
            # which DDP's per-forward buffer broadcast would not see): no broadcast needed.
            step_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
            torch.manual_seed(tc.seed + dist.rank)
        if tc.compile:
            step_model = torch.compile(step_model)
        return cls(model, step_model, optimizer, scaler, amp_dtype, device, dist, tc)

    def _backward(self, batches: list, target_tokens: int) -> tuple[float, float, float]:
        """Accumulate the gradient of the micro-batches; DDP syncs only on the last.
        Returns the summed loss, NLL and alignment loss."""
        d, tc = self.dist, self.tc
        total_loss = total_nll = total_align = 0.0
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            with contextlib.nullcontext() if last or not d.enabled else self.step_model.no_sync():
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    result = batch_loss(
                        self.step_model, batch, tc.label_smoothing, tc.align_weight, self.model.output_class
                    )
                scaled = result.loss / target_tokens
                if d.enabled:
                    scaled = scaled * d.world  # DDP averages gradients over ranks; undo that to sum them
                self.scaler.scale(scaled).backward()
            total_loss += float(result.loss.detach())
            total_nll += float(result.nll)
            total_align += result.align
        return total_loss, total_nll, total_align

    def update(self, micro_batches: list, step: int, schedule_steps: int = 0) -> dict[str, float] | None:
        """Update number `step` over `accumulate` micro-batches, the lr schedule ending at update
        `schedule_steps` (0: train.max_steps); None (and no update) if the loss is not finite."""
        tc, d = self.tc, self.dist
        self.model.train()
        lr = learning_rate(step, tc.lr, tc.warmup_steps, tc.min_lr, tc.lr_schedule, schedule_steps or tc.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = [b.to(self.device) for b in micro_batches]
        # Normalize by the target tokens of the whole update, over all ranks.
        (target_tokens,) = distributed.all_sum([sum(int((b.tgt_out != PAD_ID).sum()) for b in batches)], d)
        self.optimizer.zero_grad(set_to_none=True)
        total_loss, total_nll, total_align = self._backward(batches, target_tokens)
        total_loss, total_nll, total_align, tokens = distributed.all_sum(
            [total_loss, total_nll, total_align, sum(b.num_tokens for b in batches)], d
        )
        if not math.isfinite(total_loss):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.scaler.unscale_(self.optimizer)
        max_norm = tc.clip_norm if tc.clip_norm > 0 else float("inf")  # inf: measure the norm, clip nothing
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if not self.scaler.is_enabled() and not torch.isfinite(norm):  # finite loss, overflowing gradient
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.scaler.step(self.optimizer)  # fp16: skips the update if the scaled gradient overflowed
        self.scaler.update()
        stats = {
            "loss": total_loss / target_tokens,
            "nll": total_nll / target_tokens,
            "lr": lr,
            "grad_norm": float(norm),
            "tokens": tokens,
        }
        if tc.align_weight > 0:
            stats["align_loss"] = total_align / target_tokens  # per target token, before the weight
        return stats
