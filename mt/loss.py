"""Training losses: label-smoothed cross-entropy in one pass over the logits (with its exact
gradient), and the alignment loss of the supervised cross-attention heads.

`F.cross_entropy(..., label_smoothing=eps)` gives the same numbers, but the training loop also
wants the plain NLL (for perplexity), which costs a second log-softmax over [N, V], and its
backward goes through log_softmax, the NLL scatter and the smoothing mean separately. Here
the gradient is written out: softmax - (1 - eps) * onehot - eps / V. On a CPU the loss over
an 8k vocabulary is the largest cost after the matmuls, so this matters (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class _SmoothedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)  # [N,V], >= fp32
        nll = -logp.gather(1, target[:, None]).sum()
        loss = nll.clone() if eps == 0 else (1 - eps) * nll - eps * logp.mean(dim=-1).sum()  # two outputs: two tensors
        ctx.save_for_backward(logp, target)
        ctx.eps, ctx.logits_dtype = eps, logits.dtype
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor) -> tuple[Tensor, None, None]:
        logp, target = ctx.saved_tensors
        eps = ctx.eps
        grad = logp.exp()  # softmax
        if eps:
            grad.sub_(eps / logp.size(-1))
        rows = torch.arange(grad.size(0), device=grad.device)
        grad[rows, target] -= 1 - eps
        grad.mul_(grad_loss)
        return grad.to(ctx.logits_dtype), None, None


def smoothed_cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float) -> tuple[Tensor, Tensor]:
    """logits [N,V], target [N] -> (summed label-smoothed loss, summed NLL without gradient).

    Equal to F.cross_entropy(logits, target, label_smoothing=eps, reduction="sum") and its
    gradient (the smoothing mass eps is spread over all V classes, as PyTorch does).
    """
    loss, nll = _SmoothedCrossEntropy.apply(logits, target, float(label_smoothing))
    return loss, nll.detach()


def alignment_loss(attention: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """Garg et al. (2019): -sum over teacher links of weight * log(attention at the link).

    attention [B,k,T,S]: the aligning heads (averaged); index [N,3] (pair, target position,
    source position); weight [N] (1 / links of that target token). Unaligned target tokens
    contribute nothing. Summed, like the token loss it is added to.
    """
    probs = attention.float().mean(dim=1)  # [B,T,S]
    at_links = probs[index[:, 0], index[:, 1], index[:, 2]]
    return -(weight * at_links.clamp_min(1e-9).log()).sum()


class BatchLoss(NamedTuple):
    loss: Tensor  # summed label-smoothed loss (+ align_weight x alignment loss): what is backpropagated
    nll: Tensor  # summed NLL, no gradient
    tokens: int  # real target tokens
    align: float  # summed alignment loss (0 when not trained)


def batch_loss(
    model, batch, label_smoothing: float, align_weight: float = 0.0, output_class: Tensor | None = None
) -> BatchLoss:
    """The losses over the batch's real target tokens; with align_weight > 0 and teacher links in
    the batch, plus the aligning heads' alignment loss. output_class: the model's piece -> output
    class map when it scores a shortlist (Transformer.output_class; label smoothing then spreads
    over the shortlist, and a piece outside it counts as unk)."""
    from mt.tokenizer import PAD_ID

    real = batch.tgt_out != PAD_ID
    align = align_weight > 0 and batch.align_index is not None
    # Through forward(): DDP and compile see the whole computation.
    logits, attention = model(batch.src, batch.tgt_in, select=real, align=align)
    target = batch.tgt_out[real]
    if output_class is not None:
        target = output_class[target]
    loss, nll = smoothed_cross_entropy(logits, target, label_smoothing)
    align_sum = 0.0
    if align:
        a_loss = alignment_loss(attention[0], batch.align_index, batch.align_weight)
        loss = loss + align_weight * a_loss
        align_sum = float(a_loss.detach())
    return BatchLoss(loss, nll, int(target.numel()), align_sum)
