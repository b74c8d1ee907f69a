"""Alignments from cross-attention: AER, subword->word pooling, shift indexing, symmetrization, CLI."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mt.align.cli import main
from mt.align.experiment import heads_record
from mt.align.extract import (
    AlignConfig,
    align_config_for,
    align_hypothesis,
    align_pairs,
    align_translations,
    align_words,
    all_alignments,
    check_config,
    encode_sentences,
    encode_units,
    encode_words,
    format_links,
    mutual_links,
    pairs_attention,
    pool_words,
    reread_best,
    select,
    teacher_forced_attention,
    token_matrix,
    unit_texts,
)
from mt.align.gold import GoldLine, aer, check_gold_ranges, flip_gold, parse_links, read_gold_pairs
from mt.align.symmetrize import grow_diag_final, invert, mutual_of_mean, symmetrize
from mt.config import DataConfig, DecodeConfig
from mt.decode import Hypothesis, translate_ids
from mt.errors import UserError
from mt.fileio import read_lines
from mt.tokenizer import Tokenizer
from tests.conftest import TOY, tiny_model


# AER --------------------------------------------------------------------------------------
def test_parse_links_sure_possible_one_based():
    g = parse_links("1-1 2-2 2p3", one_based=True)
    assert g.sure == {(0, 0), (1, 1)}
    assert g.possible == {(0, 0), (1, 1), (1, 2)}  # sure links are possible too
    assert parse_links("0-0 1p2").sure == {(0, 0)}
    assert parse_links("").sure == set() and parse_links("   ").possible == set()


def test_parse_links_rejects_garbage_and_zero_in_one_based():
    from mt.errors import UserError

    with pytest.raises(UserError, match="cannot read"):
        parse_links("1-x", where="f:1")
    with pytest.raises(UserError, match="index 0"):
        parse_links("0-1", one_based=True, where="f:1")


def test_aer_worked_by_hand():
    # S = {0-0, 1-1}, P = S + {1-2}; A = {0-0, 1-2, 2-2}
    # |A∩S| = 1, |A∩P| = 2: precision 2/3, recall 1/2, AER = 1 - (1 + 2) / (3 + 2) = 0.4
    gold = [parse_links("1-1 2-2 2p3", one_based=True)]
    s = aer(gold, [{(0, 0), (1, 2), (2, 2)}])
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == pytest.approx(1 / 2)
    assert s.aer == pytest.approx(0.4)
    assert (s.hyp_links, s.sure_links, s.possible_links, s.hyp_sure, s.hyp_possible) == (3, 2, 3, 1, 2)


def test_aer_is_corpus_level_and_handles_empty_lines():
    gold = [parse_links("1-1 2-2 2p3", one_based=True), parse_links("")]
    # second sentence: no gold, one (wrong) link -> |A| = 4, |A∩P| = 2, |A∩S| = 1, |S| = 2
    s = aer(gold, [{(0, 0), (1, 2), (2, 2)}, {(0, 0)}])
    assert s.precision == pytest.approx(2 / 4)
    assert s.recall == pytest.approx(1 / 2)
    assert s.aer == pytest.approx(1 - 3 / 6)
    # nothing proposed: precision vacuous, recall 0, AER 1
    empty = aer(gold, [set(), set()])
    assert (empty.precision, empty.recall, empty.aer) == (1.0, 0.0, 1.0)
    # nothing anywhere: AER 0
    assert aer([GoldLine(set(), set())], [set()]).aer == 0.0


def test_aer_possible_links_never_hurt():
    gold = [parse_links("0-0 1-1 1p2")]
    assert aer(gold, [{(0, 0), (1, 1)}]).aer == 0.0
    assert aer(gold, [{(0, 0), (1, 1), (1, 2)}]).aer == 0.0  # A = P: (2 + 3) / (3 + 2)
    assert aer(gold, [{(0, 0), (1, 1), (2, 2)}]).aer == pytest.approx(1 - 4 / 5)


def test_flip_gold():
    flipped = flip_gold([parse_links("0-1 2p3")])[0]
    assert flipped.sure == {(1, 0)} and flipped.possible == {(1, 0), (3, 2)}


# Subwords -> words, shift --------------------------------------------------------------------
def links_of(attention, src_word_ids, tgt_word_ids, cfg):
    return align_words(attention, src_word_ids, tgt_word_ids, cfg).links


def word_matrix(attention, src_word_ids, tgt_word_ids, cfg):
    return align_words(attention, src_word_ids, tgt_word_ids, cfg).matrix


def fake_encode(words):
    """'abc' -> 3 pieces (one per letter), like a tokenizer splitting every word into letters."""
    return [[ord(c) for c in w] for w in words]


def test_encode_words_maps_pieces_to_whitespace_words():
    ids, word_ids = encode_words(fake_encode, ["ab", "c", "def"])
    assert ids == [97, 98, 99, 100, 101, 102]
    assert word_ids == [0, 0, 1, 2, 2, 2]
    assert encode_words(fake_encode, []) == ([], [])
    # many sentences in one call: the same as one by one, empty sentences included
    sentences = [["ab", "c"], [], ["def"]]
    assert encode_sentences(fake_encode, sentences) == [encode_words(fake_encode, s) for s in sentences]


def test_pool_words_sums_source_pieces_and_averages_target_pieces():
    # 3 target pieces (words 0,0,1) x 3 source pieces (words 0,1,1)
    m = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [0.0, 0.5, 0.5]])
    w = pool_words(m, [0, 1, 1], [0, 0, 1])
    expected = torch.tensor([[(0.2 + 0.6) / 2, (0.8 + 0.4) / 2], [0.0, 1.0]])
    assert torch.allclose(w, expected)


def test_words_max_and_subword_links():
    # 2 target pieces (one word each) x 3 source pieces: source word 0 = pieces 0, 1; word 1 = piece 2
    a = _attention([[0.3, 0.3, 0.4], [0.1, 0.1, 0.8], [0.0, 0.0, 1.0]])
    src, tgt = [0, 0, 1], [0, 1]
    no_shift = dict(shift=False)
    # sum: word 0 gets 0.6 > 0.4 for target 0; max: 0.3 < 0.4
    assert links_of(a, src, tgt, AlignConfig(words="sum", **no_shift)) == [(0, 0), (1, 1)]
    assert links_of(a, src, tgt, AlignConfig(words="max", **no_shift)) == [(1, 0), (1, 1)]
    assert torch.allclose(
        word_matrix(a, src, tgt, AlignConfig(words="max", **no_shift)), torch.tensor([[0.3, 0.4], [0.1, 0.8]])
    )
    # subword: argmax per target piece, then word pairs (target word 0 has pieces 0 and 1 here)
    assert links_of(a, src, [0, 0], AlignConfig(words="subword", **no_shift)) == [(1, 0)]
    b = _attention([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8], [0.0, 0.0, 1.0]])
    assert links_of(b, src, [0, 0], AlignConfig(words="subword", **no_shift)) == [(0, 0), (1, 0)]


def test_mutual_links_keep_only_cells_that_are_row_and_column_maximum():
    # rows = target words, columns = source words
    m = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.1, 0.9]])
    # row maxima: t0->s0, t1->s0, t2->s1; column maxima: s0->t1 (0.7), s1->t2 (0.9)
    assert mutual_links(m) == [(0, 1), (1, 2)]  # t0 stays unaligned: s0 prefers t1
    assert links_of(_attention([[0.6, 0.4, 0.0], [0.7, 0.3, 0.0]]), [0, 1], [0, 1], AlignConfig(links="mutual")) == [
        (0, 1)
    ]
    assert mutual_links(torch.zeros(0, 0)) == []
    with pytest.raises(UserError, match="links must be one of"):
        links_of(_attention([[1.0, 0.0]]), [0], [0], AlignConfig(links="best"))


def test_mutual_of_mean_averages_both_directions_before_linking():
    # 2 target words x 3 source words; the reverse model's matrix is [source words, target words]
    forward = torch.tensor([[0.4, 0.7, 0.6], [0.1, 0.3, 0.8]])
    reverse = torch.tensor([[0.3, 0.7], [0.9, 0.4], [0.5, 0.2]])
    # mean [t, s] = [[0.35, 0.8, 0.55], [0.4, 0.35, 0.5]]: t0->s1 is a column maximum; t1->s2 is
    # not (s2 prefers t0 with 0.55), so t1 stays unaligned
    assert mutual_of_mean(forward, reverse) == [(1, 0)]
    assert mutual_links(forward) == [(1, 0), (2, 1)]  # each direction alone says something else
    assert mutual_links(reverse.t()) == [(0, 1), (1, 0)]
    # a long pair cut differently by the two models: only the words both saw are linked
    assert mutual_of_mean(forward, reverse[:2]) == mutual_links((forward[:, :2] + reverse[:2].t()) / 2)
    assert mutual_of_mean(torch.zeros(0, 0), reverse) == []


def _attention(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows).view(1, 1, len(rows), len(rows[0]))


def test_shift_reads_the_row_where_the_target_is_input_and_drops_eos_column():
    # n = 2 target tokens -> rows 0..2, S = 2 source tokens + eos column
    # row 0 predicts y0; row 1 predicts y1 (input y0); row 2 predicts eos (input y1)
    a = _attention([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.0, 0.2, 0.8]])
    assert torch.equal(token_matrix(a, 2, 2, AlignConfig(shift=False)), a[0, 0, :2, :2])
    assert torch.equal(token_matrix(a, 2, 2, AlignConfig(shift=True)), a[0, 0, 1:3, :2])
    assert links_of(a, [0, 1], [0, 1], AlignConfig(shift=False)) == [(0, 0), (1, 1)]
    # shifted: y0 reads row 1 -> source 1; y1 reads row 2 -> eos column dropped -> source 1
    assert links_of(a, [0, 1], [0, 1], AlignConfig(shift=True)) == [(1, 0), (1, 1)]


def test_null_reading_leaves_a_word_that_attends_to_eos_unaligned():
    # 2 target words, 2 source words + eos column; target word 1 attends mostly to eos
    a = _attention([[0.7, 0.2, 0.1], [0.3, 0.1, 0.6], [0.0, 0.0, 1.0]])
    assert links_of(a, [0, 1], [0, 1], AlignConfig()) == [(0, 0), (0, 1)]  # eos dropped: next best
    null = AlignConfig(null=True)
    assert links_of(a, [0, 1], [0, 1], null) == [(0, 0)]
    # mutual: target word 1's best word (source 1) has its column maximum there, but eos beats it
    b = _attention([[0.7, 0.1, 0.2], [0.1, 0.3, 0.6], [0.0, 0.0, 1.0]])
    assert links_of(b, [0, 1], [0, 1], AlignConfig(links="mutual")) == [(0, 0), (1, 1)]
    assert links_of(b, [0, 1], [0, 1], replace(null, links="mutual")) == [(0, 0)]
    assert links_of(a, [0, 0], [0, 1], replace(null, words="subword")) == [(0, 0)]  # one word of two pieces
    aligned = align_words(a, [0, 1], [0, 1], null)
    assert aligned.matrix.shape == (2, 2)  # the matrix has the words only, not the eos column
    record = {**SUPERVISED, "null": True}
    assert align_config_for({"alignment": record}).null and not align_config_for({"alignment": SUPERVISED}).null
    assert (
        align_config_for({"alignment": record}).describe() == "layer 1 head 0, full context, null on eos (supervised)"
    )
    assert not align_config_for({"alignment": record}, head=1).null  # another head: not the trained one
    assert align_config_for({"alignment": record}, words="sum").null  # the same head, pooled otherwise
    with pytest.raises(UserError, match="malformed"):
        align_config_for({"alignment": {**SUPERVISED, "null": "yes"}})


def test_layer_and_head_selection():
    a = torch.zeros(2, 3, 2, 3)
    a[1, 2, :, 0] = 1.0  # only layer 1 head 2 looks at source 0
    a[:, :, :, 1] = 0.5
    assert links_of(a, [0, 1], [0], AlignConfig(layer=1, head=2, shift=False)) == [(0, 0)]
    assert links_of(a, [0, 1], [0], AlignConfig(layer=0, head=None, shift=False)) == [(1, 0)]
    assert links_of(a, [0, 1], [0], AlignConfig(layer=-1, head=-1, shift=False)) == [(0, 0)]
    assert word_matrix(a, [], [0], AlignConfig()).numel() == 0


# Symmetrization ---------------------------------------------------------------------------
F = {(0, 0), (1, 1), (3, 3)}
B = {(0, 0), (1, 1), (3, 2), (2, 3)}


def test_symmetrize_by_hand():
    assert symmetrize(F, B, "intersection") == [(0, 0), (1, 1)]
    assert symmetrize(F, B, "union") == [(0, 0), (1, 1), (2, 3), (3, 2), (3, 3)]
    # nothing in the union touches the intersection's neighbourhood: grow-diag adds nothing
    assert symmetrize(F, B, "grow-diag") == [(0, 0), (1, 1)]
    # final: 3-3 (both unaligned), then 2-3 (source 2 unaligned), 3-2 (target 2 unaligned)
    assert symmetrize(F, B, "grow-diag-final") == [(0, 0), (1, 1), (2, 3), (3, 2), (3, 3)]
    # final-and: only points whose source and target are both unaligned: 3-3
    assert symmetrize(F, B, "grow-diag-final-and") == [(0, 0), (1, 1), (3, 3)]


def test_grow_diag_adds_diagonal_neighbours():
    f = {(0, 0), (1, 1)}
    b = {(0, 0), (2, 2), (1, 2), (4, 0)}
    # I = {0-0}. 1-1 is its diagonal neighbour (source 1 unaligned) -> add. Neighbours of 1-1 in
    # Koehn's order: 1-2 (target 2 unaligned) -> add; 2-2 (source 2 unaligned) -> add.
    # 4-0 touches no aligned point: only the final step adds it (source 4 unaligned).
    assert symmetrize(f, b, "grow-diag") == [(0, 0), (1, 1), (1, 2), (2, 2)]
    assert sorted(grow_diag_final(f, b)) == [(0, 0), (1, 1), (1, 2), (2, 2), (4, 0)]
    assert sorted(grow_diag_final(f, b, final_and=True)) == [(0, 0), (1, 1), (1, 2), (2, 2)]
    assert invert([(0, 1), (2, 0)]) == [(0, 2), (1, 0)]
    assert format_links([(2, 0), (0, 1)]) == "0-1 2-0"


# With a (tiny, untrained) model --------------------------------------------------------------
# The record a model trained with train.align_weight > 0 and model.align_full_context=true carries.
SUPERVISED = {"layer": 1, "heads": [0], "shift": False, "full_context": True, "source": "supervised"}


def toy_model_file(path: Path, alignment: dict | None = None) -> Path:
    """An untrained tiny en->de model (2 decoder layers, 2 heads) with the toy tokenizer, as a
    model file; `alignment`: its "alignment" record (mt.checkpoint.AligningHeads)."""
    from mt.checkpoint import pack

    src, tgt = read_lines(TOY / "train.en"), read_lines(TOY / "train.de")
    tok = Tokenizer.train(src, tgt, DataConfig(name="toy", vocab_size=64))
    ckpt = pack(tiny_model(vocab=tok.src_vocab_size, heads=2), tok, "en", "de")
    if alignment is not None:
        ckpt["alignment"] = alignment
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory) -> Path:
    return toy_model_file(tmp_path_factory.mktemp("align") / "toy.pt")


def with_record(source: Path, path: Path, alignment: dict | None) -> Path:
    """A copy of the model file `source` with another (or no) alignment record."""
    ckpt = torch.load(source, weights_only=True)
    ckpt.pop("alignment", None)
    if alignment is not None:
        ckpt["alignment"] = alignment
    torch.save(ckpt, path)
    return path


def test_teacher_forced_attention_matches_decoding(toy_checkpoint):
    """Forcing the model's own greedy output reproduces the attention the decoder recorded."""
    from mt.checkpoint import load

    loaded = load(toy_checkpoint)
    tok = loaded.tokenizer
    src = tok.encode_src(["Now the cat sits at the beach .", "A woman plays ."])
    hyps = translate_ids(loaded.model, src, DecodeConfig(beam_size=1, max_len_b=3), need_attention=True)
    outs = [h[0].tokens for h in hyps]
    forced = teacher_forced_attention(loaded.model, src, outs)
    for s, h, f in zip(src, hyps, forced):
        assert f.shape == (2, 2, len(h[0].tokens) + 1, len(s) + 1)
        assert torch.allclose(f, h[0].attention, atol=1e-5)


def test_align_pairs_gives_one_link_per_target_word(toy_checkpoint):
    from mt.checkpoint import load

    loaded = load(toy_checkpoint)
    links = align_pairs(
        loaded, ["the cat sits", "a", ""], ["die katze sitzt hier", "eine", "x"], AlignConfig(words="sum")
    )
    assert [len(x) for x in links] == [4, 1, 0]
    assert sorted(j for _, j in links[0]) == [0, 1, 2, 3] and all(0 <= i < 3 for i, _ in links[0])
    texts, own = align_translations(
        loaded, ["the cat sits"], AlignConfig(layer=0, head=1, words="max"), DecodeConfig(beam_size=2)
    )
    assert len(own[0]) == len(texts[0].split()) > 0


def test_cli_extract_score_sweep(toy_checkpoint, tmp_path, capsys):
    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    src.write_text("the cat sits .\na woman\n")
    tgt.write_text("die katze sitzt .\neine frau\n")
    gold = tmp_path / "gold"
    gold.write_text("1-1 2-2 3-3 4p4\n1-1 2-2\n")  # one-based
    hyp = tmp_path / "hyp"
    pairs = ["--checkpoint", str(toy_checkpoint), "--src", str(src), "--tgt", str(tgt)]
    main([*pairs, "--layer", "mean", "--head", "1", "--no-shift", "--words", "sum", "--output", str(hyp)])
    lines = hyp.read_text().splitlines()
    assert len(lines) == 2 and all(len(line.split()) == n for line, n in zip(lines, (4, 2)))
    main([*pairs, "--reverse-checkpoint", str(toy_checkpoint), "--symmetrize", "intersection"])
    assert len(capsys.readouterr().out.splitlines()) == 2
    from mt.checkpoint import load

    words = all_alignments(
        *pairs_attention(load(toy_checkpoint), read_lines(src), read_lines(tgt), AlignConfig()), AlignConfig()
    )
    main(pairs)
    assert capsys.readouterr().out.splitlines() == [format_links(w.links) for w in words]
    main([*pairs, "--links", "mutual"])
    mutual = [format_links(mutual_links(w.matrix)) for w in words]
    assert capsys.readouterr().out.splitlines() == mutual != [format_links(w.links) for w in words]
    main([*pairs, "--reverse-checkpoint", str(toy_checkpoint), "--symmetrize", "mutual-of-mean"])
    backward = all_alignments(
        *pairs_attention(load(toy_checkpoint), read_lines(tgt), read_lines(src), AlignConfig()), AlignConfig()
    )
    expected = [format_links(mutual_of_mean(f.matrix, b.matrix)) for f, b in zip(words, backward)]
    assert capsys.readouterr().out.splitlines() == expected and all(expected)
    main(["score", "--gold", str(gold), "--hyp", str(hyp), "--gold-one-based"])
    assert "AER" in capsys.readouterr().out
    out_json = tmp_path / "sweep.json"
    main(["sweep", *pairs, "--gold", str(gold), "--gold-one-based", "--json", str(out_json)])
    table = capsys.readouterr().out
    assert "best:" in table
    rows = json.loads(out_json.read_text())["rows"]
    assert len(rows) == 3 * 2 * 3 * 3  # words x shift x (2 layers + mean) x (2 heads + mean)
    assert all(0.0 <= r["aer"] <= 1.0 for r in rows)
    reverse = ["--reverse-checkpoint", str(toy_checkpoint)]
    main(["sweep", *pairs, "--gold", str(gold), "--gold-one-based", *reverse, "--json", str(out_json)])
    rows = json.loads(out_json.read_text())["rows"]
    systems = {"forward", "reverse", "intersection", "union", "grow-diag-final", "grow-diag-final-and"}
    assert {r["system"] for r in rows} == systems
    by = {(r["system"], r["layer"], r["head"], r["shift"]): r for r in rows}
    for key in [("mean", "mean", True), (0, 1, False)]:  # intersection never has more links than a direction
        assert by[("intersection", *key)]["hyp_links"] <= by[("forward", *key)]["hyp_links"]
        assert by[("union", *key)]["hyp_links"] >= by[("forward", *key)]["hyp_links"]
    capsys.readouterr()
    out = str(tmp_path / "img" / "p{n}.png")
    main(["plot", *pairs, "--gold", str(gold), "--gold-one-based", "--lines", "1", "--out", out])
    assert (tmp_path / "img" / "p1.png").stat().st_size > 1000


def test_cli_user_errors_are_one_line(toy_checkpoint, tmp_path, capsys):
    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    src.write_text("a\nb\n")
    tgt.write_text("a\n")
    gold = tmp_path / "gold"
    gold.write_text("0-0\n")
    model = ["--checkpoint", str(toy_checkpoint)]
    for argv, message in [
        ([*model, "--src", str(src), "--tgt", str(tgt)], "has 2 lines"),
        ([*model, "--src", str(tmp_path / "nope"), "--tgt", str(tgt)], "not found"),
        ([*model, "--src", str(src), "--tgt", str(src), "--layer", "7"], "out of range"),
        (
            [*model, "--src", str(src), "--translations", str(tmp_path / "h"), "--beam", "0"],
            "--beam must be at least 1",
        ),
        ([*model, "--src", str(src), "--tgt", str(src), "--threads", "-1"], "--threads must be >= 0"),
        (["plot", *model, "--src", str(src), "--tgt", str(src), "--lines", "3"], "--lines 3"),
        (["plot", *model, "--src", str(src), "--tgt", str(src), "--lines", "1", "--gold", str(gold)], "has 1 lines"),
        (["score", "--gold", str(src), "--hyp", str(src)], "cannot read"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def refused(argv: list[str], capsys) -> tuple[str, str]:
    """Run the CLI expecting a user error: exit status 2 and one line on stderr; (stdout, that line)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return out, err.strip()


def toy_pairs(tmp_path: Path, gold: str = "1-1 2-2 3-3 4p4\n1-1 2-2\n") -> tuple[Path, Path, Path]:
    src, tgt, gold_file = tmp_path / "s.txt", tmp_path / "t.txt", tmp_path / "gold"
    src.write_text("the cat sits .\na woman\n")
    tgt.write_text("die katze sitzt .\neine frau\n")
    gold_file.write_text(gold)  # one-based
    return src, tgt, gold_file


def test_cli_unwritable_outputs_are_refused_before_the_work(toy_checkpoint, tmp_path, capsys):
    src, tgt, gold = toy_pairs(tmp_path)
    (tmp_path / "hyp").write_text("0-0\n1-1\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("x\n")
    nowhere = str(blocker / "x")  # under a file: its directory cannot be made
    pairs = ["--checkpoint", str(toy_checkpoint), "--src", str(src), "--tgt", str(tgt)]
    score = ["score", "--gold", str(gold), "--gold-one-based", "--hyp", str(tmp_path / "hyp")]
    sweep = ["sweep", *pairs, "--gold", str(gold), "--gold-one-based"]
    own = ["--checkpoint", str(toy_checkpoint), "--src", str(src)]
    for argv in [
        [*score, "--json", nowhere],
        [*sweep, "--json", nowhere],
        [*pairs, "--output", nowhere],
        [*own, "--translations", nowhere],
        [*own, "--translations", str(tmp_path / "h"), "--output", nowhere],
        ["plot", *pairs, "--lines", "1", "2", "--out", str(blocker / "{n}.png")],
    ]:
        out, err = refused(argv, capsys)
        assert err.startswith("mt.align: error: cannot write " + str(blocker)), err
        assert out == ""  # no table, no "links from ..." line: refused before the model ran
    _, err = refused([*score, "--json", str(tmp_path)], capsys)
    assert err.endswith(f"cannot write {tmp_path}: it is a directory")
    _, err = refused(["plot", *pairs, "--lines", "1", "--out", str(tmp_path / "p.xyz")], capsys)
    assert ".xyz is not an image format" in err
    assert not (tmp_path / "h").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "a-file",
        "gold",
        "hyp",
        "s.txt",
        "t.txt",
    ]  # nothing half-written, no temp file left

    gold_dir = tmp_path / "gold-dir"
    gold_dir.mkdir()
    (gold_dir / "hansards.src-tgt").write_text("a b ||| c d\n")
    prepare = ["prepare-gold", "--gold-dir", str(gold_dir), "--out"]
    assert refused([*prepare, str(blocker)], capsys)[1].endswith(
        f"cannot write {blocker}: it is a file, and --out names a directory"
    )
    assert "cannot write " + str(blocker / "x" / "hansards.en") in refused([*prepare, nowhere], capsys)[1]
    main([*prepare, str(tmp_path / "out")])
    assert (tmp_path / "out" / "hansards.fr").read_text() == "c d\n"


def test_cli_outputs_never_replace_an_input_or_each_other(toy_checkpoint, tmp_path, capsys):
    src, tgt, gold = toy_pairs(tmp_path)
    before = {path: path.read_bytes() for path in (src, tgt, gold)}
    pairs = ["--checkpoint", str(toy_checkpoint), "--src", str(src), "--tgt", str(tgt)]
    for argv, option in [
        ([*pairs, "--output", str(src)], "--output"),
        ([*pairs, "--output", str(toy_checkpoint)], "--output"),
        (["score", "--gold", str(gold), "--hyp", str(gold), "--gold-one-based", "--json", str(gold)], "--json"),
        (["sweep", *pairs, "--gold", str(gold), "--gold-one-based", "--json", str(tgt)], "--json"),
        (["--checkpoint", str(toy_checkpoint), "--src", str(src), "--translations", str(src)], "--translations"),
    ]:
        _, err = refused(argv, capsys)
        assert f"{option} " in err and "is also an input of this command" in err
    assert {path: path.read_bytes() for path in before} == before
    same = str(tmp_path / "x")
    own = ["--checkpoint", str(toy_checkpoint), "--src", str(src), "--translations", same]
    assert "--output " + same + " is also --translations" in refused([*own, "--output", same], capsys)[1]
    assert "--translations goes without --tgt" in refused([*pairs, "--translations", same], capsys)[1]
    assert not (tmp_path / "x").exists()


def test_gold_links_outside_their_sentence_pair_are_refused(toy_checkpoint, tmp_path, capsys):
    src, tgt, gold = toy_pairs(tmp_path, "0-0 1-1\n0-0 9-9\n")  # the second pair has 2 x 2 words
    pairs = ["--checkpoint", str(toy_checkpoint), "--src", str(src), "--tgt", str(tgt), "--gold", str(gold)]
    expected = f"{gold} line 2: link 9-9 is outside the 2 x 2 words of that sentence pair"
    out, err = refused(["sweep", *pairs], capsys)
    assert err.endswith(expected) and out == ""
    assert refused(["plot", *pairs, "--lines", "1"], capsys)[1].endswith(expected)
    # As the file writes them: one-based (2-3 is source word 1, target word 2) and target-source.
    gold.write_text("1-1 2-2\n1-1 2p3\n")
    assert "line 2: link 2p3 is outside the 2 x 2 words" in refused(["sweep", *pairs, "--gold-one-based"], capsys)[1]
    gold.write_text("0-0\n0-0 1-2\n")
    assert "line 2: link 1-2 is outside" in refused(["sweep", *pairs, "--gold-reversed"], capsys)[1]
    gold.write_text("3-0\n0-0\n")  # target word 3 of 4, source word 0: in range only read target-source
    main(["sweep", *pairs, "--gold-reversed"])
    assert "best:" in capsys.readouterr().out
    with pytest.raises(UserError, match="g line 1: link 3p0 is outside the 2 x 4 words"):  # target x source
        check_gold_ranges([GoldLine(set(), {(0, 3)})], "g", ["a b c d"], ["x y"], reversed_=True)


def test_scoring_against_gold_without_links_is_refused(tmp_path, capsys):
    empty, hyp = tmp_path / "empty", tmp_path / "hyp"
    empty.write_text("")
    hyp.write_text("")
    assert refused(["score", "--gold", str(empty), "--hyp", str(hyp)], capsys)[1].endswith(
        f"{empty} has no gold links to score against"
    )
    empty.write_text("\n\n")
    hyp.write_text("0-0\n\n")
    assert "no gold links" in refused(["score", "--gold", str(empty), "--hyp", str(hyp)], capsys)[1]


def test_plot_of_several_lines_needs_n_in_the_file_name(toy_checkpoint, tmp_path, capsys):
    src, tgt, _ = toy_pairs(tmp_path)
    plot = ["plot", "--checkpoint", str(toy_checkpoint), "--src", str(src), "--tgt", str(tgt), "--lines"]
    same = tmp_path / "same.png"
    _, err = refused([*plot, "1", "2", "--out", str(same)], capsys)
    assert f"--out {same} names one file for 2 lines: put {{n}}" in err and not same.exists()
    assert "only field" in refused([*plot, "1", "--out", str(tmp_path / "{x}.png")], capsys)[1]
    main([*plot, "2", "1", "2", "--out", str(tmp_path / "p{n}.svg")])  # a line asked for twice is drawn once
    assert capsys.readouterr().out.splitlines() == [f"wrote {tmp_path / 'p2.svg'}", f"wrote {tmp_path / 'p1.svg'}"]
    assert (tmp_path / "p1.svg").read_text().lstrip().startswith("<?xml")
    main([*plot, "1", "--out", str(same)])  # one line: no {n} needed
    assert same.read_bytes().startswith(b"\x89PNG")


def test_read_gold_pairs(tmp_path):
    path = tmp_path / "g"
    path.write_text("oh , oh !   ||| oh , oh !  \n2 .   ||| 2 .\n")
    assert read_gold_pairs(path) == (["oh , oh !", "2 ."], ["oh , oh !", "2 ."])


# Aligning heads recorded in a checkpoint ---------------------------------------------------------
def test_align_config_for_reads_the_record_and_options_override_it():
    assert (
        align_config_for({}) == AlignConfig() and align_config_for(None).describe() == "layer mean head mean (default)"
    )
    cfg = align_config_for({"alignment": SUPERVISED})
    assert (cfg.layer, cfg.head, cfg.shift, cfg.full_context, cfg.words) == (1, 0, False, True, "max")
    assert cfg.describe() == "layer 1 head 0, full context (supervised)"
    swept = align_config_for({"alignment": {**SUPERVISED, "heads": [0, 2], "source": "sweep", "aer": 0.4}})
    assert swept.heads() == [0, 2] and swept.describe() == "layer 1 heads 0,2, full context (sweep)"
    assert align_config_for({"alignment": SUPERVISED}, layer=1).origin == "supervised"  # the same layer
    other = align_config_for({"alignment": SUPERVISED}, head=None, words="sum")
    assert (other.layer, other.head, other.full_context, other.words, other.origin) == (1, None, True, "sum", "options")
    assert align_config_for({}, layer=0).describe() == "layer 0 head mean (options)"
    with pytest.raises(UserError, match="malformed"):
        align_config_for({"alignment": {"layer": "1", "heads": []}})


def test_a_head_list_averages_those_heads():
    attention = torch.rand(2, 3, 4, 5)
    assert torch.allclose(select(attention, AlignConfig(layer=1, head=[0, 2])), attention[1, [0, 2]].mean(0))
    assert torch.equal(select(attention, AlignConfig(layer=0, head=1)), attention[0, 1])
    check_config(AlignConfig(layer=-1, head=[0, 2]), 2, 3)
    for cfg, message in [(AlignConfig(head=[0, 3]), "--head 3"), (AlignConfig(head=[]), "no head")]:
        with pytest.raises(UserError, match=message):
            check_config(cfg, 2, 3)


def test_full_context_reads_the_decoder_without_its_causal_mask(toy_checkpoint):
    from mt.checkpoint import load

    loaded = load(toy_checkpoint)
    tok = loaded.tokenizer
    src, tgt = tok.encode_src(["the cat sits ."]), tok.encode_tgt(["die katze sitzt ."])
    causal = teacher_forced_attention(loaded.model, src, tgt)[0]
    full = teacher_forced_attention(loaded.model, src, tgt, full_context=True)[0]
    assert full.shape == causal.shape and not torch.allclose(full, causal)
    # Layer 0's last step (predicting eos) sees the whole target either way.
    assert torch.allclose(full[0, :, -1], causal[0, :, -1], atol=1e-5)

    # A freely decoded translation is re-read teacher-forced for a full-context config.
    hyps = translate_ids(loaded.model, src, DecodeConfig(beam_size=2, max_len_b=3), need_attention=False)
    cfg = AlignConfig(layer=1, head=0, full_context=True)
    reread = reread_best(loaded.model, src, hyps, cfg)
    expected = teacher_forced_attention(loaded.model, src, [hyps[0][0].tokens], full_context=True)[0]
    assert torch.equal(reread[0][0].attention, expected) and reread[0][0].tokens == hyps[0][0].tokens
    assert reread_best(loaded.model, src, hyps, AlignConfig()) == hyps


# Word units: punctuation at a word's ends is a word of its own (translations, not gold) --------------
def test_unit_texts_keep_the_words_own_spelling():
    assert unit_texts("cream.", ["▁cream", "."], [0, 1]) == ["cream", "."]
    assert unit_texts('("Zürich").', ["▁(", '"', "Z", "<unk>", "rich", '")', "."], [0, 1, 2, 2, 2, 3, 4]) == [
        "(",
        '"',
        "Zürich",
        '")',
        ".",
    ]
    assert unit_texts("don't", ["▁don", "'", "t"], [0, 0, 0]) == ["don't"]
    assert unit_texts("x", [], []) == []


def test_sources_and_translations_are_read_as_word_units(toy_checkpoint):
    from mt.checkpoint import load

    tok = load(toy_checkpoint).tokenizer
    words = ["Zürich.", "the", "cat", "sits."]
    (units,) = encode_units(tok, [words])
    assert units.words == ["Zürich", ".", "the", "cat", "sits", "."]
    assert units.ids == encode_sentences(tok.encode_src, [words])[0][0]  # the same pieces, grouped anew
    assert units.unit_ids == sorted(units.unit_ids) and set(units.unit_ids) == set(range(6))

    tokens = tok.encode_tgt(["die katze."])[0]
    hyp = Hypothesis(tokens, 0.0, 0.0, torch.rand(2, 2, len(tokens) + 1, 4))
    aligned = align_hypothesis(tok, ["the", "cat", "."], [0, 1, 2], hyp, AlignConfig())
    assert aligned.tgt_words == ["die", "katze", "."] and sorted(j for _, j in aligned.links) == [0, 1, 2]


def test_cli_reads_the_recorded_heads_and_options_override_them(toy_checkpoint, tmp_path, capsys):
    from mt.checkpoint import load

    ckpt = with_record(toy_checkpoint, tmp_path / "sup.pt", SUPERVISED)
    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    src.write_text("the cat sits .\na woman\n")
    tgt.write_text("die katze sitzt .\neine frau\n")
    pairs = ["--checkpoint", str(ckpt), "--src", str(src), "--tgt", str(tgt)]
    main(pairs)
    out, err = capsys.readouterr()
    assert "links from layer 1 head 0, full context (supervised), words max" in err
    expected = align_pairs(load(ckpt), read_lines(src), read_lines(tgt), AlignConfig(1, 0, full_context=True))
    assert out.splitlines() == [format_links(x) for x in expected]
    main([*pairs, "--head", "mean", "--layer", "0"])
    assert "links from layer 0 head mean, full context (options)" in capsys.readouterr().err

    # Own translations: the words written are word units, on both sides.
    hyp, words, links = tmp_path / "hyp.txt", tmp_path / "src-words.txt", tmp_path / "hyp.align"
    (tmp_path / "raw.txt").write_text("the cat sits.\n")
    main(
        ["--checkpoint", str(ckpt), "--src", str(tmp_path / "raw.txt"), "--translations", str(hyp)]
        + ["--source-words", str(words), "--output", str(links), "--beam", "2"]
    )
    assert words.read_text() == "the cat sits .\n"
    n_src, n_tgt = 4, len(hyp.read_text().split())
    pairs_out = [tuple(map(int, x.split("-"))) for x in links.read_text().split()]
    assert sorted({j for _, j in pairs_out}) == list(range(n_tgt)) and all(i < n_src for i, _ in pairs_out)


def sweep_args(ckpt: Path, tmp_path: Path) -> list[str]:
    src, tgt, gold = tmp_path / "s.txt", tmp_path / "t.txt", tmp_path / "gold"
    src.write_text("the cat sits .\na woman\n")
    tgt.write_text("die katze sitzt .\neine frau\n")
    gold.write_text("1-1 2-2 3-3 4p4\n1-1 2-2\n")
    return ["sweep", "--checkpoint", str(ckpt), "--src", str(src), "--tgt", str(tgt), "--gold", str(gold)] + [
        "--gold-one-based",
        "--json",
        str(tmp_path / "sweep.json"),
    ]


def test_sweep_save_records_the_best_single_layer_cell(toy_checkpoint, tmp_path, capsys):
    from mt.checkpoint import load

    ckpt = with_record(toy_checkpoint, tmp_path / "m.pt", None)
    main([*sweep_args(ckpt, tmp_path), "--save"])
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    cells = [r for r in rows if r["system"] == "forward" and r["layer"] != "mean" and r["words"] == "max"]
    best = min(cells, key=lambda r: r["aer"])
    saved = torch.load(ckpt, weights_only=True)
    record = saved["alignment"]
    assert record == heads_record(best, 2, False) and record["source"] == "sweep" and record["aer"] == best["aer"]
    assert isinstance(record["layer"], int) and record["heads"] in ([0], [1], [0, 1])
    assert f"saved to {ckpt}" in out
    original = torch.load(toy_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(saved["model"][k], v) for k, v in original.items())  # only the record changed
    assert align_config_for(load(ckpt).ckpt).origin == "sweep"
    assert not list(tmp_path.glob(".m.pt.*"))  # no temp file left behind


def test_sweep_save_keeps_supervised_heads_unless_forced(toy_checkpoint, tmp_path, capsys):
    ckpt = with_record(toy_checkpoint, tmp_path / "sup.pt", SUPERVISED)
    before = ckpt.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main([*sweep_args(ckpt, tmp_path), "--save"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "--force" in err
    assert out == "" and ckpt.read_bytes() == before  # refused before sweeping
    main([*sweep_args(ckpt, tmp_path), "--save", "--force"])
    record = torch.load(ckpt, weights_only=True)["alignment"]
    assert record["source"] == "sweep" and record["full_context"] is True  # read as the model was trained


def test_sweep_save_refuses_a_checkpoint_that_changed_meanwhile(toy_checkpoint, tmp_path):
    from mt.align.cli import file_stamp, save_best

    ckpt = with_record(toy_checkpoint, tmp_path / "m.pt", None)
    stamp = file_stamp(ckpt)
    os.utime(ckpt, ns=(stamp[0] + 10**9, stamp[0] + 10**9))  # as if a training run had saved it again
    row = {"system": "forward", "layer": 0, "head": 1, "shift": False, "words": "max", "aer": 0.5}
    with pytest.raises(UserError, match="changed while the sweep ran"):
        save_best([row], 2, False, torch.load(ckpt, weights_only=True), ckpt, stamp)


def test_align_report_scores_every_rule_and_combination(toy_checkpoint, tmp_path):
    """scripts/align_report.py: each direction under both link rules, the three combinations of each
    rule's links and mutual-of-mean, each as the library computes it."""
    import subprocess
    import sys

    from mt.align.gold import read_alignment_file
    from mt.checkpoint import load

    from .conftest import ROOT

    en, fr = ["the cat sits .", "a woman plays"], ["die katze sitzt .", "eine frau spielt"]
    (tmp_path / "s.txt").write_text("\n".join(en) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(fr) + "\n")
    (tmp_path / "gold").write_text("1-1 2-2 3-3 4p4\n1-1 2-2 3-3\n")
    out = tmp_path / "report.json"
    files = ["--src", str(tmp_path / "s.txt"), "--tgt", str(tmp_path / "t.txt"), "--gold", str(tmp_path / "gold")]
    ckpt = ["--forward", str(toy_checkpoint), "--reverse", str(toy_checkpoint)]
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "align_report.py"), *ckpt, *files, "--json", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    scores = json.loads(out.read_text())["scores"]
    combos = [f"{m} ({r})" for r in ("argmax", "mutual") for m in ("intersection", "union", "grow-diag-final-and")]
    directions = [f"{d} {r}" for d in ("en->fr", "fr->en") for r in ("argmax", "mutual")]
    assert list(scores) == [*directions[:2], *directions[2:], *combos, "mutual-of-mean"]
    gold = read_alignment_file(str(tmp_path / "gold"), one_based=True)
    model = load(toy_checkpoint)
    attention = {
        "fwd": pairs_attention(model, en, fr, AlignConfig()),
        "rev": pairs_attention(model, fr, en, AlignConfig()),
    }
    for rule in ("argmax", "mutual"):
        fwd, rev = (all_alignments(*attention[d], AlignConfig(links=rule)) for d in ("fwd", "rev"))
        assert scores[f"en->fr {rule}"]["hyp_links"] == aer(gold, [w.links for w in fwd]).hyp_links
        for method in ("intersection", "union", "grow-diag-final-and"):
            expected = aer(gold, [symmetrize(f.links, invert(r.links), method) for f, r in zip(fwd, rev)])
            got = scores[f"{method} ({rule})"]
            assert (got["hyp_links"], got["aer"]) == (expected.hyp_links, pytest.approx(expected.aer)), (method, rule)
    expected = aer(gold, [mutual_of_mean(f.matrix, r.matrix) for f, r in zip(fwd, rev)])
    assert scores["mutual-of-mean"]["hyp_links"] == expected.hyp_links
    # the two rules' combinations differ on this model, so a mix-up of rules cannot pass
    assert scores["union (argmax)"]["hyp_links"] != scores["union (mutual)"]["hyp_links"]


def test_align_report_averages_the_attention_of_several_checkpoints(toy_checkpoint, tmp_path):
    """`--forward A B`: each pair's attention is the mean of the two models' before links are read;
    a checkpoint that reads the gold another way (other aligning heads) is refused in one line."""
    import subprocess
    import sys

    from mt.align.gold import read_alignment_file
    from mt.checkpoint import load

    from .conftest import ROOT

    ckpt = torch.load(toy_checkpoint, weights_only=True)
    noise = torch.Generator().manual_seed(0)
    ckpt["model"] = {
        k: v + 0.5 * torch.randn(v.shape, generator=noise) if v.is_floating_point() else v
        for k, v in ckpt["model"].items()
    }
    other = tmp_path / "other.pt"
    torch.save(ckpt, other)
    en = ["the cat sits .", "a woman plays", "now the cat sits at the beach ."]
    fr = ["die katze sitzt .", "eine frau spielt", "jetzt sitzt die katze am strand ."]
    (tmp_path / "s.txt").write_text("\n".join(en) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(fr) + "\n")
    (tmp_path / "gold").write_text("1-1 2-2 3-3 4p4\n1-1 2-2 3-3\n1-1 2-4 3-3 4-2 5-5 6-6 7-6 8-7\n")
    files = ["--src", str(tmp_path / "s.txt"), "--tgt", str(tmp_path / "t.txt"), "--gold", str(tmp_path / "gold")]
    script = [sys.executable, str(ROOT / "scripts" / "align_report.py"), *files]

    def report(*checkpoints: Path, reverse: tuple[Path, ...] = ()) -> dict:
        out = tmp_path / "report.json"
        both = ["--reverse", *map(str, reverse)] if reverse else []
        run = subprocess.run(
            [*script, "--forward", *map(str, checkpoints), *both, "--json", str(out)], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        return json.loads(out.read_text())["scores"]

    gold = read_alignment_file(str(tmp_path / "gold"), one_based=True)
    att_a, enc = pairs_attention(load(toy_checkpoint), en, fr, AlignConfig())
    att_b, _ = pairs_attention(load(other), en, fr, AlignConfig())
    readings = {"a": att_a, "b": att_b, "mean": [(a + b) / 2 for a, b in zip(att_a, att_b)]}
    scores = report(toy_checkpoint, other)
    for rule in ("argmax", "mutual"):
        links = {
            name: [w.links for w in all_alignments(att, enc, AlignConfig(links=rule))] for name, att in readings.items()
        }
        expected = aer(gold, links["mean"])
        got = scores[f"en->fr {rule}"]
        assert (got["hyp_links"], got["aer"]) == (expected.hyp_links, pytest.approx(expected.aer)), rule
        assert "mean of 2 checkpoints" in got["read_from"]
        # the mean is neither model's reading, so a report of one of them alone cannot pass
        assert links["mean"] != links["a"] and links["mean"] != links["b"], rule
    assert report(toy_checkpoint, toy_checkpoint)["en->fr argmax"] == {
        **report(toy_checkpoint)["en->fr argmax"],
        "read_from": scores["en->fr argmax"]["read_from"],
    }
    # A mean, not a sum: with two checkpoints forward and one reverse, mutual-of-mean (the one reading
    # that is not scale-invariant) matches the two directions' matrices only if the forward sum is halved.
    reverse_att, reverse_enc = pairs_attention(load(other), fr, en, AlignConfig())
    fwd = all_alignments(readings["mean"], enc, AlignConfig())
    rev = all_alignments(reverse_att, reverse_enc, AlignConfig())
    halved = [mutual_of_mean(f.matrix, r.matrix) for f, r in zip(fwd, rev)]
    assert halved != [mutual_of_mean(2 * f.matrix, r.matrix) for f, r in zip(fwd, rev)]
    got = report(toy_checkpoint, other, reverse=(other,))["mutual-of-mean"]
    assert (got["hyp_links"], got["aer"]) == (aer(gold, halved).hyp_links, pytest.approx(aer(gold, halved).aer))
    headed = with_record(toy_checkpoint, tmp_path / "headed.pt", SUPERVISED)
    run = subprocess.run([*script, "--forward", str(toy_checkpoint), str(headed)], capture_output=True, text=True)
    assert run.returncode == 2 and "not one run" in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_eflomal_spread_is_mean_and_sample_sd_in_percent():
    """scripts/baseline_eflomal.py --runs N: each system's AER mean and sample standard deviation over
    the runs (eflomal samples and takes no seed, so one run is one draw)."""
    import importlib.util

    from mt.align.gold import Score

    from .conftest import ROOT

    spec = importlib.util.spec_from_file_location("baseline_eflomal", ROOT / "scripts" / "baseline_eflomal.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def score(aer: float, precision: float) -> Score:
        return Score(precision, 0.8, aer, 10, 10, 10, 8, 9)

    runs = [{"forward": score(0.15, 0.84)}, {"forward": score(0.17, 0.86)}, {"forward": score(0.16, 0.85)}]
    row = script.spread(runs)["forward"]
    assert row["aer_mean"] == pytest.approx(16.0)
    assert row["aer_sd"] == pytest.approx(1.0)  # sample sd of 15, 17, 16
    assert (row["aer_min"], row["aer_max"]) == (pytest.approx(15.0), pytest.approx(17.0))
    assert row["precision_mean"] == pytest.approx(85.0) and row["recall_mean"] == pytest.approx(80.0)


def test_baseline_eflomal_runs_twice_and_writes_each_run_and_the_spread(tmp_path):
    """`baseline_eflomal.py --runs 2` end to end on a toy corpus (the real eflomal): each run's links
    in OUT/run<k>, the JSON's runs and spread, no single-draw "scores"; --runs 0 refused in one line."""
    import gzip
    import subprocess
    import sys

    from .conftest import ROOT

    pytest.importorskip("eflomal")
    en = ["the cat sleeps .", "a dog runs .", "the dog sleeps .", "a cat runs ."]
    fr = ["le chat dort .", "un chien court .", "le chien dort .", "un chat court ."]
    data, gold_dir = tmp_path / "m30k", tmp_path / "gold"
    data.mkdir(), gold_dir.mkdir()
    for lang, lines in (("en", en), ("fr", fr)):
        with gzip.open(data / f"train.{lang}.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(lines * 10) + "\n")
    pairs = "the cat runs . ||| le chat court .\na dog sleeps . ||| un chien dort .\n"
    (gold_dir / "hansards.src-tgt").write_text(pairs)
    (gold_dir / "hansards.gold").write_text("1-1 2-2 3-3 4-4\n1-1 2-2 3-3 4-4\n")
    script = [sys.executable, str(ROOT / "scripts" / "baseline_eflomal.py"), "--data", str(data)]
    script += ["--gold-dir", str(gold_dir), "--out", str(tmp_path / "out")]
    run = subprocess.run([*script, "--runs", "2", "--json", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "r.json").read_text())
    assert len(record["runs"]) == 2 and "scores" not in record
    for name in ("forward", "reverse", "intersection"):
        aers = [100 * r[name]["aer"] for r in record["runs"]]
        assert record["spread"][name]["aer_mean"] == pytest.approx(sum(aers) / 2)
        assert (record["spread"][name]["aer_min"], record["spread"][name]["aer_max"]) == (min(aers), max(aers))
    for k in (1, 2):
        lines = (tmp_path / "out" / f"run{k}" / "forward.align").read_text().splitlines()
        assert len(lines) == 2 and all(lines)  # one line of links per gold pair
    # --reuse --vote 2: no eflomal run; the voted forward links are those both runs drew
    again = subprocess.run(
        [*script, "--runs", "2", "--vote", "2", "--reuse", "--json", str(tmp_path / "v.json")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode == 0 and "reused" in again.stdout, again.stderr
    (vote,) = json.loads((tmp_path / "v.json").read_text())["vote"]["groups"]
    drawn = [(tmp_path / "out" / f"run{k}" / "forward.align").read_text().splitlines() for k in (1, 2)]
    both = sum(len(set(a.split()) & set(b.split())) for a, b in zip(*drawn))
    assert vote["forward"]["hyp_links"] == both
    other = subprocess.run([*script, "--runs", "2", "--reuse", "--samplers", "5"], capture_output=True, text=True)
    assert other.returncode == 2 and "was made with" in other.stderr  # links of other settings are not reused
    refused = subprocess.run([*script, "--runs", "0"], capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0 and "--runs" in refused.stderr
