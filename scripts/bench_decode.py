"""Decoding speed on Multi30k test2016: greedy and beam 5, with and without the key/value cache,
or this code against another git revision's, measured in one run.

    python scripts/bench_decode.py [--checkpoint CKPT] [--uncached-limit 200] [--threads N]
    python scripts/bench_decode.py --against REV [--rounds 3] [--threads N]

The first form prints sentences/s and target tokens/s, and the cache's speed-up over
recomputing the whole prefix at every step (the way JoeyNMT decodes), on the same sentences.

`--against REV` checks REV out into a temporary git worktree and times greedy and beam-5
decoding of the whole test set with REV's `mt` package and with this tree's, in separate
processes that alternate (this, REV, REV, this, ...) so that a slow spell of a shared machine
hits both; it prints each round, the median ratio, and whether the two gave the same
translations (token ids of every best hypothesis). Same checkpoint, threads and sentences.
REV's `mt` must have what this script imports (`mt.device.cpu_info`: commit 26e4c5a and later).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mt.checkpoint import load
from mt.config import DecodeConfig
from mt.decode import translate_ids
from mt.device import cpu_info
from mt.errors import exit_on_user_error
from mt.fileio import atomic_write_json, read_lines
from mt.rundir import checkpoint_to_use

ROOT = Path(__file__).resolve().parent.parent
SEARCHES = (("greedy", 1), ("beam5", 5))


def timed(model, src_ids, cfg, use_cache) -> tuple[dict[str, float], list[list[int]]]:
    start = time.perf_counter()
    hyps = translate_ids(model, src_ids, cfg, use_cache=use_cache)
    seconds = time.perf_counter() - start
    out_tokens = sum(len(h[0].tokens) + 1 for h in hyps)
    speed = {
        "sentences": len(src_ids),
        "seconds": seconds,
        "sentences_per_sec": len(src_ids) / seconds,
        "target_tokens_per_sec": out_tokens / seconds,
    }
    return speed, [h[0].tokens for h in hyps]


def cache_comparison(checkpoint: Path, src: Path, uncached_limit: int) -> dict:
    loaded = load(checkpoint)
    src_ids = loaded.tokenizer.encode_src(read_lines(src))
    result: dict = {"checkpoint": str(checkpoint)}
    for name, beam in SEARCHES:
        cfg = DecodeConfig(beam_size=beam)
        result[f"{name}_cached_full_set"], _ = timed(loaded.model, src_ids, cfg, True)
        subset = src_ids[:uncached_limit]
        cached, _ = timed(loaded.model, subset, cfg, True)
        uncached, _ = timed(loaded.model, subset, cfg, False)
        result[f"{name}_subset_cached"], result[f"{name}_subset_uncached"] = cached, uncached
        result[f"{name}_cache_speedup"] = uncached["seconds"] / cached["seconds"]
    return result


def time_searches(checkpoint: Path, src: Path, out: Path) -> None:
    """One side of --against (run in a subprocess whose `mt` is the tree under test)."""
    loaded = load(checkpoint)
    src_ids = loaded.tokenizer.encode_src(read_lines(src))
    translate_ids(loaded.model, src_ids[:16], DecodeConfig(beam_size=5))  # warm-up
    result = {}
    for name, beam in SEARCHES:
        speed, best = timed(loaded.model, src_ids, DecodeConfig(beam_size=beam), True)
        result[name] = {**speed, "best_tokens": best}
    out.write_text(json.dumps(result))


def worktree(rev: str, where: Path) -> Path:
    tree = where / "tree"
    try:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as err:
        sys.exit(f"bench_decode: cannot check out {rev!r}: {err.stderr.strip().splitlines()[-1]}")
    return tree


def against(rev: str, checkpoint: Path, src: Path, threads: int, rounds: int) -> dict:
    sides = {"this": ROOT}
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as tmp:
        sides[rev] = worktree(rev, Path(tmp))
        threads_env = {"OMP_NUM_THREADS": str(threads)}
        env_of = {name: {**os.environ, **threads_env, "PYTHONPATH": str(tree)} for name, tree in sides.items()}
        try:
            imports = subprocess.run(
                [sys.executable, __file__, "--help"], env=env_of[rev], capture_output=True, text=True
            )
            if imports.returncode != 0:  # before any timing: REV's mt lacks what this script imports
                sys.exit(f"bench_decode: {rev} cannot run this script: {imports.stderr.strip().splitlines()[-1]}")
            runs: dict[str, list[dict]] = {name: [] for name in sides}
            for r in range(rounds):
                for name in ("this", rev) if r % 2 == 0 else (rev, "this"):
                    out = Path(tmp) / f"{r}-{len(runs[name])}-{name.replace('/', '_')}.json"
                    cmd = [sys.executable, __file__, "--time-searches", str(out), "--checkpoint", str(checkpoint)]
                    subprocess.run([*cmd, "--src", str(src), "--threads", str(threads)], env=env_of[name], check=True)
                    runs[name].append(json.loads(out.read_text()))
                    speeds = "  ".join(f"{s} {runs[name][-1][s]['sentences_per_sec']:.1f}" for s, _ in SEARCHES)
                    print(f"round {r + 1} {name:>12}: sentences/s {speeds}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(sides[rev])], check=False)
    result: dict = {"against": rev, "rounds": rounds}
    for search, _ in SEARCHES:
        ours = [run[search]["sentences_per_sec"] for run in runs["this"]]
        theirs = [run[search]["sentences_per_sec"] for run in runs[rev]]
        equal = [a == b for a, b in zip(runs["this"][0][search]["best_tokens"], runs[rev][0][search]["best_tokens"])]
        result[search] = {
            "this_sentences_per_sec": ours,
            f"{rev}_sentences_per_sec": theirs,
            "speedup_median": statistics.median(a / b for a, b in zip(ours, theirs)),
            "same_best_translation": sum(equal),
            "sentences": len(equal),
        }
        r = result[search]
        same = f"same best translation for {r['same_best_translation']} of {r['sentences']}"
        print(f"{search}: {r['speedup_median']:.2f}x {rev} (median of {rounds} rounds); {same}")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint")
    p.add_argument("--src", default="data/multi30k/test_2016_flickr.en.gz")
    p.add_argument("--uncached-limit", type=int, default=200, help="sentences for the (slow) uncached comparison")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, every core)")
    p.add_argument("--against", metavar="REV", help="time this tree against git revision REV, alternating")
    p.add_argument("--rounds", type=int, default=3, help="with --against: timings of each side")
    p.add_argument("--time-searches", type=Path, help=argparse.SUPPRESS)  # one side of --against
    p.add_argument("--json", default="outputs/bench/decode.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = checkpoint_to_use(args.checkpoint, "bench_decode")
    src = Path(args.src).resolve()
    if args.time_searches:
        time_searches(path, src, args.time_searches)
        return
    info = {
        "cpu": cpu_info(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
    }
    if args.against:
        result = {
            **info,
            "checkpoint": str(path),
            **against(args.against, path.resolve(), src, torch.get_num_threads(), args.rounds),
        }
    else:
        result = {**info, **cache_comparison(path, src, args.uncached_limit)}
        for key, value in result.items():
            if isinstance(value, dict) and "seconds" in value:
                print(
                    f"{key:>24}: {value['sentences']} sents in {value['seconds']:.1f}s = "
                    f"{value['sentences_per_sec']:.1f} sent/s, {value['target_tokens_per_sec']:.0f} tok/s"
                )
            elif isinstance(value, float):
                print(f"{key:>24}: {value:.2f}x")
    atomic_write_json(Path(args.json), result)
    print(f"saved {args.json}")


if __name__ == "__main__":
    with exit_on_user_error("bench_decode"):  # no run to time, a bad path: one line, exit 2
        main()
