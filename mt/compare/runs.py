"""Finding the runs of a sweep, their metrics and parameters, and paired-bootstrap significance."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mt.config import NOT_HYPERPARAMETERS, CorpusConfig
from mt.errors import UserError
from mt.paths import SWEEP_ROOT
from mt.rundir import RunDir
from mt.runlog import RunMetrics, read_metrics

# Folders inside a run that never hold another run.
SKIP_DIRS = {"tb", "checkpoints", "tokenizer", "eval", ".hydra"}


STATUS_ORDER = {"completed": 0, "interrupted": 1, "running": 2, "failed": 3, "no metrics": 4}


SIGNIFICANCE_LEVEL = 0.05


@dataclass
class Run:
    path: Path
    name: str
    status: str
    metrics: RunMetrics = field(default_factory=dict)  # type: ignore[assignment]
    params: dict[str, Any] = field(default_factory=dict)
    p_value: float | None = None  # paired bootstrap against the best run with the same references
    baseline: str = ""  # "best" for the best run of its reference group, "" where not testable
    # The same per corpus of a run on several corpora (its test.NAME.hyp.txt), by corpus name.
    corpus_p_values: dict[str, float] = field(default_factory=dict)
    corpus_baselines: dict[str, str] = field(default_factory=dict)

    @property
    def bleu(self) -> float | None:
        value = self.metrics.get("test_bleu")
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    def corpus_bleu(self, corpus: str) -> float | None:
        """Test BLEU on one corpus: its entry in test_corpora (a run on several corpora), or the
        test BLEU of a run on that corpus alone."""
        per_corpus = self.metrics.get("test_corpora") or {}
        if per_corpus:
            value = (per_corpus.get(corpus) or {}).get("test_bleu")
            finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            return float(value) if finite else None
        return self.bleu if self.params.get("data.name") == corpus else None

    def corpus_p(self, corpus: str) -> tuple[float | None, str]:
        """(p-value, baseline) of the test on one corpus, like corpus_bleu."""
        if self.metrics.get("test_corpora"):
            return self.corpus_p_values.get(corpus), self.corpus_baselines.get(corpus, "")
        if self.params.get("data.name") == corpus:
            return self.p_value, self.baseline
        return None, ""

    def test_sets(self) -> list[tuple[str, float | None, Path, Path]]:
        """(corpus, test BLEU, hypotheses, references) of each test set the run wrote: test.hyp.txt
        ("" for the corpus) of a one-corpus run, test.NAME.hyp.txt of each corpus of a run on several."""
        paths = RunDir(self.path)
        per_corpus = self.metrics.get("test_corpora") or {}
        if per_corpus:
            return [(name, self.corpus_bleu(name), paths.test_output("hyp", name), paths.test_output("ref", name))
                    for name in per_corpus]  # fmt: skip
        return [("", self.bleu, paths.test_output("hyp"), paths.test_output("ref"))]

    @property
    def aer(self) -> float | None:
        """Alignment error rate (a fraction) on the run's gold alignments (data.align_gold) at the
        validation of best_step: the checkpoint that is tested. None where the run measured none."""
        best = self.metrics.get("best_step")
        for record in self.metrics.get("history") or []:
            if isinstance(record, dict) and record.get("step") == best:
                value = record.get("valid_aer")
                finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                return float(value) if finite else None
        return None

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < SIGNIFICANCE_LEVEL


# Finding runs --------------------------------------------------------------------------------
def latest_sweep(root: Path = SWEEP_ROOT) -> Path:
    """The sweep folder under `root` that was started last (its multirun.yaml is the newest)."""
    if not root.is_dir():
        raise UserError(f"no sweeps found: {root}/ does not exist (run `make sweep` first, or name a folder)")
    sweeps = [p for p in root.iterdir() if p.is_dir()]
    if not sweeps:
        raise UserError(f"no sweeps found under {root}/ (run `make sweep` first, or name a folder)")

    def started(p: Path) -> float:
        marker = p / "multirun.yaml"
        return (marker if marker.is_file() else p).stat().st_mtime

    return max(sweeps, key=lambda p: (started(p), p.name))


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"layers": 2}} -> {"model.layers": 2}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _hydra_config(run_dir: Path) -> dict[str, Any]:
    """The job's composed config from .hydra/config.yaml, for runs without metrics.json."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # a torn or odd file: show the run without its parameters
        return {}
    return {k: v for k, v in cfg.items() if k in ("data", "model", "train", "decode") and isinstance(v, dict)}


def load_run(run_dir: Path, name: str) -> Run:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return Run(run_dir, name, "no metrics", {}, flatten(_hydra_config(run_dir)))
    try:
        metrics = read_metrics(path)
    except (ValueError, UnicodeDecodeError) as err:
        print(f"mt.compare: warning: unreadable {path}: {err}", file=sys.stderr)
        return Run(run_dir, name, "unreadable", {}, flatten(_hydra_config(run_dir)))
    config = metrics.get("config") if isinstance(metrics.get("config"), dict) else _hydra_config(run_dir)
    return Run(run_dir, name, str(metrics.get("status", "unknown")), metrics, flatten(config))


def _run_dirs(root: Path) -> list[Path]:
    """Folders under `root` (itself included) holding metrics.json or a Hydra job's .hydra/."""
    found: list[Path] = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        if "metrics.json" in files or (here / ".hydra" / "config.yaml").is_file():
            found.append(here)
            dirs.clear()  # a run's subfolders hold no other runs
            continue
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
    return found


def find_runs(folders: list[Path]) -> list[Run]:
    """All runs under `folders`; names are relative to their folder (prefixed with it when several)."""
    runs: list[Run] = []
    seen: set[Path] = set()
    for folder in folders:
        if not folder.exists():
            raise UserError(f"folder not found: {folder}")
        if not folder.is_dir():
            raise UserError(f"not a folder: {folder} (give a sweep or run folder)")
        dirs = _run_dirs(folder)
        if not dirs:
            raise UserError(f"no runs found in {folder} (no metrics.json below it)")
        for run_dir in dirs:
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            rel = run_dir.relative_to(folder).as_posix()
            name = folder.resolve().name if rel == "." else rel
            if len(folders) > 1 and rel != ".":
                name = f"{folder.resolve().name}/{rel}"
            runs.append(load_run(run_dir, name))
    return shorten_names(runs)


def shorten_names(runs: list[Run]) -> list[Run]:
    """Drop the `key=value` items every run's folder name shares (Hydra names job folders by overrides).

    `data.dir=data/multi30k,model.norm=pre,train.max_steps=300` -> `model.norm=pre`; names stay
    unchanged where shortening would empty or confuse them. comparison.csv keeps the full path.
    """
    if len(runs) < 2:
        return runs
    items = [r.name.split(",") for r in runs]
    common = set(items[0]).intersection(*items[1:])
    short = [",".join(i for i in parts if i not in common) for parts in items]
    if common and all(short) and len(set(short)) == len(short):
        for run, name in zip(runs, short):
            run.name = name
    return runs


# Table ---------------------------------------------------------------------------------------
def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# The settings of one corpus: at the top of data (a one-corpus run) or in data.corpora.NAME.
CORPUS_KEYS = frozenset(f.name for f in fields(CorpusConfig)) - {"name"}


def is_corpus_key(key: str) -> bool:
    """data.corpora.NAME.* or a top-level corpus setting (data.dir, data.format, data.held_out.seed ...)."""
    parts = key.split(".")
    return parts[0] == "data" and len(parts) > 1 and (parts[1] == "corpora" or parts[1] in CORPUS_KEYS)


def differing_params(runs: list[Run]) -> list[str]:
    """Flattened config keys whose value is not the same in every run that has a config."""
    with_config = [r for r in runs if r.params]
    keys = sorted({k for r in with_config for k in r.params} - NOT_HYPERPARAMETERS)

    def values(key: str) -> set[str]:
        # A corpus's settings (data.corpora.NAME.*, and data.dir, data.format, data.train ... of a
        # one-corpus run, which a run on several corpora does not have) differ only between runs
        # that have them: between the two kinds, data.name tells the difference.
        having = [r for r in with_config if key in r.params] if is_corpus_key(key) else with_config
        return {_key(r.params.get(key)) for r in having}

    differing = [k for k in keys if len(values(k)) > 1]
    group_order = {"data": 0, "model": 1, "train": 2, "decode": 3}
    return sorted(differing, key=lambda k: (group_order.get(k.split(".")[0], 9), k))


def ranking(runs: list[Run]) -> tuple[str, str]:
    """What ranks the runs: ("", why) for the test BLEU column, or (corpus, why) for that corpus's
    column. The BLEU of a run on several corpora is the mean over its corpora; ranking it against
    a one-corpus run's BLEU would compare different test sets, so when the runs mix the two (or
    runs on different corpora) they are ranked by the first corpus every scored run was tested on.
    If they share none, by test BLEU all the same, and `why` says that the scores differ in kind."""
    scored = [r for r in runs if r.bleu is not None]
    kinds = {tuple(r.metrics.get("test_corpora") or {}) or ("=", str(r.params.get("data.name"))) for r in scored}
    if len(kinds) <= 1:
        return "", "test BLEU"
    corpora = list(dict.fromkeys(name for r in scored for name in r.metrics.get("test_corpora") or {}))
    if not corpora:  # one-corpus runs only
        return "", "test BLEU"
    for name in corpora:
        if all(r.corpus_bleu(name) is not None for r in scored):
            why = f"`{name} BLEU`: the test set every run was scored on"
            why += " (`BLEU` of a run on several corpora is their mean)"
            return name, why
    return "", (
        "test BLEU, which here mixes means over several corpora with one-corpus scores "
        "(no test set is common to all runs): compare the per-corpus columns"
    )


def sort_runs(runs: list[Run], corpus: str = "") -> list[Run]:
    """Best test BLEU (or `corpus`'s test BLEU) first; runs without it after, by status, then by name."""

    def score(r: Run) -> float | None:
        return r.corpus_bleu(corpus) if corpus else r.bleu

    return sorted(runs, key=lambda r: (score(r) is None, -(score(r) or 0.0), STATUS_ORDER.get(r.status, 5), r.name))


def _read_lines(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def add_significance(runs: list[Run], n_samples: int = 1000) -> str:
    """Paired bootstrap resampling of each test set's BLEU against the best run with identical references.

    Every test set a run wrote is tested (Run.test_sets: test.hyp.txt, or test.NAME.hyp.txt per
    corpus), grouped by a digest of its references: a run on Multi30k alone and the Multi30k part
    of a mixed run are tested against each other. Sets Run.p_value / Run.baseline (a one-corpus
    run's test set) and Run.corpus_p_values / corpus_baselines (per corpus of a run on several);
    returns the test's sacreBLEU signature ("" if nothing was tested).
    """
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    groups: dict[str, list[tuple[Run, str, float, list[str], list[str]]]] = {}
    for run in runs:
        for corpus, bleu, hyp_path, ref_path in run.test_sets():
            hyps, refs = _read_lines(hyp_path), _read_lines(ref_path)
            if bleu is None or hyps is None or refs is None or len(hyps) != len(refs) or not refs:
                continue
            digest = hashlib.sha256("\n".join(refs).encode("utf-8")).hexdigest()
            groups.setdefault(digest, []).append((run, corpus, bleu, hyps, refs))

    def record(run: Run, corpus: str, p_value: float | None, baseline: str) -> None:
        if corpus:
            if p_value is not None:
                run.corpus_p_values[corpus] = p_value
            run.corpus_baselines[corpus] = baseline
        else:
            run.p_value, run.baseline = p_value, baseline

    signature = ""
    for members in groups.values():
        members.sort(key=lambda m: -m[2])
        if len(members) < 2:  # nothing to test against
            continue
        best, best_corpus, _, _, refs = members[0]
        record(best, best_corpus, None, "best")
        label = f"{best.name}:{best_corpus}" if best_corpus else best.name
        systems = [(f"{m[0].name}:{m[1]}" if m[1] else m[0].name, m[3]) for m in members]
        test = PairedTest(systems, {"BLEU": BLEU()}, references=[refs], test_type="bs", n_samples=n_samples)
        sigs, scores = test()
        for (run, corpus, _, _, _), result in zip(members[1:], scores["BLEU"][1:]):
            record(run, corpus, float(result.p_value), label)
        signature = str(sigs["BLEU"])
    return signature
