"""Write Multi30k en-fr lowercased and tokenized like the Hansards gold (data/align/m30k-tok).

    python scripts/prepare_align_corpus.py [--from data/multi30k] [--to data/align/m30k-tok]

The alignment model then sees the same token conventions as the gold it is scored on (and as
the eflomal baseline, which uses the same tokenizers from scripts/baseline_eflomal.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from baseline_eflomal import tokenize_en, tokenize_fr

from mt.fileio import read_lines

SPLITS = ("train", "val", "test_2016_flickr")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", default="data/multi30k")
    p.add_argument("--to", dest="target", default="data/align/m30k-tok")
    args = p.parse_args()
    source, target = Path(args.source), Path(args.target)
    target.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        for lang, tokenize in (("en", tokenize_en), ("fr", tokenize_fr)):
            lines = read_lines(source / f"{split}.{lang}.gz")
            (target / f"{split}.{lang}").write_text("".join(tokenize(s) + "\n" for s in lines), encoding="utf-8")
    print(f"wrote {', '.join(SPLITS)} (en, fr) to {target}")


if __name__ == "__main__":
    main()
