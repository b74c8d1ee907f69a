"""Prepare Multi30k task 1 in data/multi30k: copy from a local directory, or download.

python scripts/prepare_data.py --from ../shared/data/multi30k --to data/multi30k
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.request
from pathlib import Path

URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{name}"
SPLITS = ("train", "val", "test_2016_flickr")
LANGS = ("en", "de", "fr", "cs")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", default="../shared/data/multi30k")
    p.add_argument("--to", dest="target", default="data/multi30k")
    args = p.parse_args()
    source, target = Path(args.source), Path(args.target)
    names = [f"{s}.{lang}.gz" for s in SPLITS for lang in LANGS]
    target.mkdir(parents=True, exist_ok=True)
    missing = [n for n in names if not (target / n).is_file()]
    if not missing:
        print(f"data: Multi30k ready in {target}")
        return
    for name in missing:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / f".{name}.part")
        else:
            try:
                with urllib.request.urlopen(URL.format(name=name), timeout=30) as response:
                    (target / f".{name}.part").write_bytes(response.read())
            except OSError as err:
                sys.exit(
                    f"prepare_data: {name} is not in {source} and cannot be downloaded ({err}); "
                    "pass --from DIR (make data DATA_DIR=DIR)"
                )
        (target / f".{name}.part").replace(target / name)
    print(f"data: Multi30k ({len(missing)} files) prepared in {target}")


if __name__ == "__main__":
    main()
