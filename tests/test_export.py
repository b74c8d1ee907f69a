"""mt.export, the portable model folder and `--engine ct2`: an export translates as the checkpoint
it came from (the folder exactly, CTranslate2 float32 to the same token ids), its model card
reports only what the run recorded, and every wrong checkpoint or model is one line and exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from mt import ct2
from mt.checkpoint import load
from mt.config import DataConfig, DecodeConfig, ModelConfig
from mt.decode import translate_ids
from mt.evaluate import main as evaluate_main
from mt.export import export
from mt.export import main as export_main
from mt.fileio import read_lines
from mt.model import Transformer
from mt.model_card import model_card
from mt.tokenizer import Tokenizer
from mt.translate import main as translate_main
from tests.conftest import TOY, tiny_model
from tests.conftest import run_cli as run
from tests.test_align import SUPERVISED, toy_model_file

SENTENCES = read_lines(TOY / "test.en")[:8]
SHORT = DecodeConfig(beam_size=1, max_len_a=0.5, max_len_b=4)  # untrained models never end: keep them short


@pytest.fixture(scope="module")
def toy_pt(tmp_path_factory) -> Path:
    """An untrained tiny model file that records supervised aligning heads."""
    return toy_model_file(tmp_path_factory.mktemp("export") / "toy.pt", SUPERVISED)


@pytest.fixture(scope="module")
def exported(toy_pt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "toy"
    export(toy_pt, out, "float32", force=False)
    return out


@pytest.fixture(scope="module")
def toy_tokenizer() -> Tokenizer:
    return Tokenizer.train(
        read_lines(TOY / "train.en"), read_lines(TOY / "train.de"), DataConfig(name="toy", vocab_size=64)
    )


def test_export_writes_the_folder_and_a_ct2_model(exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["format"] == "mt-model-folder" and config["src_lang"] == "en" and config["tgt_lang"] == "de"
    assert config["alignment"] == SUPERVISED and config["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    weights = load_file(str(exported / "model.safetensors"))
    assert config["tied_weights"] == {  # one table, stored once
        "tgt_embed.tokens.weight": "src_embed.tokens.weight",
        "output.weight": "src_embed.tokens.weight",
    }
    assert not set(config["tied_weights"]) & set(weights) and "src_embed.tokens.weight" in weights
    assert (exported / "spm.joint.model").is_file() and (exported / "README.md").is_file()
    for name in ("model.bin", "config.json", "shared_vocabulary.json", "spm.joint.model", "mt.json"):
        assert (exported / "ct2" / name).is_file(), name
    assert json.loads((exported / "ct2" / "config.json").read_text())["add_source_eos"] is True


def test_the_model_folder_loads_and_translates_exactly_as_the_checkpoint(toy_pt, exported):
    torch.set_num_threads(1)  # two threads beside a training on 2 cores crawl (docs/benchmarks.md)
    original, folder = load(toy_pt), load(exported)
    assert folder.ckpt["alignment"] == SUPERVISED and folder.src_lang == "en"
    assert folder.model.output.weight is folder.model.tgt_embed.tokens.weight  # still tied
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(tensor, folder.model.state_dict()[name]), name
    ids = original.tokenizer.encode_src(SENTENCES)
    assert folder.tokenizer.encode_src(SENTENCES) == ids
    for cfg in (SHORT, DecodeConfig(beam_size=3, n_best=2, max_len_a=0.5, max_len_b=4)):
        ours, theirs = translate_ids(original.model, ids, cfg), translate_ids(folder.model, ids, cfg)
        assert [[(h.tokens, h.score) for h in n] for n in ours] == [[(h.tokens, h.score) for h in n] for n in theirs]


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"norm": "post"},
        {"activation": "gelu"},
        {"positions": "learned"},
        {"encoder_layers": 1, "decoder_layers": 3},
    ],
)
def test_ct2_float32_greedy_gives_our_token_ids(variant, toy_tokenizer, tmp_path):
    """An untrained model's greedy output (it never ends: every token up to the length limit)."""
    torch.set_num_threads(1)
    model = tiny_model(vocab=toy_tokenizer.src_vocab_size, **variant)
    ct2.write_ct2(model, toy_tokenizer, tmp_path / "ct2", "float32", {"src_lang": "en", "tgt_lang": "de"})
    engine = ct2.load_ct2(tmp_path / "ct2", "cpu", threads=1)
    ids = toy_tokenizer.encode_src(SENTENCES)
    ours = [h[0].tokens for h in translate_ids(model, ids, SHORT)]
    assert [h[0].tokens for h in ct2.translate_ids(engine, ids, SHORT)] == ours
    assert len({tuple(t) for t in ours}) > 1  # not one degenerate output for every sentence
    empty, first = ct2.translate_ids(engine, [[], ids[0]], DecodeConfig(beam_size=2, n_best=2, max_len_b=4))
    assert [h.tokens for h in empty] == [[]] and len(first) == 2


def test_ct2_with_separate_vocabularies(tmp_path):
    src, tgt = read_lines(TOY / "train.en"), read_lines(TOY / "train.de")
    tok = Tokenizer.train(src, tgt, DataConfig(name="toy", vocab_size=40, joint_vocab=False))
    torch.manual_seed(0)
    config = ModelConfig(d_model=32, layers=2, heads=4, ffn_dim=64, dropout=0.0, max_positions=64)
    model = Transformer(config, tok.src_vocab_size, tok.tgt_vocab_size, joint_vocab=False).eval()
    ct2.write_ct2(model, tok, tmp_path / "ct2", "float32", {"src_lang": "en", "tgt_lang": "de"})
    assert (tmp_path / "ct2" / "source_vocabulary.json").is_file() and (tmp_path / "ct2" / "spm.tgt.model").is_file()
    engine = ct2.load_ct2(tmp_path / "ct2", "cpu", threads=1)
    ids = tok.encode_src(SENTENCES)
    ours = [h[0].tokens for h in translate_ids(model, ids, SHORT)]
    assert [h[0].tokens for h in ct2.translate_ids(engine, ids, SHORT)] == ours


def test_ct2_hypotheses_are_ranked_by_our_length_penalty(toy_tokenizer):
    """CTranslate2 divides by len ** 1; the raw log-probability is recovered and our GNMT penalty applied."""
    engine = SimpleNamespace(tokenizer=toy_tokenizer)
    piece = ct2.pieces(toy_tokenizer.tgt)[10]
    short, long = [piece, "</s>"], [piece] * 4 + ["</s>"]
    # raw -1.0 and -2.0: CTranslate2's own order puts the long one first (-0.4 > -0.5), ours does not
    result = SimpleNamespace(hypotheses=[long, short], scores=[-2.0 / 5, -1.0 / 2])
    best = ct2._hypotheses(engine, result, DecodeConfig(beam_size=2, n_best=2, length_penalty=1.0))
    assert [h.tokens for h in best] == [[10], [10] * 4]
    assert [h.log_prob for h in best] == pytest.approx([-1.0, -2.0])
    assert [h.score for h in best] == pytest.approx([-1.0 / (7 / 6), -2.0 / (10 / 6)])  # eos counted: 2 and 5
    cut = SimpleNamespace(hypotheses=[[piece] * 3], scores=[-0.3])  # stopped at the limit: no eos
    assert ct2._hypotheses(engine, cut, DecodeConfig(beam_size=1))[0].tokens == [10] * 3


def test_translate_and_evaluate_give_the_same_output_with_every_engine(toy_pt, exported, capsys, tmp_path):
    args = ["--beam", "1", "--threads", "1", *SENTENCES[:3]]
    code, by_file, _ = run(translate_main, ["--checkpoint", str(toy_pt), *args], capsys)
    assert code == 0 and len(by_file.splitlines()) == 3
    assert run(translate_main, ["--checkpoint", str(exported), *args], capsys)[:2] == (0, by_file)
    assert run(translate_main, ["--engine", "ct2", "--model", str(exported), *args], capsys)[:2] == (0, by_file)
    assert run(translate_main, ["--engine", "ct2", "--model", str(exported / "ct2"), *args], capsys)[:2] == (0, by_file)

    files = ["--src", str(TOY / "test.en"), "--ref", str(TOY / "test.de"), "--beam", "1", "--threads", "1"]
    code, ours, _ = run(evaluate_main, ["--checkpoint", str(toy_pt), *files, "--out", str(tmp_path)], capsys)
    code_ct2, theirs, _ = run(evaluate_main, ["--engine", "ct2", "--model", str(exported), *files], capsys)
    assert code == code_ct2 == 0 and ours == theirs and ours.startswith("BLEU = ")
    record = json.loads((exported / "eval" / "test.en.beam1.ct2.json").read_text())
    assert record["engine"] == "ct2" and record["quantization"] == "float32" and record["sentences"] == 30


def test_ct2_refuses_what_needs_attention(exported, capsys):
    for options in (["--show-attention"], ["--plot", "a.png"], ["--format", "json"], ["--layer", "0"]):
        code, out, err = run(translate_main, ["--engine", "ct2", "--model", str(exported), *options, "hi"], capsys)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (options, err)
        assert "leave out --engine ct2" in err and options[0] in err


def _bad_model(case: str, tmp_path: Path, exported: Path) -> Path:
    if case == "random file":
        (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 8)
        return tmp_path / "random.pt"
    if case == "folder without config.json":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    if case == "foreign config.json":
        shutil.copytree(exported, tmp_path / "other", ignore=shutil.ignore_patterns("ct2"))
        (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
        return tmp_path / "other"
    if case == "truncated safetensors":
        shutil.copytree(exported, tmp_path / "cut")
        data = (tmp_path / "cut" / "model.safetensors").read_bytes()
        (tmp_path / "cut" / "model.safetensors").write_bytes(data[: len(data) // 2])
        return tmp_path / "cut"
    assert case == "ct2 folder"
    return exported / "ct2"


@pytest.mark.parametrize("tool", ["translate", "evaluate", "export"])
@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("random file", "not a checkpoint file"),
        ("folder without config.json", "is a directory without checkpoints/best.pt or config.json"),
        ("foreign config.json", "is not an mt model folder's"),
        ("truncated safetensors", "is not a complete mt model folder"),
        ("ct2 folder", "is a CTranslate2 model: translate with it through --engine ct2"),
    ],
)
def test_a_checkpoint_of_the_wrong_kind_is_one_line(tool, case, expect, exported, capsys, tmp_path):
    path = str(_bad_model(case, tmp_path, exported))
    main, argv = {
        "translate": (translate_main, ["--checkpoint", path, "hi"]),
        "evaluate": (
            evaluate_main,
            ["--checkpoint", path, "--src", str(TOY / "test.en"), "--ref", str(TOY / "test.de")],
        ),
        "export": (export_main, ["ct2", "--checkpoint", path, "--out", str(tmp_path / "out")]),
    }[tool]
    code, out, err = run(main, argv, capsys)
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and expect in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["random file", "folder without config.json", "a folder export without ct2/"])
def test_a_ct2_model_of_the_wrong_kind_is_one_line(case, toy_pt, exported, capsys, tmp_path):
    if case == "a folder export without ct2/":
        path = tmp_path / "plain"
        assert run(export_main, ["folder", "--checkpoint", str(toy_pt), "--out", str(path)], capsys)[0] == 0
        assert not (path / "ct2").exists() and (path / "model.safetensors").is_file()
    else:
        path = _bad_model(case, tmp_path, exported)
    for main, extra in (
        (translate_main, ["hi"]),
        (evaluate_main, ["--src", str(TOY / "test.en"), "--ref", str(TOY / "test.de")]),
    ):
        code, out, err = run(main, ["--engine", "ct2", "--model", str(path), *extra], capsys)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert "is not a CTranslate2 model folder" in err and "python -m mt.export ct2" in err


def test_engine_options_that_disagree_are_one_line(exported, toy_pt, capsys):
    cases = [
        (["--engine", "ct2", "hi"], "--engine ct2 needs --model DIR"),
        (["--engine", "ct2", "--model", str(exported), "--checkpoint", str(toy_pt), "hi"], "--checkpoint is for mt's"),
        (["--model", str(exported), "hi"], "--model names a CTranslate2 export for --engine ct2"),
        (["--engine", "ct2", "--model", str(exported), "--threads", "-1", "hi"], "--threads must be >= 0"),
    ]
    for argv, expect in cases:
        code, _, err = run(translate_main, argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and expect in err, (argv, err)


def test_export_never_replaces_what_is_not_an_export(toy_pt, capsys, tmp_path):
    out = tmp_path / "model"
    argv = ["ct2", "--checkpoint", str(toy_pt), "--out", str(out), "--quantization", "int8"]
    assert run(export_main, argv, capsys)[0] == 0
    assert json.loads((out / "ct2" / "mt.json").read_text())["quantization"] == "int8"
    code, _, err = run(export_main, argv, capsys)
    assert code == 2 and "already exists: add --force" in err and len(err.strip().splitlines()) == 1
    (out / "README.md").write_text("old")
    assert run(export_main, [*argv, "--force"], capsys)[0] == 0 and (out / "README.md").read_text() != "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folders left behind

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    code, _, err = run(
        export_main, ["folder", "--checkpoint", str(toy_pt), "--out", str(tmp_path / "notes"), "--force"], capsys
    )
    assert code == 2 and "is not an earlier export" in err and (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    code, _, err = run(export_main, ["folder", "--checkpoint", str(toy_pt), "--out", str(tmp_path / "file")], capsys)
    assert code == 2 and "is a file" in err


@pytest.mark.parametrize("kind", ["folder", "ct2"])
def test_an_out_that_cannot_be_written_is_one_line(kind, toy_pt, capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for out, expect in (
        ("/proc/exp", "cannot write /proc/exp: "),
        (str(tmp_path / "notes.txt" / "exp"), "a folder on its path is a file"),
    ):
        code, stdout, err = run(export_main, [kind, "--checkpoint", str(toy_pt), "--out", out], capsys)
        assert code == 2 and stdout == "" and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("mt.export: error: ") and expect in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def _fake_run(toy_pt: Path, root: Path, tested: str | None) -> Path:
    """A run folder holding the toy model as best.pt (at update 100) and a metrics.json."""
    (root / "checkpoints").mkdir(parents=True)
    ckpt = torch.load(toy_pt, weights_only=True)
    ckpt["train_state"] = {"step": 100, "epoch": 2, "train_seconds": 60.0, "train_tokens": 5000, "history": []}
    ckpt["data_name"] = "toy"
    torch.save(ckpt, root / "checkpoints" / "best.pt")
    history = [{"step": 50, "valid_bleu": 1.0, "valid_chrf": 2.0}, {"step": 100, "valid_bleu": 3.5, "valid_chrf": 9.25}]
    history[1]["valid_aer"] = 0.25
    metrics = {
        "status": "completed",
        "history": history,
        "config": {
            "data": {"name": "toy", "dir": "tests/fixtures/toy", "test": ["test"], "align_gold": {"links": "g.links"}},
            "train": {"lr": 0.003, "seed": 7, "valid_max_sentences": 50},
            "decode": {"beam_size": 3, "length_penalty": 1.0},
        },
        "test_bleu": 12.345,
        "test_chrf": 33.0,
        "bleu_signature": "nrefs:1|case:mixed",
        "chrf_signature": "nrefs:1|nc:6",
    }
    if tested:
        metrics["tested_checkpoint"] = tested
    (root / "metrics.json").write_text(json.dumps(metrics))
    return root / "checkpoints" / "best.pt"


def test_model_card_reports_only_what_the_run_recorded(toy_pt, tmp_path):
    card = model_card(load(toy_pt), toy_pt, "m", "float32")
    assert "No scores" in card and "not exported from a run folder" in card and "TODO" in card

    best = _fake_run(toy_pt, tmp_path / "run", tested=None)
    card = model_card(load(best), best, "m", "int8")
    assert "| test BLEU (test, beam 3, length penalty 1.0) | 12.35 `nrefs:1\\|case:mixed` |" in card
    assert "| validation BLEU / chrF at update 100 (greedy, first 50 sentences) | 3.50 / 9.25 |" in card
    assert "| alignment error rate at update 100 (g.links) | 25.0 % |" in card
    assert "| train.lr | 0.003 |" in card and "**toy**" in card and "int8 weights" in card and "1.00 / 2.00" not in card

    other = _fake_run(toy_pt, tmp_path / "run2", tested="averaged.pt")
    card = model_card(load(other), other, "m", None)
    assert "12.35" not in card and "the run tested averaged.pt, not best.pt" in card and "ct2/" not in card


@pytest.mark.slow
def test_ct2_translates_a_trained_model_as_we_do(trained_run, tmp_path):
    """The toy run's best.pt (trained, so translations end by themselves): CTranslate2 float32 gives
    our token ids, greedy and beam, with the same scores; int8 decodes too."""
    torch.set_num_threads(1)
    best = trained_run / "checkpoints" / "best.pt"
    for quantization in ("float32", "int8"):
        export(best, tmp_path / quantization, quantization, force=False)
    loaded = load(best)
    ids = loaded.tokenizer.encode_src(read_lines(TOY / "test.en"))
    exact = ct2.load_ct2(tmp_path / "float32", "cpu", threads=1)
    for cfg in (DecodeConfig(beam_size=1), DecodeConfig(beam_size=3, n_best=3)):
        ours, theirs = translate_ids(loaded.model, ids, cfg), ct2.translate_ids(exact, ids, cfg)
        assert [n[0].tokens for n in theirs] == [n[0].tokens for n in ours]
        for a, b in zip(ours, theirs):
            # CTranslate2 renormalizes over the tokens it may emit (no <pad>/<s>), which can only raise a
            # hypothesis' score: a little, more for a toy model that still gives those some probability
            # (measured up to 0.0103 per token).
            # Below the top, the two beam searches may keep different runners-up (near-ties, and when
            # finished hypotheses are set aside): each list is only checked for its length and order.
            assert 0 <= b[0].score - a[0].score + 1e-4 < 3e-2
            assert len(b) == len(a) == cfg.n_best
            assert [h.score for h in b] == sorted((h.score for h in b), reverse=True)
        limits = ct2.output_limits(ids, cfg, loaded.model.config.max_positions)
        assert all(len(h[0].tokens) + 1 < limit for h, limit in zip(ours, limits))  # all ended by themselves
    fast = ct2.load_ct2(tmp_path / "int8", "cpu", threads=1)
    assert fast.translator.compute_type.startswith("int8")
    assert all(h and h[0].tokens for h in ct2.translate_ids(fast, ids, DecodeConfig(beam_size=2)))
