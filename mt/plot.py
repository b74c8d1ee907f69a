"""Cross-attention heatmaps (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402


def _draw(ax, weights: Tensor, src: Sequence[str], tgt: Sequence[str], title: str, labels: bool) -> None:
    ax.imshow(weights.float().numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_title(title, fontsize=8)
    if labels:
        ax.set_xticks(range(len(src)), src, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tgt)), tgt, fontsize=7)
    else:
        ax.set_xticks([])
        ax.set_yticks([])


def heatmap(weights: Tensor, src: Sequence[str], tgt: Sequence[str], title: str = "") -> Figure:
    """One [T,S] attention matrix with source tokens on x and target tokens on y."""
    fig, ax = plt.subplots(figsize=(max(3.0, 0.35 * len(src) + 1.5), max(2.5, 0.3 * len(tgt) + 1.2)))
    _draw(ax, weights, src, tgt, title, labels=True)
    fig.tight_layout()
    return fig


def attention_grid(attention: Tensor, src: Sequence[str], tgt: Sequence[str], title: str = "") -> Figure:
    """attention [L,H,T,S]: one row per layer, one column per head, plus the head average."""
    L, H = attention.shape[:2]
    cell_w, cell_h = max(1.6, 0.22 * len(src)), max(1.4, 0.2 * len(tgt))
    fig, axes = plt.subplots(L, H + 1, figsize=(cell_w * (H + 1) + 1.5, cell_h * L + 1.5), squeeze=False)
    for layer in range(L):
        for head in range(H + 1):
            weights = attention[layer].mean(0) if head == H else attention[layer, head]
            name = "mean" if head == H else f"head {head}"
            # Token labels only on the head averages, where there is room for them.
            _draw(axes[layer][head], weights, src, tgt, f"layer {layer} {name}", labels=head == H)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save(fig: Figure, path: str) -> None:
    fig.savefig(path, dpi=120)
    plt.close(fig)


def validation_figures(model, valid, tokenizer, device, step: int) -> list[tuple[str, Figure]]:
    """Teacher-forced cross-attention of a fixed mid-length validation sentence, head-averaged,
    for the middle and last decoder layers: (TensorBoard tag, figure) pairs."""
    import torch

    from mt.batching import collate

    model.eval()
    lengths = [len(s) for s in valid.src]
    index = min(range(len(valid)), key=lambda i: abs(lengths[i] - 12))
    batch = collate(valid, [index]).to(device)
    with torch.no_grad():
        _, attention = model(batch.src, batch.tgt_in, need_weights=True)
    src = tokenizer.src_pieces(valid.src[index]) + ["</s>"]
    tgt = ["<s>"] + tokenizer.tgt_pieces(valid.tgt[index])
    layers = sorted({len(attention) - 1, (len(attention) - 1) // 2})
    return [
        (f"attention/layer{layer}", heatmap(attention[layer][0].mean(0).cpu(), src, tgt, f"step {step}, layer {layer}"))
        for layer in layers
    ]
