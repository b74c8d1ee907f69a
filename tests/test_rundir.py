"""Run directories are safe: a finished run is never replaced unasked, one live process per directory."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mt.checkpoint import read
from mt.errors import UserError
from mt.rundir import RunDir, RunLock, latest_checkpoint
from mt.train import run

from .conftest import ROOT, toy_config, toy_train_cmd

pytestmark = pytest.mark.slow


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def finished_run(tmp_path):
    run_dir = tmp_path / "run"
    run(toy_config(tmp_path, max_steps=10, eval_every=10, save_every=5, average_last=2), run_dir)
    return run_dir


def test_new_run_into_a_finished_run_is_refused_and_changes_nothing(finished_run, tmp_path):
    best, metrics = finished_run / "checkpoints" / "best.pt", finished_run / "metrics.json"
    before = (digest(best), digest(metrics))
    with pytest.raises(UserError, match="already holds a run"):
        run(toy_config(tmp_path, max_steps=10, seed=99), finished_run)
    assert (digest(best), digest(metrics)) == before


def test_cli_refuses_before_hydra_rewrites_the_runs_config(finished_run, tmp_path):
    (finished_run / ".hydra").mkdir()
    hydra_config = finished_run / ".hydra" / "config.yaml"
    hydra_config.write_text("the finished run's config\n")
    best_before = digest(finished_run / "checkpoints" / "best.pt")
    proc = subprocess.run(
        toy_train_cmd(f"hydra.run.dir={finished_run}"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "already holds a run" in lines[0], proc.stderr
    assert hydra_config.read_text() == "the finished run's config\n"
    assert digest(finished_run / "checkpoints" / "best.pt") == best_before


def test_resume_of_a_finished_run_is_allowed(finished_run, tmp_path):
    metrics = run(toy_config(tmp_path, max_steps=14, eval_every=7, resume=True), finished_run)
    assert metrics["status"] == "completed" and metrics["steps"] == 14


def test_overwrite_replaces_the_run_and_its_snapshots(finished_run, tmp_path):
    assert [p.name for p in sorted((finished_run / "checkpoints").glob("step-*.pt"))] == [
        "step-0000005.pt",
        "step-0000010.pt",
    ]
    metrics = run(toy_config(tmp_path, max_steps=6, eval_every=6, overwrite=True), finished_run)
    assert metrics["steps"] == 6
    assert read(finished_run / "checkpoints" / "last.pt")["train_state"]["step"] == 6
    assert not list((finished_run / "checkpoints").glob("step-*.pt"))  # old snapshots would poison averaging
    assert len(metrics["history"]) == 1


def test_a_failed_setup_leaves_a_directory_that_can_be_reused(tmp_path):
    run_dir = tmp_path / "run"
    bad = toy_config(tmp_path)
    bad.data.dir = str(tmp_path / "missing")
    with pytest.raises(UserError, match="data directory not found"):
        run(bad, run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"
    assert run(toy_config(tmp_path, max_steps=4, eval_every=4), run_dir)["status"] == "completed"


def test_second_process_is_refused_while_the_first_holds_the_lock(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    run_dir.root.mkdir()
    holder = RunLock(run_dir)
    holder.acquire()
    try:
        with pytest.raises(UserError, match=f"in use by another training process \\(PID {os.getpid()}\\)"):
            run(toy_config(tmp_path, max_steps=4), run_dir.root)
        assert not run_dir.metrics.exists()  # the refused run wrote nothing
    finally:
        holder.release()
    assert run(toy_config(tmp_path, max_steps=4, eval_every=4), run_dir.root)["status"] == "completed"


def test_two_live_training_processes(tmp_path):
    """A real second `python -m mt.train` into the directory of a running one exits 2, naming its PID."""
    run_dir = tmp_path / "run"
    cmd = toy_train_cmd(
        "train.max_steps=100000",
        "train.eval_every=0",
        "train.threads=1",
        "train.progress=false",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run_dir / "metrics.json").exists():
            time.sleep(0.1)
        assert (run_dir / ".lock").read_text().strip() == str(first.pid)
        second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert f"in use by another training process (PID {first.pid})" in lines[0]
        assert first.poll() is None  # the first one trains on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").write_text(f"{dead.pid}\n")  # left behind by a process killed with SIGKILL
    assert run(toy_config(tmp_path, max_steps=4, eval_every=4), run_dir)["status"] == "completed"
    assert (run_dir / ".lock").read_text() == ""  # released when the run ended


def finished_fake_run(root, name, data="multi30k", overrides=(), status="completed"):
    run_dir = root / name
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"PK")
    metrics = {"status": status, "overrides": list(overrides), "config": {"data": {"name": data}}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir / "checkpoints" / "best.pt"


def test_the_default_model_is_the_newest_finished_real_run(tmp_path):
    outputs = tmp_path / "outputs"
    real = finished_fake_run(outputs, "multi30k/a")
    time.sleep(0.01)
    finished_fake_run(outputs, "toy/b", data="toy")  # newer, but a toy
    finished_fake_run(outputs, "multi30k/c", overrides=["train=smoke"])  # newer, but a smoke run
    finished_fake_run(outputs, "multi30k/d", status="running")  # newer, but not finished
    assert latest_checkpoint(outputs) == real


def test_without_a_real_run_the_error_says_why(tmp_path):
    outputs = tmp_path / "outputs"
    finished_fake_run(outputs, "toy/b", data="toy")
    with pytest.raises(UserError, match=r"no finished training run .*\(1 toy/smoke runs there"):
        latest_checkpoint(outputs)


def test_checkpoint_accepts_a_run_folder_and_names_non_checkpoints(trained_run, tmp_path):
    assert read(trained_run)["model"].keys() == read(trained_run / "checkpoints" / "best.pt")["model"].keys()
    with pytest.raises(UserError, match="not a checkpoint file"):
        read(ROOT / "README.md")
    with pytest.raises(UserError, match="directory without checkpoints/best.pt"):
        read(tmp_path)
