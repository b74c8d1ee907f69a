"""Compare the runs of a sweep: a table sorted by test BLEU, with significance against the best.

    python -m mt.compare                                   # the latest sweep under multirun/
    python -m mt.compare multirun/2026-11-24_08-00-00      # one sweep (or one run folder)
    python -m mt.compare multirun/A multirun/B outputs/X   # several folders together

Every folder holding a metrics.json (searched recursively) is a run; a Hydra job folder
without one (the job failed before training started) is listed too, never dropped. The table
has one column per hyperparameter that differs across the runs (`model.layers`, `train.lr`...)
and the metrics; `p` is sacreBLEU's paired bootstrap resampling p-value of each run's test BLEU
against the best run with the same test references, `*` where p < 0.05. comparison.md,
comparison.csv and comparison.png (BLEU against each swept parameter) go into the first folder.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mt.errors import UserError, exit_on_user_error
from mt.fileio import atomic_write_bytes, atomic_write_text

SWEEP_ROOT = Path("multirun")
# Settings that never change a result: not shown as swept parameters.
IGNORED_PARAMS = {"train.progress", "train.resume", "train.log_every", "train.samples", "train.save_every"}
# Folders inside a run that never hold another run.
SKIP_DIRS = {"tb", "checkpoints", "tokenizer", "eval", ".hydra"}
STATUS_ORDER = {"completed": 0, "interrupted": 1, "running": 2, "failed": 3, "no metrics": 4}
SIGNIFICANCE_LEVEL = 0.05
MAX_PANELS = 6


@dataclass
class Run:
    path: Path
    name: str
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    p_value: float | None = None  # paired bootstrap against the best run with the same references
    baseline: str = ""  # "best" for the best run of its reference group, "" where not testable

    @property
    def bleu(self) -> float | None:
        value = self.metrics.get("test_bleu")
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

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
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metrics, dict):
            raise ValueError("not a JSON object")
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


def differing_params(runs: list[Run]) -> list[str]:
    """Flattened config keys whose value is not the same in every run that has a config."""
    with_config = [r for r in runs if r.params]
    keys = sorted({k for r in with_config for k in r.params} - IGNORED_PARAMS)
    differing = [k for k in keys if len({_key(r.params.get(k)) for r in with_config}) > 1]
    group_order = {"data": 0, "model": 1, "train": 2, "decode": 3}
    return sorted(differing, key=lambda k: (group_order.get(k.split(".")[0], 9), k))


def sort_runs(runs: list[Run]) -> list[Run]:
    """Best test BLEU first; runs without a test BLEU after, by status, then by name."""
    return sorted(runs, key=lambda r: (r.bleu is None, -(r.bleu or 0.0), STATUS_ORDER.get(r.status, 5), r.name))


def _read_lines(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def add_significance(runs: list[Run], n_samples: int = 1000) -> str:
    """Paired bootstrap resampling of each run's test BLEU against the best run with identical references.

    Sets Run.p_value / Run.baseline; returns the test's sacreBLEU signature ("" if nothing was tested).
    """
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    groups: dict[str, list[tuple[Run, list[str], list[str]]]] = {}
    for run in runs:
        if run.bleu is None:
            continue
        hyps, refs = _read_lines(run.path / "test.hyp.txt"), _read_lines(run.path / "test.ref.txt")
        if hyps is None or refs is None or len(hyps) != len(refs) or not refs:
            continue
        digest = hashlib.sha256("\n".join(refs).encode("utf-8")).hexdigest()
        groups.setdefault(digest, []).append((run, hyps, refs))
    signature = ""
    for members in groups.values():
        members.sort(key=lambda m: -(m[0].bleu or 0.0))
        if len(members) < 2:  # nothing to test against
            continue
        best = members[0][0]
        best.baseline = "best"
        refs = members[0][2]
        systems = [(m[0].name, m[1]) for m in members]
        test = PairedTest(systems, {"BLEU": BLEU()}, references=[refs], test_type="bs", n_samples=n_samples)
        sigs, scores = test()
        for (run, _, _), result in zip(members[1:], scores["BLEU"][1:]):
            run.p_value = float(result.p_value)
            run.baseline = best.name
        signature = str(sigs["BLEU"])
    return signature


def _fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if value == "":
        return '""'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt_value(v) for v in value) + "]"
    return str(value)


def _fmt_num(value: Any, digits: int = 2) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _fmt_int(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "-"


def _fmt_count(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return str(int(value))


def _fmt_p(run: Run) -> str:
    if run.baseline == "best":
        return "best"
    if run.p_value is None:
        return "-"
    return f"{run.p_value:.3f}{' *' if run.significant else ''}"


METRIC_COLUMNS = ["BLEU", "p", "chrF", "valid BLEU", "valid loss", "params", "steps", "min", "tok/s", "status"]


def table_rows(runs: list[Run], params: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows (runs already sorted)."""
    header = ["#", "run", *params, *METRIC_COLUMNS]
    rows = []
    for rank, run in enumerate(runs, start=1):
        m = run.metrics
        rows.append([
            str(rank), run.name, *[_fmt_value(run.params.get(p)) for p in params],
            _fmt_num(m.get("test_bleu")), _fmt_p(run), _fmt_num(m.get("test_chrf")),
            _fmt_num(m.get("best_valid_bleu")), _fmt_num(m.get("valid_loss"), 3), _fmt_count(m.get("parameters")),
            _fmt_int(m.get("steps")), _fmt_num(m.get("train_minutes"), 1), _fmt_count(m.get("tokens_per_sec")),
            run.status,
        ])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    numeric = {"#", "BLEU", "chrF", "valid BLEU", "valid loss", "params", "steps", "min", "tok/s"}
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if h in numeric else c.ljust(w)
                                 for c, w, h in zip(cells, widths, header)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if h in numeric else ("-" * (w + 2))
                          for w, h in zip(widths, header)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)]) + "\n"


def csv_text(runs: list[Run], params: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    metric_keys = ["test_bleu", "test_chrf", "best_valid_bleu", "best_step", "valid_loss", "parameters",
                   "train_minutes", "tokens_per_sec", "steps"]
    writer.writerow(["run", *params, *metric_keys, "p_value", "baseline", "status", "path"])
    for run in runs:
        writer.writerow([run.name, *[_fmt_value(run.params.get(p)) if run.params else "" for p in params],
                         *["" if run.metrics.get(k) is None else run.metrics.get(k) for k in metric_keys],
                         "" if run.p_value is None else f"{run.p_value:.4f}", run.baseline, run.status,
                         str(run.path)])
    return buffer.getvalue()


def plot_png(runs: list[Run], params: list[str]) -> bytes:
    """Test BLEU against each swept parameter (one panel each, up to MAX_PANELS); per run if none differs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in runs if r.bleu is not None]
    overridden = {str(o).split("=", 1)[0].lstrip("+~") for r in runs for o in r.metrics.get("overrides") or []}
    # The parameters set on the command line (the swept ones) first; at most MAX_PANELS panels.
    panels = sorted(params, key=lambda p: p not in overridden)[:MAX_PANELS] or ["run"]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.0, 3.6 * len(panels)), 3.4), squeeze=False)
    for ax, param in zip(axes[0], panels):
        values = [r.name if param == "run" else r.params.get(param) for r in scored]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and values
        if numeric:
            xs = values
            ax.set_xticks(sorted(set(xs)))
        else:
            labels = sorted({_fmt_value(v) for v in values})
            xs = [labels.index(_fmt_value(v)) for v in values]
            ax.set_xticks(range(len(labels)), labels, rotation=30 if param == "run" else 0, ha="right"
                          if param == "run" else "center", fontsize=8)
        ys = [r.bleu for r in scored]
        colors = ["tab:red" if r.significant else "tab:blue" for r in scored]
        ax.scatter(xs, ys, c=colors, zorder=3)
        by_x: dict[Any, list[float]] = {}
        for x, y in zip(xs, ys):
            by_x.setdefault(x, []).append(y)
        if len(by_x) > 1:
            xs_sorted = sorted(by_x)
            ax.plot(xs_sorted, [sum(by_x[x]) / len(by_x[x]) for x in xs_sorted], color="gray", lw=1, zorder=2)
        ax.set_xlabel(param)
        ax.set_ylabel("test BLEU")
        ax.grid(alpha=0.3)
    fig.suptitle("test BLEU (red: significantly below the best, p < 0.05)", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


@dataclass
class Comparison:
    runs: list[Run]
    params: list[str]
    header: list[str]
    rows: list[list[str]]
    signature: str

    @property
    def table(self) -> str:
        return markdown_table(self.header, self.rows)


def compare(folders: list[Path], n_samples: int = 1000, significance: bool = True) -> Comparison:
    runs = find_runs(folders)
    signature = add_significance(runs, n_samples) if significance else ""
    runs = sort_runs(runs)
    params = differing_params(runs)
    header, rows = table_rows(runs, params)
    return Comparison(runs, params, header, rows, signature)


def markdown_report(result: Comparison, folders: list[Path], command: str) -> str:
    n_done = sum(r.status == "completed" for r in result.runs)
    lines = [f"# Comparison of {len(result.runs)} runs ({n_done} completed)", "",
             f"Folders: {', '.join(f'`{f}`' for f in folders)}  ", f"Command: `{command}`", "",
             result.table, ""]
    lines.append("Columns: the hyperparameters that differ across the runs, then test BLEU and chrF "
                 "(best checkpoint, configured decoder), best validation BLEU, last validation loss, "
                 "parameters, training steps (updates), training minutes, training tokens per second, and status.")
    lines.append("")
    lines.append(f"`p`: paired bootstrap resampling p-value of the test BLEU difference to the best run with "
                 f"identical test references; `*` marks a significant difference (p < {SIGNIFICANCE_LEVEL}); "
                 "`-`: not testable (no test output, or no other run with the same references).")
    signatures = sorted({r.metrics.get("bleu_signature") for r in result.runs if r.metrics.get("bleu_signature")})
    if signatures:
        lines += ["", "BLEU signature: " + "; ".join(f"`{s}`" for s in signatures)]
    if result.signature:
        lines += ["", f"Significance test signature: `{result.signature}`"]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mt.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="*", type=Path, metavar="DIR",
                   help="sweep or run folders (default: the latest sweep under multirun/)")
    p.add_argument("--out", type=Path, help="where comparison.{md,csv,png} go (default: the first DIR)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="paired bootstrap resamples (default: %(default)s; 0 skips the test)")
    p.add_argument("--no-files", action="store_true", help="print the table only")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_user_error("mt.compare"):
        if args.bootstrap < 0:
            raise UserError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
        folders = args.folders or [latest_sweep()]
        result = compare(folders, n_samples=args.bootstrap, significance=args.bootstrap > 0)
        print(result.table, end="")
        if args.no_files:
            return
        out = args.out or folders[0]
        command = "python -m mt.compare " + " ".join(str(a) for a in (argv if argv is not None else sys.argv[1:]))
        if not args.folders:
            command += f"  # {folders[0]}"
        atomic_write_text(out / "comparison.md", markdown_report(result, folders, command.strip()))
        atomic_write_text(out / "comparison.csv", csv_text(result.runs, result.params))
        atomic_write_bytes(out / "comparison.png", plot_png(result.runs, result.params))
        print(f"wrote {out / 'comparison.md'}, comparison.csv, comparison.png", file=sys.stderr)


if __name__ == "__main__":
    main()
