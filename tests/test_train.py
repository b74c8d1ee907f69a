import json
import os
import random
import signal
import subprocess
import time
from dataclasses import replace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tqdm import tqdm

import mt.engine as engine_module
import mt.train
from mt.checkpoint import TrainState, read
from mt.config import TrainConfig
from mt.engine import learning_rate
from mt.errors import UserError
from mt.fileio import atomic_torch_save
from mt.train import Trainer, run

from .conftest import ROOT, toy_config, toy_train_cmd


def test_smoke_pipeline_writes_everything(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 300
    assert metrics["test_bleu"] > 20, "the toy corpus is easy: a working model must learn it"
    assert metrics["best_valid_bleu"] > 20
    assert "tok:13a" in metrics["bleu_signature"]
    assert (trained_run / "checkpoints" / "best.pt").is_file() and (trained_run / "checkpoints" / "last.pt").is_file()
    assert len((trained_run / "test.hyp.txt").read_text().splitlines()) == 30
    events = EventAccumulator(str(trained_run / "tb"), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    for tag in (
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "train/tokens_per_sec",
        "valid/loss",
        "valid/ppl",
        "valid/bleu",
        "valid/chrf",
    ):
        assert tag in tags["scalars"], tag
    assert any(t.startswith("attention/layer") for t in tags["images"])
    assert not any(t.startswith("hparam/") for t in tags["scalars"])  # HParams adds no one-point charts
    assert events.PluginTagToContent("hparams")  # the HParams table is there
    assert [e.step for e in events.Scalars("valid/bleu")] == [150, 300]


def test_learning_rate_schedule():
    assert learning_rate(1, 1e-3, 100) == pytest.approx(1e-5)
    assert learning_rate(100, 1e-3, 100) == pytest.approx(1e-3)
    assert learning_rate(400, 1e-3, 100) == pytest.approx(5e-4)
    assert learning_rate(400, 1e-3, 0) == 1e-3


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_budgeted_schedules_warm_up_then_anneal_to_min_lr_after_max_steps(schedule):
    def lr(step):
        return learning_rate(step, 1e-3, 100, 1e-5, schedule, 299)  # 199 updates after warmup

    assert lr(50) == pytest.approx(5e-4)  # the same warmup as inverse_sqrt
    assert lr(100) == pytest.approx(1e-3)
    assert lr(200) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)  # halfway through the decay, both schedules
    assert 1e-5 < lr(299) < 1e-5 + 1e-5  # the last update still moves the weights, a little
    if schedule == "linear":
        assert lr(299) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 200)
    assert lr(300) == pytest.approx(1e-5) and lr(400) == pytest.approx(1e-5)  # min_lr once the budget is spent
    decay = [lr(step) for step in range(100, 301)]
    assert all(a > b for a, b in zip(decay, decay[1:]))  # strictly decreasing to the end


def test_an_unknown_schedule_is_an_error_not_a_default():
    with pytest.raises(ValueError, match="step"):
        learning_rate(200, 1e-3, 100, 0.0, "step", 300)


def test_cosine_decays_slower_than_linear_early_and_faster_late():
    def lr(step, schedule):
        return learning_rate(step, 1e-3, 100, 0.0, schedule, 300)

    assert lr(125, "cosine") > lr(125, "linear") and lr(275, "cosine") < lr(275, "linear")


def weights(path):
    return read(path)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path):
    torch.set_num_threads(1)
    full = tmp_path / "full"
    run(toy_config(tmp_path, max_steps=40, eval_every=20), full)
    split = tmp_path / "split"
    run(toy_config(tmp_path, max_steps=23, eval_every=20), split)  # stops mid-epoch, mid-interval
    state = read(split / "checkpoints" / "last.pt")["train_state"]
    assert state["step"] == 23 and state["batch_in_epoch"] > 0
    metrics = run(toy_config(tmp_path, max_steps=40, eval_every=20, resume=True), split)
    assert metrics["steps"] == 40
    assert_same_weights(weights(full / "checkpoints" / "last.pt"), weights(split / "checkpoints" / "last.pt"))
    full_opt = read(full / "checkpoints" / "last.pt")["optimizer"]["state"]
    split_opt = read(split / "checkpoints" / "last.pt")["optimizer"]["state"]
    assert all(torch.equal(full_opt[k]["exp_avg"], split_opt[k]["exp_avg"]) for k in full_opt)


class SteppingClock:
    """time.perf_counter for mt.train: each call moves on half a second, so every update takes 0.5 s;
    at call `interrupt_at`, the run is killed (no checkpoint saved then)."""

    def __init__(self, interrupt_at: int = 0):
        self.calls, self.interrupt_at = 0, interrupt_at

    def perf_counter(self) -> float:
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return 0.5 * self.calls


@pytest.mark.slow
def test_a_schedule_fitted_to_the_time_limit_ends_annealed_there_and_resumes_exactly(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(mt.train, "FIT_SCHEDULE_AFTER", 30)
    settings = dict(lr_schedule="linear", warmup_steps=20, max_steps=150, max_minutes=1.0, eval_every=50, save_every=10)
    full = tmp_path / "full"
    monkeypatch.setattr(mt.train, "time", SteppingClock())
    metrics = run(toy_config(tmp_path, **settings), full)
    # 0.5 s per update (from updates 21-30): 116 of the 150 fit in 97 % of the minute, so the decay ends there
    assert metrics["steps"] == metrics["schedule_steps"] == 30 + int((0.97 * 60 - 15) / 0.5) == 116
    assert metrics["train_minutes"] == pytest.approx(116 * 0.5 / 60)  # before the time limit: ended by the schedule
    assert read(full / "checkpoints" / "last.pt")["train_state"]["schedule_steps"] == 116
    lrs = [e.value for e in EventAccumulator(str(full / "tb")).Reload().Scalars("train/lr")]
    assert lrs[-1] == pytest.approx(3e-3 * (116 - 110 + 1) / (116 - 20 + 1))  # logged every 10: the last at 110

    split = tmp_path / "split"
    monkeypatch.setattr(mt.train, "time", SteppingClock(interrupt_at=150))  # about update 74
    with pytest.raises(KeyboardInterrupt):
        run(toy_config(tmp_path, **settings), split)
    state = read(split / "checkpoints" / "last.pt")["train_state"]
    assert (state["step"], state["schedule_steps"]) == (70, 116)  # the save_every save before the kill
    monkeypatch.setattr(mt.train, "time", SteppingClock())
    assert run(toy_config(tmp_path, **settings, resume=True), split)["steps"] == 116
    assert_same_weights(weights(full / "checkpoints" / "last.pt"), weights(split / "checkpoints" / "last.pt"))


@pytest.mark.parametrize(
    ("schedule", "max_minutes", "seconds", "warmup", "finish", "expected"),
    [
        ("linear", 10.0, 100.0, 500, 0, 582),  # 1 s per update: 482 more fit in 97 % of 10 minutes
        ("cosine", 10.0, 100.0, 500, 0, 582),
        ("linear", 10.0, 180.0, 500, 0, 502),  # the first 20 took 100 s: the speed is measured after them
        ("inverse_sqrt", 10.0, 100.0, 500, 0, 0),  # never decays to an end: nothing to fit
        ("linear", 30.0, 100.0, 500, 0, 0),  # all 1,200 updates fit
        ("linear", 0.0, 100.0, 500, 0, 0),  # no time limit
        ("linear", 10.0, 180.0, 503, 0, 0),  # fewer than the warmup updates fit: left to the time limit
        ("linear", 10.0, 100.0, 50, 400, 582),  # the last 400 updates on data.finish_on still fit after step 100
        ("linear", 10.0, 100.0, 50, 490, 0),  # they would not: the finish phase is left whole
        ("linear", 10.0, 590.0, 50, 0, 0),  # the time is all but spent: no updates left to fit
    ],
)
def test_fit_schedule_only_where_the_time_limit_cuts_a_decay_short(
    tmp_path, schedule, max_minutes, seconds, warmup, finish, expected
):
    cfg = toy_config(tmp_path, lr_schedule=schedule, warmup_steps=warmup, max_steps=1200, max_minutes=max_minutes)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.cfg.data.finish_updates = finish  # only its count matters here
    trainer.progress = tqdm(disable=True)
    st = trainer.state
    st.step, st.train_seconds, st.train_tokens = 100, seconds, 1000
    st.seconds_at_speed_start = seconds - 80.0  # updates 21-100 took 1 s each
    trainer._fit_schedule()
    assert st.schedule_steps == expected
    assert st.last_step(trainer.tc) == (expected or 1200)


def test_a_fitted_end_holds_only_for_the_limits_it_was_fitted_to():
    state = TrainState(schedule_steps=582, schedule_minutes=10.0)
    fitted = TrainConfig(lr_schedule="linear", warmup_steps=500, max_steps=1200, max_minutes=10.0)
    assert state.last_step(fitted) == 582
    assert state.last_step(replace(fitted, max_steps=400)) == 400  # resumed with a lower step limit
    assert state.last_step(replace(fitted, max_minutes=20.0)) == 1200  # resumed with more time: its own budget
    assert state.last_step(replace(fitted, lr_schedule="inverse_sqrt")) == 1200  # no end to fit
    assert TrainState().last_step(fitted) == 1200 and TrainState().last_step(replace(fitted, max_steps=0)) == 0


@pytest.mark.slow
def test_resume_with_other_batching_moves_on_instead_of_looping(tmp_path):
    run_dir = tmp_path / "run"
    run(toy_config(tmp_path, max_steps=10, eval_every=0, max_tokens=512), run_dir)
    assert read(run_dir / "checkpoints" / "last.pt")["train_state"]["batch_in_epoch"] == 10
    # 4096-token batches: the epoch has fewer batches than the saved position
    metrics = run(toy_config(tmp_path, max_steps=14, eval_every=0, max_tokens=4096, resume=True), run_dir)
    assert metrics["steps"] == 14 and metrics["epochs"] >= 1


def train_cmd(run_dir, *extra):
    return toy_train_cmd(
        "train.max_steps=60",
        "train.save_every=4",
        "train.eval_every=30",
        "train.threads=1",
        "train.progress=false",
        f"data.cache_dir={run_dir.parent / 'cache'}",
        f"hydra.run.dir={run_dir}",
        *extra,
    )


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run(train_cmd(reference), cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read(last)["train_state"]["step"]
    assert killed_at < 60, "the run finished before it could be killed; kill earlier"
    done = subprocess.run(
        train_cmd(killed, "train.resume=true"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert f"resumed from {last} at step {killed_at}" in (killed / "train.log").read_text()
    assert_same_weights(weights(reference / "checkpoints" / "last.pt"), weights(last))


@pytest.mark.slow
def test_sigint_saves_a_resumable_checkpoint(tmp_path):
    run_dir = tmp_path / "interrupted"
    cmd = train_cmd(run_dir, "train.max_steps=100000", "train.save_every=0", "train.eval_every=0")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run_dir / "train.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and "epoch of" in log.read_text()):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "resumable checkpoint:" in err and "Traceback" not in err
    assert read(run_dir / "checkpoints" / "last.pt")["train_state"]["step"] > 0
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    assert "resume with: python -m mt.train" in log.read_text()  # what the terminal said is in train.log too


def test_the_resume_command_names_each_setting_once():
    from mt.train import resume_command

    first = resume_command(["train=full", "train.max_minutes=0"], "runs/a")
    assert first == "python -m mt.train train=full train.max_minutes=0 train.resume=true hydra.run.dir=runs/a"
    again = resume_command(["train=full", "train.resume=true", "hydra.run.dir=runs/a"], "runs/a")  # resumed, stopped
    assert again == "python -m mt.train train=full train.resume=true hydra.run.dir=runs/a"


def test_interrupted_save_leaves_previous_checkpoint_usable(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_torch_save(path, {"format": "mt-checkpoint", "version": 1, "step": 1})

    def torn_save(obj, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # killed in the middle of writing

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save(path, {"format": "mt-checkpoint", "version": 1, "step": 2})
    monkeypatch.undo()
    assert read(path)["step"] == 1
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


@pytest.mark.slow
def test_nonfinite_losses_are_skipped_then_stop_the_run(tmp_path, monkeypatch):
    real = engine_module.batch_loss
    calls = {"n": 0}

    def sometimes_nan(model, batch, smoothing, align_weight, output_class):
        result = real(model, batch, smoothing, align_weight, output_class)
        calls["n"] += 1
        return result._replace(loss=result.loss * float("nan")) if calls["n"] in (3, 4) else result

    monkeypatch.setattr(engine_module, "batch_loss", sometimes_nan)
    metrics = run(toy_config(tmp_path, max_steps=10, eval_every=0, max_epochs=1), tmp_path / "a")
    assert metrics["nonfinite_steps"] == 2 and metrics["steps"] == 10

    monkeypatch.setattr(
        engine_module,
        "batch_loss",
        lambda m, b, s, a, c: real(m, b, s, a, c)._replace(loss=real(m, b, s, a, c).loss * float("nan")),
    )
    with pytest.raises(UserError, match="non-finite losses in a row"):
        run(toy_config(tmp_path, max_steps=10, max_bad_steps=3), tmp_path / "b")


@pytest.mark.slow
def test_train_log_holds_validation_and_test_lines(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run(
        train_cmd(run_dir, "train.max_steps=8", "train.eval_every=4"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    log = (run_dir / "train.log").read_text()
    assert log.count("| valid loss") == 2 and "done: test BLEU" in log
    assert "step 4 epoch" in done.stderr and "done: test BLEU" in done.stderr  # and on the terminal


@pytest.mark.slow
def test_sweep_from_another_directory_with_a_failing_job_exits_nonzero(tmp_path):
    """Built-in relative data paths resolve from anywhere; a failed job fails the sweep after the others ran."""
    sweep = tmp_path / "sweep"
    python, module, train, *toy = toy_train_cmd()
    overrides = ["train.max_steps=4", "train.eval_every=4", "train.progress=false", "train.optimizer=adam,sgd",
                 f"data.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    command = [python, module, train, "-m", *toy, *overrides]  # Hydra wants -m before the overrides
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "1 sweep job(s) failed" in done.stderr and "train.optimizer must be one of adam, adamw" in done.stderr
    statuses = sorted(json.loads(p.read_text()).get("status") for p in sweep.glob("*/metrics.json"))
    assert statuses == ["completed"]  # the good job ran; the bad one was refused before writing metrics


def test_a_run_saved_before_a_model_key_existed_resumes_with_its_default(tmp_path):
    run_dir = tmp_path / "run"
    run(toy_config(tmp_path, max_steps=6, eval_every=0), run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    ckpt = read(last)
    del ckpt["model_config"]["output_shortlist"]  # as written before model.output_shortlist existed
    torch.save(ckpt, last)
    assert run(toy_config(tmp_path, max_steps=8, eval_every=0, resume=True), run_dir)["steps"] == 8
    ckpt["model_config"]["d_model"] = 32  # a real difference is still refused
    torch.save(ckpt, last)
    with pytest.raises(UserError, match="different model config"):
        run(toy_config(tmp_path, max_steps=10, eval_every=0, resume=True), run_dir)
