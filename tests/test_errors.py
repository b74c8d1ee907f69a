"""Every training mistake a user can make gets one clear line and a non-zero exit."""

import shutil
import subprocess

import pytest

from mt.cli import check_overrides
from mt.errors import UserError
from mt.train import run

from .conftest import ROOT, TOY, toy_config, toy_train_cmd


def corpus_copy(tmp_path):
    target = tmp_path / "corpus"
    shutil.copytree(TOY, target)
    return target


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("unknown config key", "d_modell"),
        ("wrong type", "train.max_tokens"),
        ("unknown key added with +", "unknown config key train.lrr"),
        ("infinite learning rate", "train.lr must be a finite number, got inf"),
        ("missing data directory", "data directory not found"),
        ("corpus sides of different lengths", "line counts differ"),
        ("empty training file", "train split of data=toy is empty"),
        ("vocab larger than the corpus allows", "too large for this training corpus"),
        ("unwritable output directory", "cannot write to the run directory"),
        ("source language the corpus lacks", "no 'xx' side"),
        ("heads do not divide d_model", "model.d_model must be divisible by model.heads"),
        ("beam size 0", "decode.beam_size must be at least 1"),
        ("unknown precision", "train.precision must be"),
    ],
)
def test_training_bad_input_matrix(case, expect, tmp_path):
    if case == "unknown config key":
        with pytest.raises(UserError, match=expect):
            check_overrides(["model.d_modell=3"])
        return
    if case == "wrong type":
        with pytest.raises(UserError, match=expect):
            check_overrides(["train.max_tokens=abc"])
        return
    if case == "unknown key added with +":  # Hydra adds it; it would be dropped unsaid
        for override in ("+train.lrr=0.1", "++train.lrr=0.1"):
            with pytest.raises(UserError, match=expect):
                check_overrides([override])
        return
    if case == "infinite learning rate":  # inf passes "> 0"
        with pytest.raises(UserError, match=expect):
            check_overrides(["train.lr=inf"])
        return
    cfg = toy_config(tmp_path, max_steps=2)
    run_dir = tmp_path / "run"
    corpus = corpus_copy(tmp_path)
    cfg.data.dir = str(corpus)
    if case == "missing data directory":
        cfg.data.dir = str(tmp_path / "missing")
    elif case == "corpus sides of different lengths":
        (corpus / "train.de").write_text("nur eine zeile\n")
    elif case == "empty training file":
        (corpus / "train.en").write_text("")
        (corpus / "train.de").write_text("")
    elif case == "vocab larger than the corpus allows":
        cfg.data.vocab_size = 100000
    elif case == "unwritable output directory":
        (tmp_path / "a-file").write_text("")
        run_dir = tmp_path / "a-file" / "run"
    elif case == "source language the corpus lacks":
        cfg.data.src_lang = "xx"
    elif case == "heads do not divide d_model":
        cfg.model.heads = 3
    elif case == "beam size 0":
        cfg.decode.beam_size = 0
    elif case == "unknown precision":
        cfg.train.precision = "bf32"
    with pytest.raises(UserError, match=expect):
        run(cfg, run_dir)


def test_cli_reports_runtime_mistakes_in_one_line(tmp_path):
    proc = subprocess.run(
        toy_train_cmd(f"data.dir={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path / 'run'}"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("mt.train: error: data directory not found")
    assert "Traceback" not in proc.stderr
