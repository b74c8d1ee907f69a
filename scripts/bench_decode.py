"""Decoding speed on Multi30k test2016: greedy and beam 5, with and without the key/value cache.

    python scripts/bench_decode.py [--checkpoint CKPT] [--uncached-limit 200]

Prints sentences/s and target tokens/s, and the cache's speed-up over recomputing the
whole prefix at every step (the way JoeyNMT decodes), measured on the same sentences.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mt.checkpoint import load
from mt.config import DecodeConfig
from mt.decode import translate_ids
from mt.fileio import read_lines
from mt.rundir import checkpoint_to_use


def timed(model, src_ids, cfg, use_cache) -> dict[str, float]:
    start = time.perf_counter()
    hyps = translate_ids(model, src_ids, cfg, use_cache=use_cache)
    seconds = time.perf_counter() - start
    out_tokens = sum(len(h[0].tokens) + 1 for h in hyps)
    return {
        "sentences": len(src_ids),
        "seconds": seconds,
        "sentences_per_sec": len(src_ids) / seconds,
        "target_tokens_per_sec": out_tokens / seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint")
    p.add_argument("--src", default="data/multi30k/test_2016_flickr.en.gz")
    p.add_argument("--uncached-limit", type=int, default=200, help="sentences for the (slow) uncached comparison")
    p.add_argument("--json", default="outputs/bench/decode.json")
    args = p.parse_args()
    path = checkpoint_to_use(args.checkpoint, "bench_decode")
    loaded = load(path)
    src_ids = loaded.tokenizer.encode_src(read_lines(Path(args.src)))
    result: dict = {"checkpoint": str(path), "threads": torch.get_num_threads(), "torch": torch.__version__}
    for name, beam in (("greedy", 1), ("beam5", 5)):
        cfg = DecodeConfig(beam_size=beam)
        result[f"{name}_cached_full_set"] = timed(loaded.model, src_ids, cfg, True)
        subset = src_ids[: args.uncached_limit]
        cached = timed(loaded.model, subset, cfg, True)
        uncached = timed(loaded.model, subset, cfg, False)
        result[f"{name}_subset_cached"], result[f"{name}_subset_uncached"] = cached, uncached
        result[f"{name}_cache_speedup"] = uncached["seconds"] / cached["seconds"]
    for key, value in result.items():
        if isinstance(value, dict):
            print(
                f"{key:>24}: {value['sentences']} sents in {value['seconds']:.1f}s = "
                f"{value['sentences_per_sec']:.1f} sent/s, {value['target_tokens_per_sec']:.0f} tok/s"
            )
        elif isinstance(value, float):
            print(f"{key:>24}: {value:.2f}x")
        else:
            print(f"{key:>24}: {value}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
