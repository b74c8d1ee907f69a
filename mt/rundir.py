"""A run directory: where each file of a training run lives, and who may write there.

A new run refuses a directory that already holds a run (its checkpoints or metrics) unless it
resumes it (train.resume=true) or is told to replace it (train.overwrite=true); and only one live
process trains into a directory at a time: it holds an exclusive lock on `.lock`, a file that
names its PID. The lock is an flock, so the kernel releases it when the process dies however it
dies; a lock file left behind by a dead process (it still names that PID) is detected as free
and taken over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mt.errors import UserError
from mt.model_folder import is_model_folder
from mt.paths import RUN_ROOT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:  # resumable: model, optimizer, step, data position, RNG
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:  # best validation BLEU
        return self.checkpoints / "best.pt"

    @property
    def averaged(self) -> Path:  # mean of the last snapshots (train.average_last)
        return self.checkpoints / "averaged.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def test_output(self, side: str, corpus: str = "") -> Path:  # side: hyp | ref; corpus: of data.corpora
        return self.root / (f"test.{corpus}.{side}.txt" if corpus else f"test.{side}.txt")

    def holds_run(self) -> bool:
        """A checkpoint, or metrics of a run that got past setup, is there to lose."""
        if self.checkpoints.is_dir() and any(self.checkpoints.glob("*.pt")):
            return True
        try:
            status = json.loads(self.metrics.read_text(encoding="utf-8")).get("status")
        except (OSError, ValueError, AttributeError):
            return self.metrics.exists()
        return status != "failed"

    def clear_run(self) -> None:
        """Delete a previous run's checkpoints, metrics, test output and TensorBoard logs."""
        for directory in (self.checkpoints, self.tensorboard):
            shutil.rmtree(directory, ignore_errors=True)
        for path in (self.metrics, *self.root.glob("test.*hyp.txt"), *self.root.glob("test.*ref.txt")):
            path.unlink(missing_ok=True)


def refuse_clobbering(run_dir: RunDir, resume: bool, overwrite: bool) -> None:
    """UserError if a new run (neither resuming nor overwriting) would replace the run in `run_dir`."""
    if run_dir.holds_run() and not resume and not overwrite:
        raise UserError(
            f"{run_dir.root} already holds a run; resume it with train.resume=true, replace it "
            "with train.overwrite=true, or choose another hydra.run.dir"
        )


def is_demo_run(metrics: dict) -> bool:
    """A toy-corpus or smoke-recipe run: made to test the pipeline, not to translate with."""
    data = (metrics.get("config") or {}).get("data") or {}
    return data.get("name") == "toy" or "train=smoke" in (metrics.get("overrides") or [])


def latest_checkpoint(root: Path = RUN_ROOT) -> Path:
    """The default model of every tool: best.pt of the newest *finished* run under outputs/.

    Toy-corpus and smoke-recipe runs, unfinished runs and sweep jobs (multirun/) never become the
    default; name them with --checkpoint (a .pt file or a run folder).
    """
    finished, skipped = [], 0
    for metrics_file in root.glob("**/metrics.json") if root.is_dir() else []:
        try:
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        best = metrics_file.parent / "checkpoints" / "best.pt"
        if isinstance(metrics, dict) and metrics.get("status") == "completed" and best.is_file():
            if is_demo_run(metrics):
                skipped += 1
            else:
                finished.append((metrics_file.stat().st_mtime, str(best)))
    if not finished:
        also = f" ({skipped} toy/smoke runs there are not used by default)" if skipped else ""
        raise UserError(f"no finished training run under {root}/{also}: run `make train` first, or pass --checkpoint")
    return Path(max(finished)[1])


def model_file(path: Path) -> Path:
    """A checkpoint path as given: a run folder means its checkpoints/best.pt; an exported model
    folder (mt.model_folder, written by `python -m mt.export`) is read as it is."""
    if not path.is_dir() or is_model_folder(path):
        return path
    if (path / "model.bin").is_file():
        raise UserError(f"{path} is a CTranslate2 model: translate with it through --engine ct2 --model {path}")
    if not RunDir(path).best.is_file():
        raise UserError(
            f"{path} is a directory without checkpoints/best.pt or config.json + model.safetensors: give a run "
            "folder, an exported model folder (python -m mt.export) or a .pt file"
        )
    return RunDir(path).best


def checkpoint_to_use(given: str | None, prog: str) -> Path:
    """--checkpoint as given (file or run folder), else the latest finished run; says on stderr
    which file it chose (none to say when --checkpoint named the file itself)."""
    path = model_file(Path(given)) if given else latest_checkpoint()
    if path != Path(given or ""):
        print(f"{prog}: using {path}", file=sys.stderr)
    return path


class RunLock:
    """An exclusive, crash-safe claim on a run directory (see the module docstring)."""

    def __init__(self, run_dir: RunDir):
        self.path = run_dir.lock_file
        self._handle: IO[str] | None = None

    def ensure_free(self) -> None:
        """UserError (naming the PID) if a live process holds the lock; writes nothing."""
        if self.path.exists():
            with open(self.path, encoding="utf-8") as handle:
                self._lock(handle)  # closing the file releases the probe's lock

    def _lock(self, handle: IO[str]) -> None:
        """flock `handle` without waiting, or UserError naming the process that holds it."""
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError(
                    f"{self.path.parent} is in use by another training process (PID {holder}); "
                    "wait for it or choose another hydra.run.dir"
                ) from None
            raise UserError(f"cannot lock {self.path}: {err.strerror}") from None

    def acquire(self) -> None:
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        self._lock(handle)
        handle.seek(0)
        stale = handle.read().strip()
        if stale and stale != str(os.getpid()):
            log.info("taking over the lock of process %s, which is no longer running", stale)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            # Emptied, not deleted: deleting would let a process that opened the old file lock
            # it while another locks a new file at the same path.
            self._handle.truncate(0)
            self._handle.close()
            self._handle = None


def preflight(run_dir: RunDir, resume: bool, overwrite: bool) -> None:
    """The checks of `claim` without writing anything (before Hydra writes its .hydra/ files)."""
    RunLock(run_dir).ensure_free()
    refuse_clobbering(run_dir, resume, overwrite)


def claim(run_dir: RunDir, resume: bool, overwrite: bool, lock: bool = True) -> RunLock | None:
    """Create and lock the run directory for a training process; refuse to clobber a run.

    With lock=False (DDP ranks other than 0) only make sure the directory exists.
    """
    try:
        run_dir.root.mkdir(parents=True, exist_ok=True)
        if not lock:
            return None
        held = RunLock(run_dir)
        held.acquire()
    except OSError as err:
        raise UserError(f"cannot write to the run directory {run_dir.root}: {err.strerror}") from None
    try:
        refuse_clobbering(run_dir, resume, overwrite)
        if run_dir.holds_run() and not resume:
            log.warning("train.overwrite=true: deleting the previous run's checkpoints and logs in %s", run_dir.root)
            run_dir.clear_run()
    except BaseException:
        held.release()
        raise
    return held
