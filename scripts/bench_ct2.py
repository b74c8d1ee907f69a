"""Decoding on CPUs: our PyTorch decoder against CTranslate2 with float32 and int8 weights.

    python scripts/bench_ct2.py --checkpoint CKPT [--threads 1 2] [--beam 5] [--limit N] [--json FILE]

Exports the checkpoint twice into a temporary folder (`mt.export ct2`, float32 and int8), then,
in this one process, decodes Multi30k test2016 (its first --limit sentences) with each engine and
each thread count in turn: the same source ids, the same decoding settings (DecodeConfig with
--beam; mt.ct2 maps it onto CTranslate2). Prints sentences/s and target tokens/s (decoding only,
after a warm-up on the first sentences), BLEU and chrF (sacreBLEU, mt.evaluate's scorer) and how
many translations equal ours, and saves JSON naming the CPU (/proc/cpuinfo) and the load average
before the run: another job on the cores changes every figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mt import ct2
from mt.checkpoint import load
from mt.cli import inference_threads
from mt.config import DecodeConfig, default_data_dir
from mt.decode import translate_ids
from mt.device import cpu_info
from mt.errors import exit_on_user_error
from mt.evaluate import score_translations
from mt.export import export
from mt.fileio import atomic_write_json, read_lines
from mt.rundir import checkpoint_to_use


def measure(name: str, threads: int, decode: Callable, src_ids: list, refs: list[str], tokenizer) -> dict:
    """Decode every sentence once (after a warm-up batch) and score the best translations."""
    decode(src_ids[:8])
    start = time.perf_counter()
    hyps = decode(src_ids)
    seconds = time.perf_counter() - start
    best = [h[0].tokens if h else [] for h in hyps]
    scores = score_translations(tokenizer.decode_tgt(best), refs)
    row = {
        "engine": name,
        "threads": threads,
        "sentences": len(src_ids),
        "seconds": seconds,
        "sentences_per_sec": len(src_ids) / seconds,
        "target_tokens_per_sec": sum(len(t) + 1 for t in best) / seconds,
        **scores,
    }
    print(
        f"{name:>12} threads {threads}: {row['sentences_per_sec']:7.1f} sent/s"
        f" {row['target_tokens_per_sec']:8.0f} tok/s  BLEU {scores['bleu']:.2f} chrF {scores['chrf']:.2f}"
        f"  ({seconds:.1f} s)",
        flush=True,
    )
    return {**row, "best": best}


def run_all(path: Path, work: Path, thread_counts: list[int], loaded, src_ids: list, refs: list[str], cfg) -> list:
    """Export float32 and int8 CTranslate2 models into `work`, then measure every engine at every thread count."""
    sizes = {}
    for quantization in ("float32", "int8"):
        export(path, work / quantization, quantization, force=False)
        sizes[quantization] = (work / quantization / "ct2" / "model.bin").stat().st_size
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        ours = measure(
            "mt", threads, lambda ids: translate_ids(loaded.model, ids, cfg), src_ids, refs, loaded.tokenizer
        )
        rows.append(ours)
        for quantization in ("float32", "int8"):
            engine = ct2.load_ct2(work / quantization, "cpu", threads=threads)
            decode = lambda ids, engine=engine: ct2.translate_ids(engine, ids, cfg)
            row = measure(f"ct2 {quantization}", threads, decode, src_ids, refs, loaded.tokenizer)
            row["model_bin_bytes"] = sizes[quantization]
            row["same_as_mt"] = sum(a == b for a, b in zip(row["best"], ours["best"]))
            print(f"{'':>12} {row['same_as_mt']} of {len(src_ids)} translations equal mt's", flush=True)
            rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="default: the newest finished run under outputs/")
    data = default_data_dir("multi30k")
    p.add_argument("--src", default=str(data / "test_2016_flickr.en.gz"))
    p.add_argument("--ref", default=str(data / "test_2016_flickr.de.gz"))
    p.add_argument("--limit", type=int, default=0, help="the first N sentences only (0: all)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="+", default=[inference_threads()], help="thread counts to measure")
    p.add_argument("--json", default="docs/results/bench_ct2.json")
    args = p.parse_args()
    path = checkpoint_to_use(args.checkpoint, "bench_ct2")
    src, refs = read_lines(Path(args.src)), read_lines(Path(args.ref))
    if args.limit:
        src, refs = src[: args.limit], refs[: args.limit]
    load_before = os.getloadavg()
    loaded = load(path)
    src_ids = loaded.tokenizer.encode_src(src)
    cfg = DecodeConfig(beam_size=args.beam)
    with tempfile.TemporaryDirectory(prefix="mt-bench-ct2-") as work:
        rows = run_all(path, Path(work), args.threads, loaded, src_ids, refs, cfg)
    result = {
        "cpu": cpu_info()["cpu"],
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "checkpoint": str(path),
        "source": args.src,
        "sentences": len(src_ids),
        "decode": {"beam_size": cfg.beam_size, "length_penalty": cfg.length_penalty, "max_tokens": cfg.max_tokens},
        "torch": torch.__version__,
        "ctranslate2": ct2.import_ctranslate2().__version__,
        "python": sys.version.split()[0],
        "rows": [{k: v for k, v in row.items() if k != "best"} for row in rows],
    }
    atomic_write_json(Path(args.json), result)
    print(f"saved {args.json} ({result['cpu']}, {len(src_ids)} sentences, load average before {load_before[0]:.1f})")


if __name__ == "__main__":
    with exit_on_user_error("bench_ct2"):  # no run to time, a bad path: one line, exit 2
        main()
