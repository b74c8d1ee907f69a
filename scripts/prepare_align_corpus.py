"""Write Multi30k en-fr lowercased and tokenized like the Hansards gold (data/align/m30k-tok).

    python scripts/prepare_align_corpus.py [--from data/multi30k] [--to data/align/m30k-tok]

The alignment model then sees the same token conventions as the gold it is scored on (and as
the eflomal baseline, which uses the same tokenizers from scripts/baseline_eflomal.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from baseline_eflomal import tokenize_en, tokenize_fr

from mt.errors import UserError, exit_on_user_error
from mt.fileio import atomic_write_text, read_lines

SPLITS = ("train", "val", "test_2016_flickr")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", default="data/multi30k")
    p.add_argument("--to", dest="target", default="data/align/m30k-tok")
    args = p.parse_args()
    source, target = Path(args.source), Path(args.target)
    with exit_on_user_error("prepare_align_corpus"):
        files = {(split, lang): source / f"{split}.{lang}.gz" for split in SPLITS for lang in ("en", "fr")}
        missing = [str(path) for path in files.values() if not path.is_file()]
        if missing:  # checked before anything is written, so no half-made corpus is left behind
            raise UserError(f"{', '.join(missing)} not found: prepare Multi30k first (make data)")
        target.mkdir(parents=True, exist_ok=True)
        for (split, lang), path in files.items():
            tokenize = tokenize_en if lang == "en" else tokenize_fr
            lines = read_lines(path)
            atomic_write_text(target / f"{split}.{lang}", "".join(tokenize(s) + "\n" for s in lines))
    print(f"wrote {', '.join(SPLITS)} (en, fr) to {target}")


if __name__ == "__main__":
    main()
