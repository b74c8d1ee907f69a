"""Cross-attention heatmaps (matplotlib, headless): words (or pieces) on both axes, a colour bar."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from mt.errors import UserError  # noqa: E402

if TYPE_CHECKING:
    from mt.align.extract import AlignConfig

Panel = tuple[str, Tensor]  # (title, [T,S] matrix)


def _draw(ax, weights: Tensor, src: Sequence[str], tgt: Sequence[str], title: str, xlabels: bool, ylabels: bool):
    """One matrix on `ax`, colours fixed to [0, 1] so that panels and figures compare; its image."""
    image = ax.imshow(weights.float().numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_title(title, fontsize=8)
    if xlabels:
        ax.set_xticks(range(len(src)), src, rotation=90, fontsize=7)
    else:
        ax.set_xticks([])
    if ylabels:
        ax.set_yticks(range(len(tgt)), tgt, fontsize=7)
    else:
        ax.set_yticks([])
    return image


def heatmap(weights: Tensor, src: Sequence[str], tgt: Sequence[str], title: str = "") -> Figure:
    """One [T,S] attention matrix: source words (or pieces) on x, target words on y, a colour bar."""
    fig, ax = plt.subplots(
        figsize=(max(3.5, 0.35 * len(src) + 2.3), max(2.5, 0.3 * len(tgt) + 1.4)), layout="constrained"
    )
    image = _draw(ax, weights, src, tgt, title, xlabels=True, ylabels=True)
    fig.colorbar(image, ax=ax, label="attention", shrink=0.9)
    return fig


def attention_grid(
    panels: Sequence[Sequence[Panel]], src: Sequence[str], tgt: Sequence[str], title: str = ""
) -> Figure:
    """Rows of panels (e.g. one per layer: each head, then their mean), all [T,S] over the same
    words: target words label the first column, source words the first and last rows; one colour bar."""
    rows, cols = len(panels), max(len(row) for row in panels)
    cell_w, cell_h = max(1.8, 0.28 * len(src)), max(1.5, 0.24 * len(tgt))
    fig, axes = plt.subplots(
        rows, cols, figsize=(cell_w * cols + 2.5, cell_h * rows + 1.8), squeeze=False, layout="constrained"
    )
    image = None
    for r, row in enumerate(panels):
        for c in range(cols):
            if c >= len(row):
                axes[r][c].axis("off")
                continue
            name, weights = row[c]
            image = _draw(axes[r][c], weights, src, tgt, name, xlabels=r in (0, rows - 1), ylabels=c == 0)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="attention", shrink=0.6)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def save(fig: Figure, path: str | Path) -> None:
    """Write `fig` to `path` atomically, in the format its extension names (png without one)."""
    from mt.fileio import atomic_write_bytes

    atomic_write_bytes(Path(path), figure_bytes(fig, image_format(path)))


def image_format(path: str | Path) -> str:
    """The image format that `path`'s extension names (png without one), checked before any work:
    matplotlib would refuse an unknown one only when saving, and append .png to a bare name."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix not in formats:
        raise UserError(f"cannot write {path}: .{suffix} is not an image format ({', '.join(sorted(formats))})")
    return suffix


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """`fig` as an image file's bytes (closing it), to be written atomically by the caller."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def validation_figures(
    model, valid, tokenizer, device, step: int, align: AlignConfig | None = None
) -> list[tuple[str, Figure]]:
    """Teacher-forced cross-attention of a fixed mid-length validation sentence, head-averaged,
    for the middle and last decoder layers: (TensorBoard tag, figure) pairs. With `align` (the
    aligning heads, e.g. `align_config_for({"alignment": supervised_heads(config)})`), also
    "attention/aligning": those heads as the alignments read them (full context if it says so).

    Row r is the decoder step that *predicts* target piece r (the last row predicts </s>), so the
    rows are labelled with the target pieces and </s>, not with the decoder's input (<s> + pieces).
    """
    import torch

    from mt.align.extract import select
    from mt.batching import collate

    model.eval()
    lengths = [len(s) for s in valid.src]
    index = min(range(len(valid)), key=lambda i: abs(lengths[i] - 12))
    batch = collate(valid, [index]).to(device)
    with torch.no_grad():
        _, attention = model(batch.src, batch.tgt_in, need_weights=True)
    src = tokenizer.src_pieces(valid.src[index]) + ["</s>"]
    tgt = tokenizer.tgt_pieces(valid.tgt[index]) + ["</s>"]
    layers = sorted({len(attention) - 1, (len(attention) - 1) // 2})
    figures = [
        (f"attention/layer{layer}", heatmap(attention[layer][0].mean(0).cpu(), src, tgt, f"step {step}, layer {layer}"))
        for layer in layers
    ]
    if align is not None:
        if align.full_context:
            with torch.no_grad():
                _, attention = model(batch.src, batch.tgt_in, need_weights=True, full_context=True)
        stacked = torch.stack([a[0] for a in attention]).cpu()  # [L,H,T,S]
        title = f"step {step}, {align.describe()}"
        figures.append(("attention/aligning", heatmap(select(stacked, align), src, tgt, title)))
    return figures
