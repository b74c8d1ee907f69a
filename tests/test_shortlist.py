"""model.output_shortlist: the output layer scores only the training targets' pieces. With every
piece in the shortlist the model is the plain one; with fewer, the loss is cross-entropy over the
shortlist, the pieces outside it are never emitted (our decoder, CTranslate2), and the set survives
checkpoints, model folders and resume."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from mt import ct2
from mt.batching import Batch, used_ids
from mt.checkpoint import build_model, load, pack
from mt.config import DecodeConfig
from mt.data import TokenColumn
from mt.decode import translate_ids
from mt.export import export
from mt.loss import batch_loss, smoothed_cross_entropy
from mt.model import SHORTLIST_MULTIPLE
from mt.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from tests.conftest import tiny_model, toy_config
from tests.test_export import SENTENCES, toy_tokenizer  # noqa: F401 (a fixture)

V = 40


def emittable(ids: list[int], vocab: int = V) -> torch.Tensor:
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[ids] = True
    return mask


def restricted(vocab: int = V, keep_every: int = 3, seed: int = 0, tie_embeddings: bool = True):
    """A tiny model whose shortlist is every third piece (plus eos and unk, which it always has)."""
    model = tiny_model(vocab=vocab, seed=seed, output_shortlist=True, tie_embeddings=tie_embeddings)
    model.set_emittable(emittable(list(range(4, vocab, keep_every)), vocab))
    return model


def test_used_ids_counts_the_selected_rows_of_a_sliced_arrow_column():
    seqs = [[5, 6], [7], [8, 9, 9], [10]]
    column = TokenColumn.from_arrow(pa.chunked_array([pa.array(seqs, type=pa.list_(pa.int32()))[1:]]))
    assert np.flatnonzero(used_ids(column, 12)).tolist() == [7, 8, 9, 10]  # the slice: row 0 is not in it
    picked = column.select(np.array([1, 1, 2]))  # rows [8, 9, 9] twice and [10]
    assert picked.id_counts(12)[[7, 8, 9, 10]].tolist() == [0, 2, 4, 1]
    assert np.flatnonzero(used_ids([[3, 1], [1]], 5)).tolist() == [1, 3]  # plain lists


def test_a_full_shortlist_is_the_plain_model():
    plain = tiny_model(vocab=V, seed=1)
    listed = tiny_model(vocab=V, seed=1, output_shortlist=True)  # every piece emittable but pad and bos
    src = torch.randint(4, V, (3, 7))
    tgt = torch.randint(4, V, (3, 5))
    logits, _ = plain(src, tgt)
    listed_logits, _ = listed(src, tgt)
    assert torch.equal(listed.shortlist, torch.tensor([i for i in range(V) if i not in (PAD_ID, BOS_ID)]))
    assert torch.allclose(listed_logits, logits[..., listed.shortlist], atol=1e-6)
    ids = [s.tolist() for s in src]
    cfg = DecodeConfig(beam_size=3, max_len_a=0.0, max_len_b=6)
    plain_out, listed_out = translate_ids(plain, ids, cfg), translate_ids(listed, ids, cfg)
    assert [h[0].tokens for h in plain_out] == [h[0].tokens for h in listed_out]


def test_the_loss_is_cross_entropy_over_the_shortlist():
    model = restricted(tie_embeddings=False)  # untied: the output weight's gradient is the output layer's alone
    model.train()
    src, tgt_in = torch.randint(4, V, (2, 6)), torch.randint(4, V, (2, 4))
    logits, _ = model(src, tgt_in)  # [B,T,V']
    assert logits.shape == (2, 4, len(model.shortlist)) and len(model.shortlist) < V
    target = model.shortlist[torch.randint(0, len(model.shortlist), (8,))]  # pieces of the shortlist
    classes = model.output_class[target]
    assert torch.equal(model.shortlist[classes], target)
    flat = logits.reshape(8, -1)
    loss, nll = smoothed_cross_entropy(flat, classes, 0.1)
    assert torch.allclose(loss, F.cross_entropy(flat, classes, label_smoothing=0.1, reduction="sum"))
    assert torch.allclose(nll, F.cross_entropy(flat, classes, reduction="sum"))
    outside = torch.tensor([5, 6])  # not in range(4, V, 3): scored as unk
    assert model.output_class[outside].tolist() == [model.output_class[UNK_ID].item()] * 2
    loss.backward()
    grad = model.output.weight.grad
    assert (grad[~model.emittable] == 0).all() and (grad[model.shortlist].abs().sum(-1) > 0).all()


def test_batch_loss_maps_targets_to_their_classes_and_unlisted_ones_to_unk():
    model = restricted()
    src, tgt_in = torch.randint(4, V, (2, 6)), torch.randint(4, V, (2, 4))
    tgt_out = torch.tensor([[7, 10, 5, EOS_ID], [13, 6, PAD_ID, PAD_ID]])  # 5 and 6 are outside the shortlist
    batch = Batch(src=src, tgt_in=tgt_in, tgt_out=tgt_out, indices=np.arange(2))
    result = batch_loss(model, batch, 0.1, output_class=model.output_class)
    logits = model.full_vocabulary(model(src, tgt_in)[0], float("-inf"))  # [B,T,V]
    real = tgt_out != PAD_ID
    expected_ids = torch.where(model.emittable[tgt_out[real]], tgt_out[real], UNK_ID)
    listed = logits[real][:, model.shortlist]  # [N,V'] the shortlist's pieces only
    expected_class = torch.searchsorted(model.shortlist, expected_ids)
    assert result.tokens == 6
    assert torch.allclose(result.loss, F.cross_entropy(listed, expected_class, label_smoothing=0.1, reduction="sum"))
    assert torch.allclose(result.nll, F.cross_entropy(listed, expected_class, reduction="sum"))


def test_pieces_outside_the_shortlist_are_never_emitted():
    model = restricted()
    memory, src_mask = model.encode(torch.randint(4, V, (2, 6)))
    state = model.start_decoding(memory, src_mask)
    logp, _ = model.decode_step(torch.full((2,), BOS_ID), state)
    outside = ~model.emittable
    assert logp.shape == (2, V) and torch.isinf(logp[:, outside]).all() and torch.isfinite(logp[:, ~outside]).all()
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2))
    cfg = DecodeConfig(beam_size=4, n_best=4, max_len_a=0.0, max_len_b=8)
    for cache in (True, False):
        for hyps in translate_ids(model, [[5, 6, 7], [8, 9]], cfg, use_cache=cache):
            assert all(model.emittable[t] for h in hyps for t in h.tokens)


def test_the_shortlist_survives_a_checkpoint_and_a_model_folder(toy_tokenizer, tmp_path):  # noqa: F811
    model = restricted(vocab=toy_tokenizer.src_vocab_size, keep_every=2)
    path = tmp_path / "model.pt"
    torch.save(pack(model, toy_tokenizer, "en", "de"), path)
    loaded = load(path).model
    assert torch.equal(loaded.emittable, model.emittable) and torch.equal(loaded.shortlist, model.shortlist)
    export(path, tmp_path / "folder", None, force=False)
    folder = load(tmp_path / "folder").model
    assert torch.equal(folder.shortlist, model.shortlist)
    ids = toy_tokenizer.encode_src(SENTENCES)
    cfg = DecodeConfig(beam_size=2, max_len_a=0.5, max_len_b=4)
    ours, theirs = translate_ids(model, ids, cfg), translate_ids(folder, ids, cfg)
    assert [h[0].tokens for h in theirs] == [h[0].tokens for h in ours]
    assert build_model(torch.load(path, weights_only=True)).output_class.shape == (toy_tokenizer.src_vocab_size,)


def test_ct2_never_emits_outside_the_shortlist_and_matches_us(toy_tokenizer, tmp_path):  # noqa: F811
    torch.set_num_threads(1)
    model = restricted(vocab=toy_tokenizer.src_vocab_size, keep_every=2, seed=3)
    ct2.write_ct2(model, toy_tokenizer, tmp_path / "ct2", "float32", {"src_lang": "en", "tgt_lang": "de"})
    engine = ct2.load_ct2(tmp_path / "ct2", "cpu", threads=1)
    ids = toy_tokenizer.encode_src(SENTENCES)
    cfg = DecodeConfig(beam_size=1, max_len_a=0.5, max_len_b=4)
    ours = [h[0].tokens for h in translate_ids(model, ids, cfg)]
    assert [h[0].tokens for h in ct2.translate_ids(engine, ids, cfg)] == ours
    assert all(model.emittable[t] for tokens in ours for t in tokens)


def test_set_emittable_keeps_eos_and_unk_and_drops_pad_and_bos():
    model = tiny_model(vocab=V, output_shortlist=True)
    model.set_emittable(emittable([PAD_ID, BOS_ID, 10, 20]))
    assert model.shortlist.tolist() == sorted([UNK_ID, EOS_ID, 10, 20])
    model.set_emittable(emittable([10, 20]), multiple=8)  # 4 -> 8: the lowest-id others join
    assert model.shortlist.tolist() == [UNK_ID, EOS_ID, 4, 5, 6, 7, 10, 20]
    with pytest.raises(ValueError, match="output_shortlist"):
        tiny_model(vocab=V).set_emittable(emittable([10]))


@pytest.mark.slow
def test_training_with_a_shortlist_records_the_training_targets_pieces_and_resumes(tmp_path, monkeypatch, caplog):
    from mt.data import prepare
    from mt.train import run

    cfg = toy_config(tmp_path, max_steps=40, eval_every=20, save_every=20)
    cfg.model.output_shortlist = True
    run(cfg, tmp_path / "run")
    model = load(tmp_path / "run" / "checkpoints" / "best.pt").model
    data = prepare(cfg.data)
    used = torch.from_numpy(used_ids(data.splits["train"].tgt, data.tokenizer.tgt_vocab_size))
    assert 0 < int(used.sum()) < data.tokenizer.tgt_vocab_size - 2  # the toy's joint vocabulary has English-only pieces
    expected = tiny_model(vocab=len(used), output_shortlist=True)
    expected.set_emittable(used, SHORTLIST_MULTIPLE)
    expected = expected.emittable
    assert torch.equal(model.emittable, expected) and bool(expected[used].all())
    cfg.train.max_steps, cfg.train.resume = 60, True
    # The data "changed": the resumed run must keep the checkpoint's set, and say so.
    more = np.ones_like(used.numpy())
    monkeypatch.setattr("mt.train.used_ids", lambda seqs, vocab_size: more)
    with caplog.at_level(logging.WARNING, logger="mt.train"):
        metrics = run(cfg, tmp_path / "run")
    assert metrics["steps"] == 60
    assert "outside the resumed run's output shortlist" in caplog.text
    resumed = load(tmp_path / "run" / "checkpoints" / "last.pt").model
    assert torch.equal(resumed.emittable, expected) and torch.equal(resumed.shortlist, model.shortlist)
