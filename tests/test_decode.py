import torch

from mt.batching import source_tensor
from mt.config import DecodeConfig
from mt.decode import beam_search, greedy_search, length_penalty, translate_ids
from mt.tokenizer import EOS_ID

from .conftest import tiny_model


def sources(n=6, vocab=40, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(4, vocab, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g).tolist() for _ in range(n)
    ]


def sharp_model():
    """Random weights with a peaked output distribution, so search decisions are not near-ties."""
    model = tiny_model(seed=5)
    with torch.no_grad():
        model.output.weight.mul_(8.0)
    return model


def test_beam_one_equals_greedy():
    model = sharp_model()
    src = source_tensor(sources())
    cfg = DecodeConfig(beam_size=1, length_penalty=0.6)
    greedy = greedy_search(model, src, cfg)
    beam = beam_search(model, src, cfg)
    for g, b in zip(greedy, beam):
        assert g[0].tokens == b[0].tokens
        assert abs(g[0].score - b[0].score) < 1e-5


def test_cache_equals_full_recomputation():
    model = sharp_model()
    src = source_tensor(sources())
    for beam in (1, 4):
        cfg = DecodeConfig(beam_size=beam, n_best=beam)
        search = greedy_search if beam == 1 else beam_search
        cached = search(model, src, cfg, need_attention=True, use_cache=True)
        full = search(model, src, cfg, need_attention=True, use_cache=False)
        for c, f in zip(cached, full):
            assert [h.tokens for h in c] == [h.tokens for h in f]
            for hc, hf in zip(c, f):
                assert abs(hc.score - hf.score) < 1e-4
                torch.testing.assert_close(hc.attention, hf.attention, atol=1e-5, rtol=1e-4)


def test_beam_returns_finished_hypotheses_sorted_with_length_penalty():
    model = sharp_model()
    src = source_tensor(sources())
    cfg = DecodeConfig(beam_size=5, n_best=5, length_penalty=1.0, max_len_a=1.0, max_len_b=3)
    lengths = (src != 0).sum(1)
    for b, hyps in enumerate(beam_search(model, src, cfg)):
        assert 1 <= len(hyps) <= 5
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:
            assert EOS_ID not in h.tokens
            n = len(h.tokens) + 1  # every hypothesis ended: with eos or at the length limit
            assert n <= int(lengths[b]) + 3
            assert abs(h.score - h.log_prob / length_penalty(n, 1.0)) < 1e-5


def test_beam_is_at_least_as_good_as_greedy_in_model_score():
    model = sharp_model()
    src = source_tensor(sources(10))
    cfg = DecodeConfig(beam_size=4, length_penalty=0.0)
    greedy = greedy_search(model, src, DecodeConfig(beam_size=1, length_penalty=0.0))
    beam = beam_search(model, src, cfg)
    wins = sum(b[0].log_prob >= g[0].log_prob - 1e-5 for g, b in zip(greedy, beam))
    assert wins == len(beam)


def test_translate_ids_keeps_input_order_across_batches():
    model = sharp_model()
    srcs = sources(12)
    cfg = DecodeConfig(beam_size=2, max_tokens=20)  # forces several length-sorted batches
    together = translate_ids(model, srcs, cfg)
    one_by_one = [translate_ids(model, [s], cfg)[0] for s in srcs]
    assert [h[0].tokens for h in together] == [h[0].tokens for h in one_by_one]


def test_hypothesis_attention_shape():
    model = sharp_model()
    srcs = sources(3)
    hyps = translate_ids(model, srcs, DecodeConfig(beam_size=3), need_attention=True)
    for s, h in zip(srcs, hyps):
        att = h[0].attention
        assert att.shape == (2, 4, len(h[0].tokens) + 1, len(s) + 1)  # [L, H, steps, source + eos]
        torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:3]), atol=1e-5, rtol=1e-5)


def test_sentences_that_end_leave_the_batch_without_changing_any_result():
    """Decoded together, sentences end at different steps and leave the batch; each result must
    equal decoding that sentence alone (tokens, scores, every n-best entry, attention)."""
    model = sharp_model()
    srcs = sources(8)
    for beam in (1, 4):
        cfg = DecodeConfig(beam_size=beam, n_best=beam, max_len_a=1.0, max_len_b=4)
        search = greedy_search if beam == 1 else beam_search
        together = search(model, source_tensor(srcs), cfg, need_attention=True)
        assert len({len(hyps[0].tokens) for hyps in together}) > 2  # they do end at different steps
        for s, hyps in zip(srcs, together):
            (alone,) = search(model, source_tensor([s]), cfg, need_attention=True)
            assert [h.tokens for h in hyps] == [h.tokens for h in alone]
            for h, a in zip(hyps, alone):
                assert abs(h.score - a.score) < 1e-5
                n = len(s) + 1  # the batch's padding columns aside
                torch.testing.assert_close(h.attention[..., :n], a.attention, atol=1e-5, rtol=1e-4)
                assert not h.attention[..., n:].any()  # no attention on padding
