"""Thread settings on a shared CPU: how long a translation job takes alone and beside a training.

    python scripts/bench_threads.py --checkpoint outputs/.../best.pt [--lines 200]

Translates the first --lines test2016 sentences (beam 5) with `python -m mt.evaluate --threads T`
for T = 1, 2 (0 = torch's default: one per core): alone, and while a training (`python -m
mt.train`, toy corpus, small model, train.threads = 2 or 1) runs beside it on the same cores.
Prints the wall times and saves JSON. Every figure of one invocation comes from the same machine
in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mt.device import cpu_info
from mt.fileio import read_lines
from mt.paths import PROJECT_ROOT, SHARED_DATA


def evaluate_seconds(checkpoint: str, src: Path, ref: Path, threads: int, out: Path) -> float:
    cmd = [sys.executable, "-m", "mt.evaluate", "--checkpoint", checkpoint, "--src", str(src), "--ref", str(ref),
           "--beam", "5", "--threads", str(threads), "--out", str(out)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, cwd=PROJECT_ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def start_training(run_dir: Path, threads: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mt.train", "data=toy", "model=small", "train=smoke", "train.max_steps=100000",
           "train.eval_every=0", "train.save_every=0", "train.max_epochs=100000", "train.progress=false",
           f"train.threads={threads}", f"hydra.run.dir={run_dir}",
           f"data.cache_dir={run_dir.parent / 'cache'}"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until_training(run_dir: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = run_dir / "train.log"
        if log.exists() and "epoch of" in log.read_text():
            time.sleep(5)  # past the first, slow updates
            return
        time.sleep(0.5)
    raise RuntimeError("the training did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--lines", type=int, default=200)
    p.add_argument("--json", default="outputs/bench/threads.json")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mt-threads-"))
    src, ref = work / "src.en", work / "ref.de"
    for path, name in ((src, "test_2016_flickr.en.gz"), (ref, "test_2016_flickr.de.gz")):
        path.write_text("".join(line + "\n" for line in read_lines(SHARED_DATA / "multi30k" / name)[: args.lines]))
    rows = []
    for train_threads in (None, 2, 1):
        training = None
        if train_threads is not None:
            run_dir = work / f"train-{train_threads}"
            training = start_training(run_dir, train_threads)
            wait_until_training(run_dir)
        for threads in (1, 2):
            seconds = evaluate_seconds(args.checkpoint, src, ref, threads, work / "eval")
            rows.append({"training_threads": train_threads, "evaluate_threads": threads, "seconds": seconds})
            beside = "alone" if train_threads is None else f"beside a training with train.threads={train_threads}"
            print(f"evaluate --threads {threads}, {args.lines} sentences, beam 5, {beside}: {seconds:.1f} s")
        if training is not None:
            training.kill()
            training.wait()
    result = {"cpu": cpu_info()["cpu"], "lines": args.lines, "checkpoint": args.checkpoint, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.json} ({result['cpu']})")


if __name__ == "__main__":
    main()
