"""Write the synthetic en-de toy corpus used by tests and smoke runs (tests/fixtures/toy).

Word order differs between the languages when a sentence starts with a time adverb
(German verb-second: "today the dog runs" -> "heute läuft der hund"), so attention must
learn more than the diagonal. Deterministic: rerunning gives the same files.
"""

from __future__ import annotations

import itertools
import random
import sys
from pathlib import Path

SUBJECTS = [
    ("the dog", "der hund"),
    ("the cat", "die katze"),
    ("a man", "ein mann"),
    ("a woman", "eine frau"),
    ("the child", "das kind"),
    ("the bird", "der vogel"),
]
VERBS = [
    ("runs", "läuft"),
    ("sleeps", "schläft"),
    ("eats", "isst"),
    ("plays", "spielt"),
    ("sits", "sitzt"),
    ("waits", "wartet"),
]
PLACES = [
    ("in the park", "im park"),
    ("on the street", "auf der straße"),
    ("in the house", "im haus"),
    ("at the beach", "am strand"),
    ("in the garden", "im garten"),
]
TIMES = [("", ""), ("today", "heute"), ("now", "jetzt")]


def sentence(subj, verb, place, time) -> tuple[str, str]:
    if time[0]:
        en = f"{time[0]} {subj[0]} {verb[0]} {place[0]} ."
        de = f"{time[1]} {verb[1]} {subj[1]} {place[1]} ."
    else:
        en = f"{subj[0]} {verb[0]} {place[0]} ."
        de = f"{subj[1]} {verb[1]} {place[1]} ."
    return en[0].upper() + en[1:], de[0].upper() + de[1:]


def main(out: Path) -> None:
    pairs = [sentence(*combo) for combo in itertools.product(SUBJECTS, VERBS, PLACES, TIMES)]
    random.Random(0).shuffle(pairs)
    splits = {"valid": pairs[:30], "test": pairs[30:60], "train": pairs[60:]}
    out.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        for lang, column in (("en", 0), ("de", 1)):
            (out / f"{name}.{lang}").write_text("".join(p[column] + "\n" for p in split), encoding="utf-8")
    print(f"wrote {', '.join(f'{k}: {len(v)}' for k, v in splits.items())} pairs to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("tests/fixtures/toy"))
