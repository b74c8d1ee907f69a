import json
import subprocess
import sys

import pytest
import torch

from mt.average import average_checkpoints, average_state_dicts, snapshots
from mt.checkpoint import read
from mt.errors import UserError
from mt.fileio import atomic_torch_save
from mt.train import run

from .conftest import ROOT, toy_config


def test_average_is_the_elementwise_mean_and_keeps_integer_tensors():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    c = {"w": torch.tensor([5.0, 1.0]), "n": torch.tensor(7)}
    out = average_state_dicts([a, b, c])
    assert torch.equal(out["w"], torch.tensor([3.0, 3.0]))
    assert out["w"].dtype == torch.float32
    assert int(out["n"]) == 7  # not averaged: the last one's


def test_average_refuses_checkpoints_of_different_models():
    with pytest.raises(UserError, match="shape"):
        average_state_dicts([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])
    with pytest.raises(UserError, match="different parameters"):
        average_state_dicts([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])


@pytest.mark.slow
def test_training_keeps_the_last_snapshots_and_tests_the_better_of_average_and_best(tmp_path):
    run_dir = tmp_path / "run"
    metrics = run(toy_config(tmp_path, max_steps=60, eval_every=30, save_every=10, average_last=3), run_dir)
    kept = snapshots(run_dir / "checkpoints")
    assert [p.name for p in kept] == ["step-0000040.pt", "step-0000050.pt", "step-0000060.pt"]
    assert metrics["averaged_checkpoints"] == 3
    averaged = read(run_dir / "checkpoints" / "averaged.pt")
    states = [read(p)["model"] for p in kept]
    for key, value in averaged["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(s[key] for s in states) / 3)
    best_bleu = json.loads((run_dir / "metrics.json").read_text())["best_valid_bleu"]
    expected = "averaged.pt" if metrics["averaged_valid_bleu"] > best_bleu else "best.pt"
    assert metrics["tested_checkpoint"] == expected


@pytest.mark.slow
def test_cli_averages_a_runs_snapshots(tmp_path):
    run_dir = tmp_path / "run"
    run(toy_config(tmp_path, max_steps=20, eval_every=20, save_every=10, average_last=2), run_dir)
    out = tmp_path / "avg.pt"
    done = subprocess.run(
        [sys.executable, "-m", "mt.average", "--run", str(run_dir), "--last", "2", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert read(out)["averaged_from"] == [str(p) for p in snapshots(run_dir / "checkpoints")]
    more = subprocess.run(
        [sys.executable, "-m", "mt.average", "--run", str(run_dir), "--last", "5", "--out", str(tmp_path / "b.pt")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert more.returncode == 0 and "--last 5 but" in more.stderr and "keeps only 2 snapshots" in more.stderr
    # The averaged file is a complete checkpoint: the translate tool loads it.
    tr = subprocess.run(
        [sys.executable, "-m", "mt.translate", "--checkpoint", str(out), "a b c"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tr.returncode == 0, tr.stderr


def test_cli_errors_are_one_line(tmp_path):
    other = tmp_path / "other.pt"
    atomic_torch_save(other, {"format": "mt-checkpoint", "version": 1, "model_config": {"d_model": 1}})
    for args in ([], ["--run", str(tmp_path)], [str(other), str(other), "--out", str(tmp_path / "x.pt")], [str(other)]):
        done = subprocess.run(
            [sys.executable, "-m", "mt.average", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, args
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("mt.average: error:"), done.stderr


@pytest.mark.slow
def test_average_checkpoints_refuses_another_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(toy_config(tmp_path, max_steps=10, eval_every=0, save_every=10, average_last=1), a)
    run(toy_config(tmp_path, max_steps=10, eval_every=0, save_every=10, average_last=1, seed=7), b)
    ckpt_b = read(snapshots(b / "checkpoints")[0])
    ckpt_b["model_config"] = {**ckpt_b["model_config"], "dropout": 0.5}
    atomic_torch_save(b / "changed.pt", ckpt_b)
    with pytest.raises(UserError, match="model_config"):
        average_checkpoints([snapshots(a / "checkpoints")[0], b / "changed.pt"])
