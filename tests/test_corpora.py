"""Tab-separated corpora, held-out splits of a one-file corpus, and several corpora in one run."""

from __future__ import annotations

import gzip
import json
import logging
import re
import signal
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from mt.config import CorpusConfig, DataConfig, HeldOutConfig, ModelConfig, validate
from mt.data import held_out_rows, load_corpus, mix_rows, prepare, sentence_keys, training_mix
from mt.errors import UserError

from .conftest import ROOT, TOY, toy_config


def write_tsv(path, lines: list[str]) -> None:
    path.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode("utf-8")))


def tsv_config(tmp_path, **corpus) -> DataConfig:
    settings = {"columns": {"en": 0, "de": 1}, "train": ["pairs"], "valid": ["pairs"], "test": ["pairs"], **corpus}
    return DataConfig(name="tab", format="tsv", dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), **settings)


GOOD = ["Hi.\tHallo!\tCC-BY 2.0 (France) #1", "Run!\tLauf!\tCC-BY 2.0 (France) #2", "Go.\tGeh.\tCC-BY #3"]


def test_tsv_reads_the_named_columns_and_ignores_the_others(tmp_path):
    write_tsv(tmp_path / "pairs.tsv.gz", GOOD)
    train = load_corpus(tsv_config(tmp_path), tsv_config(tmp_path))["train"]
    assert train.column_names == ["src", "tgt"]
    assert list(train) == [
        {"src": "Hi.", "tgt": "Hallo!"},
        {"src": "Run!", "tgt": "Lauf!"},
        {"src": "Go.", "tgt": "Geh."},
    ]
    # Columns are named by language: the other direction reads the same file the other way round.
    cfg = tsv_config(tmp_path, columns={"de": 1, "en": 0})
    cfg.src_lang, cfg.tgt_lang = "de", "en"
    assert load_corpus(cfg, cfg)["train"][0] == {"src": "Hallo!", "tgt": "Hi."}


def test_tsv_header_line_is_skipped(tmp_path):
    (tmp_path / "pairs.tsv").write_text("english\tgerman\nHi.\tHallo!\n", encoding="utf-8")
    cfg = tsv_config(tmp_path, header=True)
    assert list(load_corpus(cfg, cfg)["train"]) == [{"src": "Hi.", "tgt": "Hallo!"}]


BAD = [*GOOD[:2], "Stray\ttab\tin a line\tx", "Empty.\t \tCC", GOOD[2]]


def test_tsv_bad_lines_are_skipped_and_counted_in_one_log_line(tmp_path, caplog):
    write_tsv(tmp_path / "pairs.tsv.gz", BAD)
    with caplog.at_level(logging.WARNING, logger="mt.data"):
        train = load_corpus(tsv_config(tmp_path), tsv_config(tmp_path))["train"]
    assert train["src"] == ["Hi.", "Run!", "Go."]
    warnings = [r.getMessage() for r in caplog.records if "bad lines" in r.getMessage()]
    assert len(warnings) == 3  # one line per split read (train, valid, test name the same file here)
    assert "skipped 2 bad lines of pairs.tsv.gz" in warnings[0]
    assert "1 with a wrong number of columns, 1 with an empty side" in warnings[0]
    assert "first: pairs.tsv.gz:3: wrong number of columns: 4, expected 3" in warnings[0]


def test_tsv_a_stray_tab_on_the_first_line_makes_only_that_line_bad(tmp_path, caplog):
    """The number of columns is the most common one (no header), not the first line's."""
    write_tsv(tmp_path / "pairs.tsv.gz", ["Hi.\tHallo!\tCC #1\tstray", *GOOD[1:], "Stop!\tHalt!\tCC #4"])
    with caplog.at_level(logging.WARNING, logger="mt.data"):
        train = load_corpus(tsv_config(tmp_path), tsv_config(tmp_path))["train"]
    assert train["src"] == ["Run!", "Go.", "Stop!"]
    assert (
        "skipped 1 bad lines" in caplog.text and "pairs.tsv.gz:1: wrong number of columns: 4, expected 3" in caplog.text
    )


def test_tsv_with_a_header_takes_the_number_of_columns_from_it(tmp_path):
    (tmp_path / "pairs.tsv").write_text("en\tde\tsource\nHi.\tHallo!\tCC\tstray\nRun!\tLauf!\tCC\nGo.\tGeh.\tCC\n")
    cfg = tsv_config(tmp_path, header=True)
    assert load_corpus(cfg, cfg)["train"]["src"] == ["Run!", "Go."]
    cfg.strict = True
    with pytest.raises(UserError, match=r"pairs\.tsv:2: wrong number of columns: 4, expected 3"):
        load_corpus(cfg, cfg)
    (tmp_path / "pairs.tsv").write_text("en\nHi.\tHallo!\n")  # the header names too few columns
    with pytest.raises(UserError, match=r"pairs\.tsv: its header line has 1 tab-separated columns"):
        load_corpus(cfg, cfg)


def test_tsv_strict_names_file_and_line(tmp_path):
    write_tsv(tmp_path / "pairs.tsv.gz", [GOOD[0], "Empty.\t\tCC", GOOD[1]])
    cfg = tsv_config(tmp_path, strict=True)
    with pytest.raises(UserError, match=r"pairs\.tsv\.gz:2: empty de side"):
        load_corpus(cfg, cfg)
    cfg.cache_dir = ""  # the same without the Arrow cache
    with pytest.raises(UserError, match=r"pairs\.tsv\.gz:2: empty de side \(data\.strict=true;"):
        load_corpus(cfg, cfg)
    corpus = CorpusConfig(**{f: getattr(cfg, f) for f in ("format", "dir", "columns", "train", "valid", "test")})
    mix = DataConfig(name="mix", corpora={"tab": corpus}, cache_dir="")
    mix.corpora["tab"].strict = True
    with pytest.raises(UserError, match=r"empty de side \(data\.corpora\.tab\.strict=true;"):
        load_corpus(mix, mix.corpus_list()[0])


def test_tsv_strict_error_is_one_line_at_the_cli(tmp_path):
    write_tsv(tmp_path / "pairs.tsv.gz", [GOOD[0], "only one column", GOOD[1]])
    proc = subprocess.run(
        [
            sys.executable, "-m", "mt.data", "data=tatoeba", f"data.dir={tmp_path}", "data.train=[pairs]",
            "data.header=false", "data.strict=true", f"data.cache_dir={tmp_path / 'cache'}",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"mt.data: error: {tmp_path}/pairs.tsv.gz:2: wrong number of columns: 1, expected 3 "
        "(data.strict=true; false skips and counts bad lines)"
    ]


def test_tsv_settings_are_checked():
    bad = DataConfig(name="x", format="tsv", columns={"en": 0})
    with pytest.raises(UserError, match=r"data\.columns must give the column of 'de'"):
        validate(bad)
    with pytest.raises(UserError, match=r"data\.columns applies to format tsv only"):
        validate(DataConfig(name="x", columns={"en": 0, "de": 1}))
    with pytest.raises(UserError, match=r"data\.valid must be \[\] when data\.held_out"):
        validate(DataConfig(name="x", held_out=HeldOutConfig(valid_sources=5)))
    with pytest.raises(UserError, match=r"data\.weight applies to data\.corpora entries only"):
        validate(DataConfig(name="x", weight=2))
    with pytest.raises(UserError, match=r"data\.corpora\.b\.format must be one of"):
        validate(DataConfig(name="x", corpora={"a": CorpusConfig(), "b": CorpusConfig(format="csv")}))
    with pytest.raises(UserError, match=r"data\.dir is set per corpus when data\.corpora is used"):
        validate(DataConfig(name="x", dir="somewhere", corpora={"a": CorpusConfig()}))


# Held-out splits -------------------------------------------------------------------------------
def one_file_corpus(tmp_path, sources: int = 60, seed: int = 0) -> DataConfig:
    """`sources` English sentences with 1-3 German translations each, one line per pair."""
    rng = np.random.default_rng(seed)
    lines = [f"sentence {i}.\tsatz {i} nummer {k}." for i in range(sources) for k in range(1 + i % 3)]
    lines = [lines[i] for i in rng.permutation(len(lines))]
    write_tsv(tmp_path / "all.tsv.gz", lines)
    held = HeldOutConfig(valid_sources=5, test_sources=7, group_by="en")
    return tsv_config(tmp_path, train=["all"], valid=[], test=[], held_out=held)


def test_held_out_split_is_grouped_by_source_sentence(tmp_path):
    cfg = one_file_corpus(tmp_path)
    parts = load_corpus(validate(cfg), cfg)
    sources = {split: set(ds["src"]) for split, ds in parts.items()}
    assert len(sources["valid"]) == 5 and len(sources["test"]) == 7 and len(sources["train"]) == 60 - 12
    assert not sources["train"] & sources["test"] and not sources["train"] & sources["valid"]
    assert not sources["valid"] & sources["test"]
    assert sum(len(ds) for ds in parts.values()) == sum(1 + i % 3 for i in range(60))  # every line once
    for ds in parts.values():  # every translation of a held-out sentence goes with it
        for src in set(ds["src"]):
            assert ds["src"].count(src) == 1 + int(src.split()[1][:-1]) % 3


def test_held_out_split_is_deterministic_and_independent_of_line_order(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, reordered = one_file_corpus(tmp_path / "a", seed=0), one_file_corpus(tmp_path / "b", seed=1)
    a, b = load_corpus(first, first), load_corpus(reordered, reordered)
    assert (tmp_path / "a" / "all.tsv.gz").read_bytes() != (tmp_path / "b" / "all.tsv.gz").read_bytes()
    for split in ("train", "valid", "test"):
        assert sorted(zip(a[split]["src"], a[split]["tgt"])) == sorted(zip(b[split]["src"], b[split]["tgt"]))
    assert list(load_corpus(first, first)["test"]) == list(a["test"])  # read again: the same rows
    first.held_out.seed = 1  # another seed holds out other sentences
    assert set(load_corpus(first, first)["test"]["src"]) != set(a["test"]["src"])


def test_held_out_rows_need_enough_sentences():
    keys = sentence_keys(["a", "b", " a ", "c"], seed=0)
    assert keys[0] == keys[2] and len(set(keys.tolist())) == 3
    src, tgt = ["a", "b", " a ", "c"], ["x", "y", "z", "w"]
    rows = held_out_rows(src, tgt, 1, 1)
    assert sorted(np.concatenate(list(rows.values())).tolist()) == [0, 1, 2, 3]
    with pytest.raises(UserError, match="only 3 distinct"):
        held_out_rows(src, tgt, 2, 1)


def test_two_english_sentences_sharing_a_german_translation_stay_together():
    """ "I'm fine." and "I am fine." share "Mir geht's gut.": one split for all three pairs, in both
    directions, whatever the seed (grouping by English alone put them on both sides)."""
    linked = [("I'm fine.", "Mir geht's gut."), ("I am fine.", "Mir geht's gut."), ("I am fine.", "Es geht mir gut.")]
    others = [(f"Sentence {i}.", f"Satz {i}.") for i in range(40)]
    en, de = zip(*(linked + others))
    for seed in range(30):
        for src, tgt, langs, count in ((en, de, ("en", "de"), "src"), (de, en, ("de", "en"), "tgt")):
            rows = held_out_rows(src, tgt, 5, 5, seed, langs, count)
            where = {int(i): split for split, positions in rows.items() for i in positions}
            assert where[0] == where[1] == where[2], (seed, langs)
            counted = src if count == "src" else tgt
            assert [len({counted[i] for i in rows[split]}) for split in ("valid", "test")] == [5, 5]
    # the same pairs are held out in both directions
    forward = held_out_rows(en, de, 5, 5, 3, ("en", "de"), "src")
    backward = held_out_rows(de, en, 5, 5, 3, ("de", "en"), "tgt")
    assert all(np.array_equal(forward[split], backward[split]) for split in forward)


def real_style_pairs(seed: int = 0) -> list[tuple[str, str]]:
    """Like Tatoeba: several German translations per English sentence, German sentences shared by
    several English ones (chains of them), duplicate pairs, and whitespace at the ends."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(300):
        for _ in range(1 + rng.poisson(0.8)):
            j = int(rng.zipf(2.0)) % 400 if rng.random() < 0.2 else 400 + i
            pairs.append((f"English {i}." + (" " if rng.random() < 0.1 else ""), f"Deutsch {j}."))
    return pairs


def test_no_sentence_of_either_language_of_dev_or_test_is_in_training(tmp_path):
    pairs = real_style_pairs()
    assert len({de for _, de in pairs}) < len(pairs)  # German sentences are shared
    write_tsv(tmp_path / "all.tsv.gz", [f"{en}\t{de}\tCC-BY #{k}" for k, (en, de) in enumerate(pairs)])
    for src_lang, tgt_lang in (("en", "de"), ("de", "en")):
        held = HeldOutConfig(valid_sources=20, test_sources=30, group_by="en")
        cfg = tsv_config(tmp_path, train=["all"], valid=[], test=[], held_out=held)
        cfg.src_lang, cfg.tgt_lang = src_lang, tgt_lang
        parts = load_corpus(validate(cfg), cfg)
        assert sum(len(ds) for ds in parts.values()) == len(pairs)
        train = {side: {s.strip() for s in parts["train"][side]} for side in ("src", "tgt")}
        for split in ("valid", "test"):
            for side in ("src", "tgt"):
                assert not {s.strip() for s in parts[split][side]} & train[side], (src_lang, split, side)
            english = parts[split]["src" if src_lang == "en" else "tgt"]
            assert len({s.strip() for s in english}) == {"valid": 20, "test": 30}[split]
        assert not set(parts["valid"]["tgt"]) & set(parts["test"]["tgt"])


def test_tatoeba_config_holds_out_1000_and_1000_english_sentences():
    from mt.cli import compose_config

    data = compose_config(["data=tatoeba"]).data
    assert data.held_out == HeldOutConfig(valid_sources=1000, test_sources=1000, group_by="en")
    assert (data.format, data.columns, data.valid, data.test) == ("tsv", {"en": 0, "de": 1}, [], [])
    multi = compose_config(["data=multi30k_tatoeba", "data.corpora.tatoeba.weight=2"]).data
    assert [(c.name, c.format, c.weight) for c in multi.corpus_list()] == [
        ("multi30k", "text", 1.0),
        ("tatoeba", "tsv", 2.0),
    ]
    assert multi.corpus_list()[1].held_out == data.held_out


# Several corpora --------------------------------------------------------------------------------
def test_mix_rows_counts():
    assert len(mix_rows(10, 1.0)) == 10 and len(mix_rows(10, 2.0)) == 20 and len(mix_rows(10, 0.0)) == 0
    half = mix_rows(20, 0.5)
    assert len(half) == 10 and len(set(half.tolist())) == 10 and np.array_equal(half, mix_rows(20, 0.5))
    rows = mix_rows(20, 2.5)
    assert len(rows) == 50 and np.bincount(rows, minlength=20).tolist().count(3) == 10


def two_corpora(tmp_path, weights=(1.0, 1.0), second_translations: bool = False) -> DataConfig:
    """The toy text corpus and a small TSV corpus with held-out splits (with `second_translations`,
    each English sentence has two German ones, as in Tatoeba)."""
    lines = [f"the {c} cat number {i} .\tdie {c} katze nummer {i} ." for i in range(40) for c in ("red", "big")]
    if second_translations:
        lines += [f"the {c} cat number {i} .\teine {c} katze nummer {i} ." for i in range(40) for c in ("red", "big")]
    write_tsv(tmp_path / "tab.tsv.gz", lines)
    toy = CorpusConfig(format="text", dir=str(TOY), train=["train"], valid=["valid"], test=["test"], weight=weights[0])
    held = HeldOutConfig(valid_sources=6, test_sources=6)
    tab = CorpusConfig(
        format="tsv", dir=str(tmp_path), columns={"en": 0, "de": 1}, train=["tab"], valid=[], test=[], held_out=held,
        weight=weights[1],
    )  # fmt: skip
    return validate(
        DataConfig(name="mix", corpora={"toy": toy, "tab": tab}, vocab_size=64, cache_dir=str(tmp_path / "cache"))
    )


def test_two_corpus_mix_with_weights_gives_expected_counts(tmp_path):
    cfg = two_corpora(tmp_path, weights=(0.5, 3.0))
    toy, tab = cfg.corpus_list()
    loaded = {c.name: load_corpus(cfg, c) for c in (toy, tab)}
    assert len(loaded["toy"]["train"]) == 480 and len(loaded["tab"]["train"]) == 80 - 12
    mix = training_mix(cfg, [(toy, loaded["toy"]["train"]), (tab, loaded["tab"]["train"])])
    assert len(mix) == 240 + 3 * 68
    assert sum(s.startswith("the ") for s in mix["src"]) == 3 * 68
    data = prepare(cfg)
    assert data.corpora == ["toy", "tab"]
    assert len(data.splits["train"]) == 240 + 3 * 68  # one tokenizer, one training split
    valid = data.held_out("valid")
    assert list(valid) == ["toy", "tab"] and len(valid["toy"]) == 30 and len(valid["tab"]) == 6
    assert {len(s) for s in data.held_out("test").values()} == {30, 6}
    assert data.tokenizer.src_vocab_size == 64


def test_one_corpus_keeps_its_split_names(tmp_path):
    cfg = toy_config(tmp_path).data
    data = prepare(cfg)
    assert set(data.splits) == {"train", "valid", "test"} and data.corpora == ["toy"]
    assert data.held_out("test") == {"toy": data.splits["test"]}
    # Recorded (metrics.json, tokenizer cache key) as before data.corpora and format tsv existed.
    assert not {"columns", "strict", "header", "held_out", "weight", "corpora"} & set(cfg.as_record())


@pytest.mark.slow
def test_two_corpus_training_reports_validation_and_test_per_corpus(tmp_path):
    from mt.train import run

    cfg = toy_config(tmp_path, max_steps=4, eval_every=2, valid_max_sentences=5)
    cfg.data = two_corpora(tmp_path, second_translations=True)
    cfg.decode.max_len_b = 3  # an untrained model: keep decoding short
    metrics = run(cfg, tmp_path / "run")
    assert metrics["corpora"] == ["toy", "tab"]
    assert "test" not in metrics["config"]["data"] and metrics["config"]["data"]["corpora"]["tab"]["weight"] == 1
    assert metrics["selection"] == "mean of the validation BLEUs of toy, tab"
    for record in metrics["history"]:
        per = record["corpora"]
        assert set(per) == {"toy", "tab"}
        assert set(per["tab"]) == {"valid_loss", "valid_ppl", "valid_bleu", "valid_chrf"}
        assert record["valid_bleu"] == pytest.approx((per["toy"]["valid_bleu"] + per["tab"]["valid_bleu"]) / 2)
        assert record["valid_chrf"] == pytest.approx((per["toy"]["valid_chrf"] + per["tab"]["valid_chrf"]) / 2)
        # (4 updates: the greedy validation output is still empty, chrF 0; the made-up-score tests
        # above check the mean with non-zero values, and the test split's chrF below is non-zero)
    assert set(metrics["test_corpora"]) == {"toy", "tab"}
    for name, sentences in (("toy", 30), ("tab", 12)):
        test = metrics["test_corpora"][name]
        assert {"test_bleu", "test_chrf", "bleu_signature"} <= set(test) and test["sentences"] == sentences
        hyps = (tmp_path / "run" / f"test.{name}.hyp.txt").read_text().splitlines()
        assert len(hyps) == sentences
    # tab's 6 test sources have two translations each: also scored once per source against both
    assert "test_multi_reference" not in metrics["test_corpora"]["toy"]
    multi = metrics["test_corpora"]["tab"]["test_multi_reference"]
    assert (multi["sources"], multi["max_references"]) == (6, 2) and "nrefs:2|" in multi["bleu_signature"]
    assert metrics["test_bleu"] == pytest.approx(
        (metrics["test_corpora"]["toy"]["test_bleu"] + metrics["test_corpora"]["tab"]["test_bleu"]) / 2
    )
    chrfs = [metrics["test_corpora"][name]["test_chrf"] for name in ("toy", "tab")]
    assert max(chrfs) > 0 and metrics["test_chrf"] == pytest.approx(sum(chrfs) / 2)  # beam search: toy > 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test_corpora"] == metrics["test_corpora"]


def decoded(bleu: float, chrf: float, text: list[str], seconds: float = 1.0):
    from mt.validation import Decoded

    signatures = {"bleu_signature": "nrefs:1|bleu", "chrf_signature": "nrefs:1|chrf"}
    return Decoded(text, {"bleu": bleu, "chrf": chrf, **signatures}, seconds)


def test_combined_scores_are_the_mean_of_the_corpora_whatever_their_sizes():
    from mt.validation import combined, corpora_test_results

    one = decoded(30.0, 50.0, ["a", "b", "c"], 2.0)
    assert combined({"multi30k": one}) is one
    both = combined({"multi30k": one, "tatoeba": decoded(10.0, 40.0, ["d"], 0.5)})
    assert (both.scores["bleu"], both.scores["chrf"]) == (20.0, 45.0)  # not weighted by 3 : 1 sentences
    assert both.text == ["a", "b", "c", "d"] and both.seconds == 2.5
    assert both.scores["bleu_signature"] == "nrefs:1|bleu"
    results = corpora_test_results({"m": one, "t": decoded(12.0, 30.0, ["d"])}, {"m": 3, "t": 1})
    assert (results["test_bleu"], results["test_chrf"]) == (21.0, 40.0)
    assert results["test_corpora"]["t"]["test_bleu"] == 12.0 and results["test_corpora"]["m"]["sentences"] == 3


def test_best_checkpoint_follows_the_mean_when_one_corpus_rises_and_the_other_falls_more(tmp_path, monkeypatch):
    """Validation scores made up per step: toy rises 20 -> 25 -> 30 while tab falls 40 -> 30 -> 34.
    Means: 30, 27.5, 32. best_step stays at the first validation through the second (toy alone
    would have moved it), best.pt is not rewritten then, and moves to the third."""
    import mt.plot
    from mt.train import Trainer

    cfg = toy_config(tmp_path, max_steps=4, eval_every=2, valid_max_sentences=5)
    cfg.data = two_corpora(tmp_path)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.setup()
    monkeypatch.setattr(mt.plot, "validation_figures", lambda *args, **kwargs: [])
    monkeypatch.setattr("mt.validation.validation_loss", lambda *args: 1.0)
    scores = {"toy": [20.0, 25.0, 30.0], "tab": [40.0, 30.0, 34.0]}
    splits = trainer._valid_splits()
    names = {id(split): name for name, split in splits.items()}
    monkeypatch.setattr(trainer, "_valid_splits", lambda: splits)
    call = {"toy": 0, "tab": 0}

    def fake_greedy(split):
        name = names[id(split)]
        bleu = scores[name][call[name]]
        call[name] += 1
        return decoded(bleu, bleu + 10, ["x"] * len(split))

    monkeypatch.setattr(trainer, "_greedy", fake_greedy)
    best_pt = trainer.paths.best
    for step, (best_step, best_bleu) in zip((2, 4, 6), ((2, 30.0), (2, 30.0), (6, 32.0))):
        trainer.state.step = step
        trainer.validate()
        assert (trainer.state.best_step, trainer.state.best_bleu) == (best_step, best_bleu)
        assert ckpt_train_step(best_pt) == best_step
    record = trainer.state.history[1]
    assert record["valid_bleu"] == 27.5 and record["valid_chrf"] == 37.5
    assert record["corpora"]["toy"]["valid_bleu"] == 25.0 and record["corpora"]["tab"]["valid_chrf"] == 40.0
    metrics = json.loads(trainer.paths.metrics.read_text())
    assert metrics["best_step"] == 6 and [r["valid_bleu"] for r in metrics["history"]] == [30.0, 27.5, 32.0]


def ckpt_train_step(path) -> int:
    from mt.checkpoint import read

    return read(path)["train_state"]["best_step"]


def fake_run(root, name: str, overrides: list[str], outputs: dict[str, tuple[list[str], list[str]]] = (), **scores):
    """A finished run's folder: metrics.json with the config these overrides compose (as training
    records it) and `scores`; test.hyp/ref.txt (key "") or test.NAME.hyp/ref.txt per `outputs` entry."""
    from mt.cli import compose_config
    from mt.rundir import RunDir
    from mt.runlog import config_dicts

    run = RunDir(root / name)
    run.root.mkdir()
    metrics = {"status": "completed", "config": config_dicts(compose_config(overrides)), **scores}
    run.metrics.write_text(json.dumps(metrics), encoding="utf-8")
    for corpus, (hyps, refs) in dict(outputs).items():
        run.test_output("hyp", corpus).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
        run.test_output("ref", corpus).write_text("".join(r + "\n" for r in refs), encoding="utf-8")


def test_compare_shows_test_bleu_per_corpus(tmp_path):
    from mt.compare import compare
    from mt.compare.report import csv_text

    fake_run(tmp_path, "alone", ["data=multi30k"], test_bleu=30.0)
    per_corpus = {"multi30k": {"test_bleu": 29.5}, "tatoeba": {"test_bleu": 40.5}}
    mixed = ["data=multi30k_tatoeba", "data.corpora.tatoeba.weight=2"]
    fake_run(tmp_path, "mixed", mixed, test_bleu=35.0, test_corpora=per_corpus, corpora=["multi30k", "tatoeba"])
    result = compare([tmp_path], significance=False)
    # data.dir, data.format, data.train ... exist in the one-corpus run only, the corpora's own
    # settings in the mixed run only: compared only among runs that have them, none differs.
    assert result.params == ["data.name"]
    header = result.header
    assert header[header.index("chrF") + 1 : header.index("chrF") + 5] == [
        "multi30k BLEU", "multi30k p", "tatoeba BLEU", "tatoeba p",
    ]  # fmt: skip
    rows = {row[1]: dict(zip(header, row)) for row in result.rows}
    assert (rows["mixed"]["BLEU"], rows["mixed"]["multi30k BLEU"], rows["mixed"]["tatoeba BLEU"]) == (
        "35.00",
        "29.50",
        "40.50",
    )
    assert (rows["alone"]["multi30k BLEU"], rows["alone"]["tatoeba BLEU"]) == ("30.00", "-")
    # Ranked by the test set both were scored on (Multi30k: 30.0 > 29.5), not by the mixed run's
    # mean over two corpora (35.0 > 30.0), and the report says so.
    assert [run.name for run in result.runs] == ["alone", "mixed"]
    assert result.ranked_by.startswith("`multi30k BLEU`")
    table = csv_text(result.runs, result.params).splitlines()
    assert "test_bleu.multi30k,test_bleu.tatoeba,p_value.multi30k,p_value.tatoeba" in table[0]


def test_compare_ranks_runs_on_the_same_corpora_by_their_mean(tmp_path):
    from mt.compare import compare

    for name, (m, t) in {"a": (29.0, 41.0), "b": (30.0, 38.0)}.items():
        scores = {"multi30k": {"test_bleu": m}, "tatoeba": {"test_bleu": t}}
        fake_run(tmp_path, name, ["data=multi30k_tatoeba"], test_bleu=(m + t) / 2, test_corpora=scores)
    result = compare([tmp_path], significance=False)
    assert [run.name for run in result.runs] == ["a", "b"] and result.ranked_by == "test BLEU"


def test_compare_tests_multi30k_of_a_mixed_run_against_multi30k_alone(tmp_path):
    """The mixed run's test.multi30k.*.txt and the one-corpus run's test.*.txt share references:
    one paired bootstrap test, its p-value in the `multi30k p` column of the run below."""
    from mt.compare import compare
    from mt.compare.report import csv_text
    from mt.evaluate import score_translations

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    refs = [" ".join(rng.choice(words, 8)) for _ in range(60)]
    worse = [" ".join(r.split()[:3]) for r in refs]  # a far worse system
    tatoeba_refs = [f"satz {i} ist kurz ." for i in range(20)]
    bleu = {name: score_translations(hyps, refs)["bleu"] for name, hyps in (("good", refs), ("bad", worse))}
    fake_run(tmp_path, "alone", ["data=multi30k"], test_bleu=bleu["good"], outputs={"": (refs, refs)})
    per_corpus = {"multi30k": {"test_bleu": bleu["bad"]}, "tatoeba": {"test_bleu": 100.0}}
    fake_run(
        tmp_path, "mixed", ["data=multi30k_tatoeba"], test_bleu=(bleu["bad"] + 100) / 2, test_corpora=per_corpus,
        outputs={"multi30k": (worse, refs), "tatoeba": (tatoeba_refs, tatoeba_refs)},
    )  # fmt: skip
    result = compare([tmp_path], n_samples=200)
    rows = {row[1]: dict(zip(result.header, row)) for row in result.rows}
    assert rows["alone"]["multi30k p"] == "best" and rows["alone"]["p"] == "best"
    assert rows["mixed"]["multi30k p"].endswith(" *")  # significantly below Multi30k alone
    assert rows["mixed"]["tatoeba p"] == "-" and rows["mixed"]["p"] == "-"  # nothing to test against
    mixed = next(run for run in result.runs if run.name == "mixed")
    assert mixed.corpus_baselines["multi30k"] == "alone" and mixed.corpus_p_values["multi30k"] < 0.05
    records = {line.split(",")[0]: line for line in csv_text(result.runs, result.params).splitlines()[1:]}
    assert records["mixed"].count(",,") >= 1 and f"{mixed.corpus_p_values['multi30k']:.4f}" in records["mixed"]


def test_evaluate_reads_each_corpus_or_the_one_named(tmp_path):
    from mt.evaluate import _split_texts

    write_tsv(tmp_path / "en-de.tsv.gz", ["header\tline", *[f"sentence {i}.\tsatz {i}." for i in range(10)]])
    overrides = [
        f"data.corpora.tatoeba.dir={tmp_path}",
        f"data.corpora.multi30k.dir={TOY}",
        "data.corpora.multi30k.valid=[valid]",
        "data.corpora.tatoeba.held_out.valid_sources=2",
        "data.corpora.tatoeba.held_out.test_sources=3",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    found = _split_texts("multi30k_tatoeba", "valid", "en", "de", overrides)
    assert [(name, len(src), len(ref)) for name, src, ref in found] == [
        ("multi30k_tatoeba.multi30k.valid", 30, 30),
        ("multi30k_tatoeba.tatoeba.valid", 2, 2),
    ]
    [(name, src, ref)] = _split_texts("multi30k_tatoeba", "test", "en", "de", overrides, corpus="tatoeba")
    assert name == "multi30k_tatoeba.tatoeba.test" and len(src) == 3 and ref[0].startswith("satz ")
    with pytest.raises(UserError, match=r"no corpus 'iwslt' in data=multi30k_tatoeba \(it has multi30k, tatoeba\)"):
        _split_texts("multi30k_tatoeba", "test", "en", "de", overrides, corpus="iwslt")


def test_evaluate_uses_the_data_settings_the_checkpoint_was_trained_with(tmp_path, capsys):
    """A run trained with held_out.seed=7 is scored on its own test split, not on the one that
    configs/data/NAME.yaml gives today (seed 0); a checkpoint without the record (older) finds it
    in its run folder's metrics.json."""
    import torch

    from mt.checkpoint import pack
    from mt.evaluate import _split_texts, main, recorded_data_config
    from mt.model import Transformer
    from mt.tokenizer import Tokenizer

    en = (TOY / "train.en").read_text().splitlines()[:120]
    de = (TOY / "train.de").read_text().splitlines()[:120]
    write_tsv(tmp_path / "all.tsv.gz", [f"{e}\t{d}" for e, d in zip(en, de)])
    held = HeldOutConfig(valid_sources=4, test_sources=9, group_by="en", seed=7)
    cfg = validate(tsv_config(tmp_path, train=["all"], valid=[], test=[], held_out=held, vocab_size=64))
    default_seed = load_corpus(cfg, replace_seed(cfg, 0))["test"]["src"]
    own = load_corpus(cfg, cfg)["test"]["src"]
    assert set(own) != set(default_seed)

    tokenizer = Tokenizer.train(en, de, cfg)
    model = Transformer(
        ModelConfig(d_model=32, layers=1, heads=2, ffn_dim=32, max_positions=160),
        tokenizer.src_vocab_size,
        tokenizer.tgt_vocab_size,
    )
    ckpt = pack(model, tokenizer, "en", "de")
    ckpt["data_name"], ckpt["data_config"] = "tab", cfg.as_record()
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, run / "checkpoints" / "best.pt")
    code = None
    try:
        main(["--checkpoint", str(run / "checkpoints" / "best.pt"), "--beam", "1"])
    except SystemExit as exit:
        code = exit.code
    assert code in (None, 0), capsys.readouterr().err
    [metrics] = [json.loads(p.read_text()) for p in (run / "eval").glob("*.json")]
    assert metrics["source"] == "tab.test" and metrics["sentences"] == len(own)

    class Engine:  # what recorded_data_config reads of an EvalModel
        data_config, data_name, src_lang, tgt_lang, eval_dir = None, "tab", "en", "de", run / "eval"

    assert recorded_data_config(Engine()) is None  # neither in the checkpoint nor in a metrics.json
    (run / "metrics.json").write_text(json.dumps({"config": {"data": cfg.as_record()}}))
    recorded = recorded_data_config(Engine())
    [(name, src, _)] = _split_texts("tab", "test", "en", "de", [], recorded=recorded)
    assert name == "tab.test" and src == own


def replace_seed(cfg: DataConfig, seed: int) -> DataConfig:
    from dataclasses import replace

    return replace(cfg, held_out=HeldOutConfig(**{**cfg.held_out.__dict__, "seed": seed}))


def test_sources_with_several_references_are_scored_once_against_all_of_them():
    from mt.evaluate import group_by_source, score_translations

    sources = ["a", "b", "a", "c", "a"]
    hyps, streams = group_by_source(["h1", "h2", "h1'", "h3", "h1''"], ["r1", "r2", "r3", "r4", "r5"], sources)
    assert hyps == ["h1", "h2", "h3"]  # the first line's translation of each distinct source
    assert streams == [["r1", "r2", "r4"], ["r3", None, None], ["r5", None, None]]

    refs = ["der hund läuft über die wiese", "ein hund rennt über das gras", "eine katze schläft auf dem sofa"]
    src = ["a dog runs across the grass", "a dog runs across the grass", "a cat sleeps on the sofa"]
    hyps = ["ein hund rennt über das gras", "ein hund rennt über das gras", "eine katze schläft auf dem sofa"]
    scores = score_translations(hyps, refs, src)
    multi = scores["multi_reference"]
    assert scores["bleu"] < 90 and multi["bleu"] == pytest.approx(100.0)  # right, just not the first reference
    assert (multi["sources"], multi["max_references"]) == (2, 2)
    assert "multi_reference" not in score_translations(hyps[1:], refs[1:], src[1:])  # no source repeats
    assert "multi_reference" not in score_translations(hyps, refs)  # sources unknown


def test_model_card_shows_each_corpus_and_labels_the_mean():
    from pathlib import Path
    from types import SimpleNamespace

    from mt.model_card import RunFiles, _results_section

    corpora = {"multi30k": {"test": ["test_2016_flickr"]}, "tatoeba": {"test": []}}
    config = {
        "data": {"name": "multi30k_tatoeba", "corpora": corpora},
        "decode": {"beam_size": 4, "length_penalty": 0.6},
    }
    per_corpus = {
        "multi30k": {"test_bleu": 33.1, "test_chrf": 60.2, "sentences": 1000, "bleu_signature": "sig"},
        "tatoeba": {"test_bleu": 41.7, "test_chrf": 62.0, "sentences": 1369, "bleu_signature": "sig"},
    }
    multi = {"bleu": 48.25, "chrf": 66.5, "sources": 1000, "max_references": 5, "bleu_signature": "nrefs:5"}
    per_corpus["tatoeba"]["test_multi_reference"] = multi
    valid = {"multi30k": {"valid_bleu": 28.0, "valid_chrf": 54.0}, "tatoeba": {"valid_bleu": 32.0, "valid_chrf": 56.0}}
    history = [{"step": 4, "valid_bleu": 30.0, "valid_chrf": 55.0, "corpora": valid}]
    metrics = {"config": config, "test_bleu": 37.4, "test_chrf": 61.1, "test_corpora": per_corpus, "history": history}
    loaded = SimpleNamespace(ckpt={"train_state": {"step": 4}})
    text = "\n".join(_results_section(loaded, Path("best.pt"), RunFiles(None, metrics)))
    assert "multi30k: test_2016_flickr, 1000 sentences, beam 4" in text and "33.10" in text
    assert "tatoeba: held-out test, 1369 sentences" in text and "41.70" in text
    assert "mean of the corpora (multi30k, tatoeba) | 37.40 / 61.10" in text
    assert "tatoeba, 1000 distinct sources against all their references) | 48.25 / 66.50 `nrefs:5`" in text
    assert "update 4, tatoeba (greedy" in text and "update 4, mean of the corpora (greedy" in text
    assert "test BLEU (test," not in text  # no unlabelled row


def test_model_card_of_one_corpus_shows_its_multi_reference_score():
    from pathlib import Path
    from types import SimpleNamespace

    from mt.model_card import RunFiles, _results_section

    config = {"data": {"name": "tatoeba", "test": ["heldout"]}, "decode": {"beam_size": 5, "length_penalty": 1.0}}
    multi = {"bleu": 33.5, "chrf": 51.25, "sources": 1000, "max_references": 10, "bleu_signature": "nrefs:var"}
    metrics = {"config": config, "test_bleu": 27.0, "test_chrf": 46.0, "test_multi_reference": multi}
    loaded = SimpleNamespace(ckpt={"train_state": {"step": 4}})
    text = "\n".join(_results_section(loaded, Path("best.pt"), RunFiles(None, metrics)))
    assert "test BLEU (heldout, beam 5" in text and "27.00" in text
    assert "heldout, 1000 distinct sources against all their references) | 33.50 / 51.25 `nrefs:var`" in text


def test_the_mix_records_each_pairs_corpus_through_filtering(tmp_path):
    cfg = two_corpora(tmp_path, weights=(0.5, 2.0))
    train = prepare(cfg).splits["train"]
    assert np.bincount(train.source).tolist() == [240, 2 * 68]
    short = prepare(replace(cfg, max_len=28)).splits["train"]  # drops the longer toy pairs
    assert 0 < len(short) < len(train) and len(short.source) == len(short)
    # the tab pairs are the ones starting "the "; after filtering each row still has its own corpus
    assert [s.startswith("the ") for s in short.src_text] == (short.source == 1).tolist()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"finish_on": "nope", "finish_updates": 5}, "data.finish_on must name a corpus of data.corpora (toy, tab)"),
        ({"finish_on": "tab"}, "data.finish_updates and data.finish_on go together"),
        ({"finish_updates": 5}, "data.finish_updates and data.finish_on go together"),
        ({"finish_on": "tab", "finish_updates": 12}, "it needs train.max_steps > 12 (it is 12)"),
    ],
)
def test_finish_on_settings_are_checked(tmp_path, changes, message):
    cfg = toy_config(tmp_path, max_steps=12)
    cfg.data = replace(two_corpora(tmp_path), **changes)
    with pytest.raises(UserError, match=re.escape(message)):
        validate(cfg)


def test_finish_on_needs_several_corpora(tmp_path):
    cfg = toy_config(tmp_path, max_steps=12)
    cfg.data.finish_on, cfg.data.finish_updates = "toy", 5
    with pytest.raises(UserError, match=re.escape("must name a corpus of data.corpora (none listed)")):
        validate(cfg)


@pytest.mark.slow
def test_finish_on_that_outlasts_max_epochs_is_refused_before_training(tmp_path):
    from mt.train import run

    with pytest.raises(
        UserError, match=r"takes about \d+ passes over data.finish_on=tab's pairs: raise train.max_epochs"
    ):
        cfg = finishing_config(tmp_path, max_steps=40, max_epochs=3)
        cfg.data.finish_updates = 30  # tab's 68 pairs make about 7 batches of 256 tokens: 5 passes
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def finishing_config(tmp_path, **train):
    cfg = toy_config(
        tmp_path, **{"max_steps": 12, "eval_every": 0, "max_tokens": 256, "valid_max_sentences": 5, **train}
    )
    cfg.data = replace(two_corpora(tmp_path), finish_on="tab", finish_updates=5)
    cfg.decode.max_len_b = 3  # an untrained model: keep decoding short
    return validate(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [7, 9])  # where the finishing phase starts (12 - 5), and inside it
def test_the_last_updates_train_on_the_finish_corpus_and_resume_exactly(tmp_path, monkeypatch, caplog, stop_at):
    import mt.train as train_module
    from mt.checkpoint import read

    seen = []  # the corpora of each update's pairs (one batch per update)
    collate = train_module.collate
    monkeypatch.setattr(
        train_module, "collate", lambda split, rows: seen.append(split.source[rows]) or collate(split, rows)
    )
    full = tmp_path / "full"
    caplog.set_level(logging.INFO, logger="mt.train")
    train_module.run(finishing_config(tmp_path), full)
    assert len(seen) == 12
    assert 0 in np.concatenate(seen[:7])  # the mix (toy's 480 pairs and tab's 68, bucketed by length)
    assert all(set(rows.tolist()) == {1} for rows in seen[7:])  # then tab alone
    assert "step 7: the last 5 updates train on tab alone (68 of the mix's 548 pairs)" in caplog.text

    after_update = train_module.Trainer._after_update

    def stop_before(self, stats, seconds, end_of_epoch):  # as if Ctrl-C came during update stop_at
        if self.state.step + 1 == stop_at:
            self.stop_signal = signal.SIGINT
        return after_update(self, stats, seconds, end_of_epoch)

    split = tmp_path / "split"
    monkeypatch.setattr(train_module.Trainer, "_after_update", stop_before)
    with pytest.raises(KeyboardInterrupt):
        train_module.run(finishing_config(tmp_path), split)
    assert read(split / "checkpoints" / "last.pt")["train_state"]["step"] == stop_at
    monkeypatch.setattr(train_module.Trainer, "_after_update", after_update)
    train_module.run(finishing_config(tmp_path, resume=True), split)
    a, b = read(full / "checkpoints" / "last.pt")["model"], read(split / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
