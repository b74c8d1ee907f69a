"""Statistical baseline for the alignment study: eflomal on Multi30k en-fr + the Hansards gold pairs.

    make install                            # eflomal is a dependency of mt
    .venv/bin/python scripts/baseline_eflomal.py --json docs/results/align_eflomal.json
    .venv/bin/python scripts/baseline_eflomal.py --runs 10 --out studies/eflomal --json studies/eflomal/report.json
    .venv/bin/python scripts/baseline_eflomal.py --runs 10 --vote 5 --reuse --out studies/eflomal   # + voted rows

Trains eflomal (IBM1 + HMM + fertility, Gibbs sampling) on the 29,000 Multi30k en-fr training
pairs with the 447 gold sentence pairs appended (the gold *links* are never used), takes the
alignments of the 447 gold pairs, and scores forward, reverse and their symmetrizations with
mt.align's AER. Everything is lowercased. Multi30k is tokenized to match the Hansards gold:
punctuation split off, English "'s" / "n't" split, French elisions and contractions expanded
as in the gold (l' -> le, d' -> de, du -> de le, des -> de les, au -> à le, aux -> à les, ...).
The gold text itself is only lowercased (its tokens are what the links index).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mt.align.gold import Score, aer, format_score, read_alignment_file, read_gold_pairs  # noqa: E402
from mt.align.symmetrize import SYMMETRIZE, symmetrize  # noqa: E402
from mt.align.teacher import majority  # noqa: E402
from mt.errors import UserError, exit_on_user_error  # noqa: E402
from mt.fileio import read_lines  # noqa: E402
from mt.paths import ALIGNMENT_GOLD  # noqa: E402

PUNCT = re.compile(r"([^\w\s'])")
ELISION = {
    "l": "le",
    "d": "de",
    "j": "je",
    "qu": "que",
    "n": "ne",
    "s": "se",
    "c": "ce",
    "m": "me",
    "t": "te",
    "jusqu": "jusque",
    "lorsqu": "lorsque",
    "puisqu": "puisque",
    "quoiqu": "quoique",
}
CONTRACTION = {"du": "de le", "des": "de les", "au": "à le", "aux": "à les"}


KEEP_EN = {"'s", "'re", "'ve", "'ll", "'d", "'m", "n't"}


def _split_quotes(tokens: list[str], keep: set[str]) -> list[str]:
    """Apostrophes that are not part of a kept clitic become tokens of their own."""
    out: list[str] = []
    for t in tokens:
        out += [t] if t in keep or "'" not in t else t.replace("'", " ' ").split()
    return out


def tokenize_en(line: str) -> str:
    s = line.lower().replace("\u2019", "'")
    s = re.sub(r"n't\b", " n't", s)
    s = re.sub(r"'(s|re|ve|ll|d|m)\b", r" '\1", s)
    return " ".join(_split_quotes(PUNCT.sub(r" \1 ", s).split(), KEEP_EN))


def tokenize_fr(line: str) -> str:
    s = line.lower().replace("\u2019", "'")
    s = s.replace("aujourd'hui", "aujourd' hui")
    s = re.sub(
        r"\b(" + "|".join(sorted(ELISION, key=len, reverse=True)) + r")'", lambda m: ELISION[m.group(1)] + " ", s
    )
    tokens = _split_quotes(PUNCT.sub(r" \1 ", s).split(), {"aujourd'"})
    return " ".join(CONTRACTION.get(w, w) for w in tokens)


def run_eflomal(src: list[str], tgt: list[str], work: Path, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    (work / "src").write_text("\n".join(src) + "\n", encoding="utf-8")
    (work / "tgt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    exe = Path(sys.executable).parent / "eflomal-align"
    if not exe.is_file():
        raise UserError("eflomal-align not found: install it with `.venv/bin/pip install eflomal`")
    cmd = [
        str(exe),
        "-s",
        str(work / "src"),
        "-t",
        str(work / "tgt"),
        "-f",
        str(work / "fwd"),
        "-r",
        str(work / "rev"),
        "--model",
        str(args.model),
        "--n-samplers",
        str(args.samplers),
        "--overwrite",
    ]
    if args.length:
        cmd += ["--length", str(args.length)]
    print("running:", " ".join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"eflomal-align failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return read_lines(work / "fwd"), read_lines(work / "rev")


def diagonal(n_src: int, n_tgt: int) -> set[tuple[int, int]]:
    return {(min(n_src - 1, round(j * n_src / n_tgt)), j) for j in range(n_tgt)} if n_src and n_tgt else set()


def parse(line: str) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in (t.split("-") for t in line.split())}


def align_once(
    src: list[str], tgt: list[str], gold_en: list[str], gold_fr: list[str], args: argparse.Namespace
) -> tuple[dict[str, list[set[tuple[int, int]]]], float]:
    """One eflomal run on the whole corpus: the gold pairs' links of every system, and its seconds."""
    n = len(gold_en)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        fwd_lines, rev_lines = run_eflomal(src, tgt, Path(tmp), args)
    seconds = time.time() - start
    fwd = [parse(x) for x in fwd_lines[-n:]]
    rev = [parse(x) for x in rev_lines[-n:]]  # eflomal writes both directions as source-target
    for k, (f, r) in enumerate(zip(fwd, rev)):  # sanity: indices within the gold sentence lengths
        ns, nt = len(gold_en[k].split()), len(gold_fr[k].split())
        if any(i >= ns or j >= nt for i, j in f | r):
            raise UserError(f"eflomal output for gold pair {k} is out of range: lines misaligned?")
    return systems_of(fwd, rev, gold_en, gold_fr), seconds


def systems_of(
    fwd: list[set[tuple[int, int]]], rev: list[set[tuple[int, int]]], gold_en: list[str], gold_fr: list[str]
) -> dict[str, list[set[tuple[int, int]]]]:
    """Every system's links of the gold pairs from one forward and one reverse alignment."""
    systems = {"forward": fwd, "reverse": rev}
    # Trivial reference, no training: target word j linked to source word round(j * S / T).
    systems["diagonal"] = [diagonal(len(e.split()), len(f.split())) for e, f in zip(gold_en, gold_fr)]
    for method in SYMMETRIZE:
        systems[method] = [symmetrize(f, r, method) for f, r in zip(fwd, rev)]
    return systems


def check_reused(out_dir: Path, settings: dict[str, float]) -> None:
    """Refuse links an earlier call made with other eflomal settings (folders from before the
    settings were written are taken as they are, with a note)."""
    written = out_dir / "settings.json"
    if not written.is_file():
        print(f"note: {out_dir} does not say how it was made; taken as {settings}", file=sys.stderr)
        return
    earlier = json.loads(written.read_text(encoding="utf-8"))
    if earlier != settings:
        raise UserError(f"{out_dir} was made with {earlier}, not {settings}: drop --reuse or pass those settings")


def read_pharaoh(path: Path) -> list[set[tuple[int, int]]]:
    return [parse(line) for line in read_lines(path)]


def voted(runs: list[dict[str, list[set[tuple[int, int]]]]], gold_en: list[str], gold_fr: list[str]):
    """The systems of the runs' majority links in each direction (the teacher of train.align_teacher_runs)."""
    fwd, rev = (majority([run[side] for run in runs]) for side in ("forward", "reverse"))
    return systems_of([set(x) for x in fwd], [set(x) for x in rev], gold_en, gold_fr)


def write_pharaoh(out: Path, systems: dict[str, list[set[tuple[int, int]]]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, links in systems.items():
        (out / f"{name}.align").write_text(
            "".join(" ".join(f"{i}-{j}" for i, j in sorted(x)) + "\n" for x in links), encoding="utf-8"
        )


def spread(runs: list[dict[str, Score]]) -> dict[str, dict[str, float]]:
    """Each system's AER over the runs: mean, sample standard deviation, min, max (in %), and its
    mean precision and recall."""
    out = {}
    for name in runs[0]:
        aers = [100 * r[name].aer for r in runs]
        out[name] = {
            "aer_mean": statistics.mean(aers),
            "aer_sd": statistics.stdev(aers),
            "aer_min": min(aers),
            "aer_max": max(aers),
            "precision_mean": statistics.mean(100 * r[name].precision for r in runs),
            "recall_mean": statistics.mean(100 * r[name].recall for r in runs),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/multi30k", help="Multi30k directory (train.en.gz, train.fr.gz)")
    p.add_argument("--gold-dir", default=str(ALIGNMENT_GOLD), help="hansards.src-tgt and hansards.gold")
    p.add_argument("--model", type=int, default=3, help="eflomal model: 1 IBM1, 2 +HMM, 3 +fertility")
    p.add_argument("--samplers", type=int, default=3, help="eflomal --n-samplers (3 is its default)")
    p.add_argument("--length", type=float, default=0.0, help="relative number of iterations (0 = eflomal default)")
    p.add_argument(
        "--runs",
        type=int,
        default=1,
        help="run eflomal this many times (it samples and takes no seed) and report each system's mean and "
        "standard deviation; run k's links go to OUT/run<k>",
    )
    p.add_argument(
        "--vote",
        type=int,
        default=0,
        help="also score the majority links of each group of this many runs (as train.align_teacher_runs votes)",
    )
    p.add_argument(
        "--reuse", action="store_true", help="read run k's links from OUT/run<k> where an earlier call wrote them"
    )
    p.add_argument("--out", default="data/align/eflomal", help="where the Pharaoh alignments of the gold pairs go")
    p.add_argument("--json", help="also write the scores here")
    args = p.parse_args()
    with exit_on_user_error("baseline_eflomal"):
        if args.runs < 1:
            raise UserError(f"--runs must be at least 1, not {args.runs}")
        if args.vote and not 2 <= args.vote <= args.runs:
            raise UserError(f"--vote needs 2 to --runs ({args.runs}) runs a group, not {args.vote}")
        data, gold_dir = Path(args.data), Path(args.gold_dir)
        for f in (data / "train.en.gz", data / "train.fr.gz"):
            if not f.is_file():
                raise UserError(f"not found: {f} (run `make data`)")
        gold_en, gold_fr = read_gold_pairs(gold_dir / "hansards.src-tgt")
        gold = read_alignment_file(gold_dir / "hansards.gold", one_based=True)
        train_en = [tokenize_en(s) for s in read_lines(data / "train.en.gz")]
        train_fr = [tokenize_fr(s) for s in read_lines(data / "train.fr.gz")]
        src = train_en + [s.lower() for s in gold_en]
        tgt = train_fr + [t.lower() for t in gold_fr]
        settings = {"model": args.model, "samplers": args.samplers, "length": args.length}
        runs, links_of_runs, seconds = [], [], []
        for k in range(1, args.runs + 1):
            out_dir = Path(args.out) / f"run{k}" if args.runs > 1 else Path(args.out)
            earlier = [out_dir / "forward.align", out_dir / "reverse.align"]
            if args.reuse and all(f.is_file() for f in earlier):
                check_reused(out_dir, settings)
                systems = systems_of(*map(read_pharaoh, earlier), gold_en, gold_fr)
            else:
                systems, took = align_once(src, tgt, gold_en, gold_fr, args)
                write_pharaoh(out_dir, systems)
                (out_dir / "settings.json").write_text(json.dumps(settings) + "\n", encoding="utf-8")
                seconds.append(took)
            runs.append({name: aer(gold, links) for name, links in systems.items()})
            links_of_runs.append(systems)
        took = f"{statistics.mean(seconds):.0f} s a run" if seconds else "every run's links reused"
        print(
            f"eflomal-align (model {args.model}, {args.samplers} samplers) on {len(src)} pairs "
            f"({len(train_en)} Multi30k + {len(gold_en)} gold), {took}; "
            f"AER on the {len(gold_en)} gold pairs" + (f", {args.runs} runs:" if args.runs > 1 else ":")
        )
        summary = spread(runs) if args.runs > 1 else None  # the sd needs two runs
        if summary is None:
            for name, score in runs[0].items():
                print(f"  {name:<20} {format_score(score)}")
        else:
            for name, row in summary.items():
                print(
                    f"  {name:<20} AER {row['aer_mean']:5.2f} ± {row['aer_sd']:.2f} (min {row['aer_min']:.2f}, "
                    f"max {row['aer_max']:.2f}), P {row['precision_mean']:.1f} R {row['recall_mean']:.1f}"
                )
        votes = []
        if args.vote:
            groups = [links_of_runs[i : i + args.vote] for i in range(0, args.runs - args.vote + 1, args.vote)]
            votes = [{name: aer(gold, x) for name, x in voted(g, gold_en, gold_fr).items()} for g in groups]
            unused = args.runs - len(groups) * args.vote
            print(
                f"majority links of {args.vote} runs, {len(groups)} disjoint group(s) of the runs"
                + (f" (the last {unused} in none):" if unused else ":")
            )
            for name in votes[0]:
                aers = [100 * v[name].aer for v in votes]
                sd = f" ± {statistics.stdev(aers):.2f}" if len(aers) > 1 else ""
                print(f"  {name:<20} AER {statistics.mean(aers):5.2f}{sd}  ({', '.join(f'{a:.2f}' for a in aers)})")
        if args.json:
            record = {
                "aligner": "eflomal",
                "model": args.model,
                "samplers": args.samplers,
                "training_pairs": len(src),
                "seconds_per_run": round(statistics.mean(seconds), 1) if seconds else None,
            }
            if summary is None:
                record["scores"] = {k: asdict(v) for k, v in runs[0].items()}
            else:  # no "scores": one draw is not the result
                record["runs"] = [{k: asdict(v) for k, v in run.items()} for run in runs]
                record["spread"] = summary
            if votes:
                record["vote"] = {
                    "runs_per_vote": args.vote,
                    "groups": [{k: asdict(v) for k, v in vote.items()} for vote in votes],
                }
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
