import pytest
import torch

from mt.checkpoint import build_model, pack, read
from mt.config import ModelConfig
from mt.fileio import atomic_torch_save
from mt.model import Transformer
from mt.tokenizer import BOS_ID, EOS_ID, PAD_ID

from .conftest import tiny_model


def batch(B=3, S=7, T=6, vocab=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (B, S), generator=g)
    tgt = torch.randint(4, vocab, (B, T), generator=g)
    tgt[:, 0] = BOS_ID
    return src, tgt


def test_shapes_and_attention_weights():
    model = tiny_model()
    src, tgt = batch()
    logits, attention = model(src, tgt, need_weights=True)
    assert logits.shape == (3, 6, 40)
    assert len(attention) == 2  # one per decoder layer
    assert all(a.shape == (3, 4, 6, 7) for a in attention)  # [B, H, T, S]
    torch.testing.assert_close(attention[0].sum(-1), torch.ones(3, 4, 6))
    _, none = model(src, tgt)
    assert none == []


def test_causal_future_tokens_do_not_change_earlier_logits():
    model = tiny_model()
    src, tgt = batch()
    changed = tgt.clone()
    changed[:, 4:] = torch.randint(4, 40, (3, 2))
    a, _ = model(src, tgt)
    b, _ = model(src, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_padding_invariance():
    model = tiny_model()
    src, tgt = batch(B=1)
    padded_src = torch.cat([src, torch.full((1, 5), PAD_ID)], dim=1)
    padded_tgt = torch.cat([tgt, torch.full((1, 3), PAD_ID)], dim=1)
    a, attn_a = model(src, tgt, need_weights=True)
    b, attn_b = model(padded_src, padded_tgt, need_weights=True)
    torch.testing.assert_close(a, b[:, : tgt.size(1)], atol=1e-5, rtol=1e-5)
    assert attn_b[0][..., src.size(1) :].abs().max() == 0  # no weight on padding


def test_sdpa_path_equals_explicit_path():
    for norm in ("pre", "post"):
        model = tiny_model(norm=norm, positions="learned")
        src, tgt = batch()
        fast, _ = model(src, tgt, need_weights=False)
        explicit, _ = model(src, tgt, need_weights=True)
        torch.testing.assert_close(fast, explicit, atol=1e-5, rtol=1e-5)


def test_tied_embeddings_are_one_tensor():
    model = tiny_model()
    assert model.output.weight is model.tgt_embed.tokens.weight
    assert model.src_embed.tokens.weight is model.tgt_embed.tokens.weight
    untied = tiny_model(tie_embeddings=False)
    assert untied.output.weight is not untied.tgt_embed.tokens.weight
    assert untied.num_parameters() > model.num_parameters()
    separate = Transformer(ModelConfig(d_model=32, layers=1, heads=4, ffn_dim=64), 40, 40, joint_vocab=False)
    assert separate.src_embed.tokens.weight is not separate.tgt_embed.tokens.weight


def test_incremental_steps_equal_full_decoder():
    model = tiny_model()
    src, tgt = batch()
    full, _ = model(src, tgt)
    memory, mask = model.encode(src)
    state = model.start_decoding(memory, mask)
    for t in range(tgt.size(1)):
        logp, _ = model.decode_step(tgt[:, t], state)
        # pad and bos are never emitted; every real token keeps the full model's log-probability
        assert torch.isinf(logp[:, [PAD_ID, BOS_ID]]).all()
        torch.testing.assert_close(logp[:, 4:], full[:, t].log_softmax(-1)[:, 4:], atol=1e-5, rtol=1e-5)


def test_beams_share_their_sources_keys_and_stay_with_their_source():
    """Two sources with two beams each: a step equals the full decoder, a beam reorder within a
    source is fine, one across sources is refused, and dropping a source cuts its keys/values."""
    model = tiny_model()
    src, tgt = batch(B=2)
    full, _ = model(src, tgt)
    memory, mask = model.encode(src)
    state = model.start_decoding(memory, mask, rows_per_source=2)
    logp, _ = model.decode_step(tgt[:, 0].repeat_interleave(2), state)
    torch.testing.assert_close(
        logp[:, 4:], full[:, 0].log_softmax(-1).repeat_interleave(2, 0)[:, 4:], atol=1e-5, rtol=1e-5
    )
    assert state.layers[0].cross_k.size(0) == 2  # one copy per source, not per beam
    state.reorder(torch.tensor([1, 1, 3, 2]))
    with pytest.raises(ValueError, match="stay with their source"):
        state.reorder(torch.tensor([0, 2, 1, 3]))
    state.reorder(torch.tensor([2, 3]), sources=torch.tensor([1]))  # the first sentence ended
    assert state.src_mask.size(0) == state.layers[0].cross_k.size(0) == 1
    logp, _ = model.decode_step(tgt[1:, 1].repeat_interleave(2), state)
    torch.testing.assert_close(
        logp[:, 4:], full[1:, 1].log_softmax(-1).repeat_interleave(2, 0)[:, 4:], atol=1e-5, rtol=1e-5
    )


def test_tiny_model_overfits_tiny_corpus():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=32, layers=1, heads=2, ffn_dim=64, dropout=0.0), 20, 20)
    src = torch.tensor([[5, 6, 7, EOS_ID], [8, 9, 10, EOS_ID], [11, 12, 13, EOS_ID]])
    tgt_out = torch.tensor([[13, 12, 11, EOS_ID], [7, 6, 5, EOS_ID], [10, 9, 8, EOS_ID]])
    tgt_in = torch.cat([torch.full((3, 1), BOS_ID), tgt_out[:, :-1]], dim=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        logits, _ = model(src, tgt_in)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 20), tgt_out.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    model.eval()
    assert torch.equal(model(src, tgt_in)[0].argmax(-1), tgt_out)


def test_checkpoint_roundtrip_reproduces_logits(tmp_path):
    from mt.tokenizer import Tokenizer

    model = tiny_model(vocab=64)
    from .conftest import TOY

    tokenizer = Tokenizer.load(TOY) or _toy_tokenizer(tmp_path)
    path = tmp_path / "m.pt"
    atomic_torch_save(path, pack(model, tokenizer, "en", "de"))
    rebuilt = build_model(read(path)).eval()
    src, tgt = batch(vocab=64)
    assert torch.equal(model(src, tgt)[0], rebuilt(src, tgt)[0])


def _toy_tokenizer(tmp_path):
    from mt.data import get_tokenizer, load_raw

    from .conftest import toy_config

    cfg = toy_config(tmp_path).data
    return get_tokenizer(cfg, load_raw(cfg)["train"])


def test_dropout_keeps_one_minus_p_scales_and_masks_the_gradient():
    from mt.model import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.3).train()
    x = torch.ones(200_001, requires_grad=True)  # not a multiple of the four elements one random draw masks
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    # each of the four 16-bit lanes of a 64-bit draw keeps 1 - p (a lane with a constant bit would not)
    for lane in range(4):
        assert abs(kept[lane::4].float().mean().item() - 0.7) < 0.01, lane
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7), rtol=1e-4, atol=0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # d(x * keep)/dx = keep
    assert torch.equal(drop.eval()(x), x)


def test_dropout_mask_drops_exactly_the_rounded_share_and_scales_to_an_expectation_of_one():
    from mt.model import keep_scale_from_bits

    every_int16 = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    for p in (0.0, 0.1, 0.3, 0.5, 0.999999):
        keep = keep_scale_from_bits(every_int16, p)
        dropped = min(round(p * 65536), 65535)
        assert int((keep == 0).sum()) == dropped, p  # over all 65,536 equally likely values: exact
        assert keep.dtype == torch.float32
        assert torch.all(keep[dropped:] == torch.tensor(65536 / (65536 - dropped), dtype=torch.float32)), p
        assert keep.double().mean().item() == pytest.approx(1.0, abs=1e-6), p


def test_dropout_mask_follows_the_global_generator():
    from mt.model import dropout_keep_scale

    x = torch.zeros(3, 5, 1001, dtype=torch.bfloat16)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    keep = dropout_keep_scale(x, 0.3)
    assert keep.shape == x.shape and keep.dtype == x.dtype
    assert abs((keep > 0).float().mean().item() - 0.7) < 0.01
    assert not torch.equal(dropout_keep_scale(x, 0.3), keep)  # the generator moved on
    torch.set_rng_state(state)  # what resume restores
    assert torch.equal(dropout_keep_scale(x, 0.3), keep)
    assert dropout_keep_scale(torch.zeros(0, 4), 0.1).shape == (0, 4)
