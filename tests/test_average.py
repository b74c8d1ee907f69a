import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from mt.average import average_checkpoints, average_state_dicts, snapshots
from mt.average import main as average_main
from mt.checkpoint import read
from mt.errors import UserError
from mt.fileio import atomic_torch_save
from mt.train import run

from .conftest import ROOT, toy_config
from .test_align import toy_model_file


class OrderedCounter(Counter):
    """A class torch.load(weights_only=True) refuses to unpickle."""


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


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """Two model files of one (untrained, tiny) model: the same weights, two files."""
    folder = tmp_path_factory.mktemp("average")
    a = toy_model_file(folder / "a.pt")
    shutil.copyfile(a, folder / "b.pt")
    return a, folder / "b.pt"


def average_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        average_main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().err


def assert_one_line(code: int, err: str, expect: str) -> None:
    assert code == 2 and err.count("\n") == 1 and err.startswith("mt.average: error: "), err
    assert expect in err and "Traceback" not in err, err


def test_cli_refuses_an_output_that_is_an_input_or_a_file_named_twice(two_checkpoints, tmp_path, capsys):
    a, b = two_checkpoints
    before = b.read_bytes()
    assert_one_line(*average_cli([str(a), str(b), "--out", str(b)], capsys), "is also an input")
    assert_one_line(*average_cli([str(a), str(b), "--out", str(b), "--force"], capsys), "is also an input")
    assert b.read_bytes() == before
    out = tmp_path / "avg.pt"
    assert_one_line(*average_cli([str(a), str(a), "--out", str(out)], capsys), f"{a} is named twice")
    (tmp_path / "link.pt").symlink_to(a)
    assert_one_line(
        *average_cli([str(a), str(tmp_path / "link.pt"), "--out", str(out)], capsys), "is the same checkpoint as"
    )
    assert not out.exists()


def test_cli_replaces_an_existing_output_only_with_force_and_only_a_checkpoint(two_checkpoints, tmp_path, capsys):
    a, b = two_checkpoints
    text = tmp_path / "a.en"
    text.write_text("a sentence\n")
    assert_one_line(*average_cli([str(a), str(b), "--out", str(text)], capsys), "already exists: add --force")
    assert_one_line(*average_cli([str(a), str(b), "--out", str(text), "--force"], capsys), "checkpoints only")
    assert text.read_text() == "a sentence\n"
    assert_one_line(*average_cli([str(a), str(b), "--out", str(tmp_path)], capsys), "is a folder, not a file")

    out = tmp_path / "avg.pt"
    assert average_cli([str(a), str(b), "--out", str(out)], capsys) == (0, f"averaged 2 checkpoints -> {out}\n")
    assert_one_line(*average_cli([str(a), str(b), "--out", str(out)], capsys), "already exists: add --force")
    assert average_cli([str(b), str(a), "--out", str(out), "--force"], capsys)[0] == 0
    assert read(out)["averaged_from"] == [str(b), str(a)]


def test_cli_keeps_the_trainers_averaged_pt_without_force(two_checkpoints, tmp_path, capsys):
    a, b = two_checkpoints
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for step, source in ((10, a), (20, b)):
        shutil.copyfile(source, checkpoints / f"step-{step:07d}.pt")
    shutil.copyfile(a, checkpoints / "averaged.pt")
    before = (checkpoints / "averaged.pt").read_bytes()
    code, err = average_cli(["--run", str(tmp_path / "run")], capsys)
    assert_one_line(code, err, f"{checkpoints / 'averaged.pt'} already exists: add --force")
    assert "--out" not in err  # the user named no --out
    assert (checkpoints / "averaged.pt").read_bytes() == before
    assert average_cli(["--run", str(tmp_path / "run"), "--force"], capsys)[0] == 0
    assert len(read(checkpoints / "averaged.pt")["averaged_from"]) == 2


@pytest.mark.parametrize("case", ["truncated", "foreign pickle"])
def test_an_unreadable_checkpoint_is_one_short_line(case, two_checkpoints, tmp_path, capsys):
    a, b = two_checkpoints
    bad = tmp_path / "bad.pt"
    if case == "truncated":
        bad.write_bytes(a.read_bytes()[: a.stat().st_size // 2])
        expect = "is not a readable checkpoint (truncated or damaged): PytorchStreamReader failed reading zip archive"
    else:
        torch.save({"model": OrderedCounter()}, bad)
        expect = "is not a readable checkpoint (truncated or damaged): Unsupported global"
    code, err = average_cli([str(bad), str(b), "--out", str(tmp_path / "avg.pt")], capsys)
    assert_one_line(code, err, expect)
    assert len(err) < 250 and "miniz" not in err and "weights_only" not in err, err
