"""Heatmaps: word labels and a colour bar; TensorBoard's validation figures label each row with the
token it predicts."""

from __future__ import annotations

import pytest
import torch

from mt.align.extract import AlignConfig
from mt.batching import Split
from mt.config import DataConfig
from mt.errors import UserError
from mt.fileio import read_lines
from mt.plot import attention_grid, figure_bytes, heatmap, image_format, validation_figures
from mt.tokenizer import Tokenizer
from tests.conftest import TOY, tiny_model


def labels(ax, axis: str) -> list[str]:
    ticks = ax.get_yticklabels() if axis == "y" else ax.get_xticklabels()
    return [t.get_text() for t in ticks]


def test_heatmap_has_word_labels_and_a_colour_bar():
    fig = heatmap(torch.rand(3, 2), ["ice", "cream"], ["Eis", "creme", "."], "Eiscreme.")
    ax, bar = fig.axes
    assert labels(ax, "x") == ["ice", "cream"] and labels(ax, "y") == ["Eis", "creme", "."]
    assert ax.get_title() == "Eiscreme." and bar.get_ylabel() == "attention"


def test_attention_grid_labels_the_outer_panels_and_titles_the_translation():
    panels = [[("links", torch.rand(2, 3))], [(f"head {h}", torch.rand(2, 3)) for h in range(3)]]
    fig = attention_grid(panels, ["a", "b", "c"], ["x", "y"], "Ein Hund.")
    first, *_, bar = fig.axes
    assert fig._suptitle.get_text() == "Ein Hund." and bar.get_ylabel() == "attention"
    assert labels(first, "y") == ["x", "y"] and labels(first, "x") == ["a", "b", "c"]
    assert len([ax for ax in fig.axes if ax.axison]) == 1 + 3 + 1  # empty cells hidden, plus the colour bar


def test_validation_figures_label_rows_with_the_predicted_tokens():
    src_lines, tgt_lines = read_lines(TOY / "train.en"), read_lines(TOY / "train.de")
    tok = Tokenizer.train(src_lines, tgt_lines, DataConfig(name="toy", vocab_size=64))
    src, tgt = tok.encode_src(src_lines[:3]), tok.encode_tgt(tgt_lines[:3])
    valid = Split(src_lines[:3], tgt_lines[:3], src, tgt)
    model = tiny_model(vocab=tok.src_vocab_size, heads=2)
    align = AlignConfig(layer=1, head=0, full_context=True, origin="supervised")
    figures = dict(validation_figures(model, valid, tok, "cpu", 7, align=align))
    assert set(figures) == {"attention/layer0", "attention/layer1", "attention/aligning"}
    index = min(range(3), key=lambda i: abs(len(src[i]) - 12))  # the sentence validation_figures picks
    for figure in figures.values():
        ax = figure.axes[0]
        assert labels(ax, "y") == tok.tgt_pieces(tgt[index]) + ["</s>"]  # row r predicts target token r
        assert labels(ax, "x") == tok.src_pieces(src[index]) + ["</s>"]
    assert "layer 1 head 0, full context (supervised)" in figures["attention/aligning"].axes[0].get_title()
    assert set(dict(validation_figures(model, valid, tok, "cpu", 7))) == {"attention/layer0", "attention/layer1"}


def test_image_format_is_named_by_the_extension_and_checked_before_drawing():
    assert image_format("a/b.PNG") == "png" and image_format("plot.svg") == "svg"
    assert image_format("plot") == "png"  # written at that very path (matplotlib would append .png)
    with pytest.raises(UserError, match=r"cannot write p\.xyz: \.xyz is not an image format"):
        image_format("p.xyz")
    fig = heatmap(torch.rand(2, 2), ["a", "b"], ["x", "y"])
    assert figure_bytes(fig, "png").startswith(b"\x89PNG") and figure_bytes(
        heatmap(torch.rand(1, 1), ["a"], ["x"]), "pdf"
    ).startswith(b"%PDF")
