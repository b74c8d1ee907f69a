"""Data pipeline at scale: a synthetic corpus of N pairs through mt.data.prepare, cold then cached.

    python scripts/bench_data.py [--pairs 1000000] [--num-proc 2]

Writes N gzip'd line-parallel pairs (built from Multi30k sentences with numbered variants,
so the vocabulary is realistic), then times `prepare` twice in fresh processes: the first
run streams the text into Arrow, trains sentencepiece on a sample and tokenizes with
`--num-proc` workers; the second finds everything cached and memory-maps it. Prints wall
time and peak resident memory of each, and saves them as JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mt.paths import PREPARED_DATA, PROJECT_ROOT

CHILD = """
import resource, sys, time
from mt.config import DataConfig
from mt.data import prepare
cfg = DataConfig(name="synthetic", dir=sys.argv[1], cache_dir=sys.argv[2], train=["train"], valid=["val"],
                 test=["test"], vocab_size=8000, num_proc=int(sys.argv[3]), spm_input_sentence_size=200000)
start = time.perf_counter()
data = prepare(cfg)
seconds = time.perf_counter() - start
train = data.splits["train"]
src_lens, tgt_lens = train.lengths()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{seconds} {rss} {len(train)} {int(src_lens.sum() + tgt_lens.sum())}")
"""


def write_corpus(directory: Path, pairs: int) -> None:
    src = PREPARED_DATA / "multi30k" / "train.en.gz"
    tgt = PREPARED_DATA / "multi30k" / "train.de.gz"
    if not src.is_file():
        sys.exit(f"bench_data: {src} not found; run `make data` first")
    en = gzip.decompress(src.read_bytes()).decode().splitlines()
    de = gzip.decompress(tgt.read_bytes()).decode().splitlines()
    for split, n in (("train", pairs), ("val", 1000), ("test", 1000)):
        with (
            gzip.open(directory / f"{split}.en.gz", "wt", compresslevel=1) as fe,
            gzip.open(directory / f"{split}.de.gz", "wt", compresslevel=1) as fd,
        ):
            for i in range(n):
                j = i % len(en)
                fe.write(f"{en[j]} {i // len(en)}\n")
                fd.write(f"{de[j]} {i // len(en)}\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=1_000_000)
    p.add_argument("--num-proc", type=int, default=2)
    p.add_argument("--json", default="outputs/bench/data.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="mt-bench-data-") as tmp:
        corpus, cache = Path(tmp) / "corpus", Path(tmp) / "cache"
        corpus.mkdir()
        start = time.perf_counter()
        write_corpus(corpus, args.pairs)
        print(f"wrote {args.pairs:,} pairs in {time.perf_counter() - start:.1f}s")
        runs = []
        for label in ("cold", "cached"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(corpus), str(cache), str(args.num_proc)],
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            seconds, max_rss_kb, kept, tokens = out.stdout.split()
            runs.append(
                {
                    "run": label,
                    "seconds": float(seconds),
                    "peak_rss_mib": int(max_rss_kb) / 1024,
                    "train_pairs": int(kept),
                    "train_tokens": int(tokens),
                }
            )
            print(
                f"{label:>7}: {float(seconds):7.1f}s  peak RSS {int(max_rss_kb) / 1024:7.0f} MiB  "
                f"{int(kept):,} pairs, {int(tokens):,} tokens"
            )
        cache_mib = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
        print(f"cache on disk: {cache_mib:.0f} MiB")
    result = {"pairs": args.pairs, "num_proc": args.num_proc, "runs": runs, "cache_mib": cache_mib}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
