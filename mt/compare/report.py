"""The comparison as a table (markdown, CSV), a plot of BLEU against each swept parameter, and a report."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mt.compare.runs import (
    SIGNIFICANCE_LEVEL,
    Run,
    add_significance,
    differing_params,
    find_runs,
    ranking,
    sort_runs,
)

MAX_PANELS = 6


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


def _fmt_p(run: Run, corpus: str | None = None) -> str:
    """The p column (the run's test set), or with `corpus` the `NAME p` column of that corpus."""
    p_value, baseline = (run.p_value, run.baseline) if corpus is None else run.corpus_p(corpus)
    if baseline == "best":
        return "best"
    if p_value is None:
        return "-"
    return f"{p_value:.3f}{' *' if p_value < SIGNIFICANCE_LEVEL else ''}"


METRIC_COLUMNS = ["BLEU", "p", "chrF", "valid BLEU", "AER", "valid loss", "params", "steps", "min", "tok/s", "status"]


def has_aer(runs: list[Run]) -> bool:
    """The AER column is shown only where some run measured alignments (data.align_gold)."""
    return any(run.aer is not None for run in runs)


def _fmt_percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def table_rows(runs: list[Run], params: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows (runs already sorted); `NAME BLEU` and `NAME p` columns per corpus
    where some run trained on several (data.corpora)."""
    aer = has_aer(runs)
    corpora = test_corpora(runs)
    metrics = [c for c in METRIC_COLUMNS if aer or c != "AER"]
    per_corpus = [column for name in corpora for column in (f"{name} BLEU", f"{name} p")]
    metrics[metrics.index("chrF") + 1 : metrics.index("chrF") + 1] = per_corpus
    header = ["#", "run", *params, *metrics]
    rows = []
    for rank, run in enumerate(runs, start=1):
        m = run.metrics
        rows.append(
            [
                str(rank),
                run.name,
                *[_fmt_value(run.params.get(p)) for p in params],
                _fmt_num(m.get("test_bleu")),
                _fmt_p(run),
                _fmt_num(m.get("test_chrf")),
                *[cell for name in corpora for cell in (_fmt_num(run.corpus_bleu(name)), _fmt_p(run, name))],
                _fmt_num(m.get("best_valid_bleu")),
                *([_fmt_percent(run.aer)] if aer else []),
                _fmt_num(m.get("valid_loss"), 3),
                _fmt_count(m.get("parameters")),
                _fmt_int(m.get("steps")),
                _fmt_num(m.get("train_minutes"), 1),
                _fmt_count(m.get("tokens_per_sec")),
                run.status,
            ]
        )
    return header, rows


def test_corpora(runs: list[Run]) -> list[str]:
    """The corpora that runs on several corpora were tested on, in the order first seen."""
    names = [name for run in runs for name in run.metrics.get("test_corpora") or {}]
    return list(dict.fromkeys(names))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    numeric = {"#", "BLEU", "chrF", "valid BLEU", "AER", "valid loss", "params", "steps", "min", "tok/s"}
    numeric |= {h for h in header if h.endswith(" BLEU")}  # per corpus
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(c.rjust(w) if h in numeric else c.ljust(w) for c, w, h in zip(cells, widths, header))
            + " |"
        )

    rule = (
        "|" + "|".join(("-" * (w + 1) + ":") if h in numeric else ("-" * (w + 2)) for w, h in zip(widths, header)) + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)]) + "\n"


def csv_text(runs: list[Run], params: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    metric_keys = [
        "test_bleu",
        "test_chrf",
        "best_valid_bleu",
        "best_step",
        "valid_loss",
        "parameters",
        "train_minutes",
        "tokens_per_sec",
        "steps",
    ]
    aer, corpora = has_aer(runs), test_corpora(runs)
    writer.writerow(
        [
            "run",
            *params,
            *metric_keys,
            *[f"test_bleu.{name}" for name in corpora],
            *[f"p_value.{name}" for name in corpora],
            *(["valid_aer"] if aer else []),
            "p_value",
            "baseline",
            "status",
            "path",
        ]
    )
    for run in runs:
        writer.writerow(
            [
                run.name,
                *[_fmt_value(run.params.get(p)) if run.params else "" for p in params],
                *["" if run.metrics.get(k) is None else run.metrics.get(k) for k in metric_keys],
                *["" if run.corpus_bleu(name) is None else run.corpus_bleu(name) for name in corpora],
                *["" if run.corpus_p(name)[0] is None else f"{run.corpus_p(name)[0]:.4f}" for name in corpora],
                *(["" if run.aer is None else run.aer] if aer else []),
                "" if run.p_value is None else f"{run.p_value:.4f}",
                run.baseline,
                run.status,
                str(run.path),
            ]
        )
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
            ax.set_xticks(
                range(len(labels)),
                labels,
                rotation=30 if param == "run" else 0,
                ha="right" if param == "run" else "center",
                fontsize=8,
            )
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
    ranked_by: str = "test BLEU"  # what orders the rows (mt.compare.runs.ranking)

    @property
    def table(self) -> str:
        return markdown_table(self.header, self.rows)


def compare(folders: list[Path], n_samples: int = 1000, significance: bool = True) -> Comparison:
    runs = find_runs(folders)
    signature = add_significance(runs, n_samples) if significance else ""
    corpus, ranked_by = ranking(runs)
    runs = sort_runs(runs, corpus)
    params = differing_params(runs)
    header, rows = table_rows(runs, params)
    return Comparison(runs, params, header, rows, signature, ranked_by)


def markdown_report(result: Comparison, folders: list[Path], command: str) -> str:
    n_done = sum(r.status == "completed" for r in result.runs)
    lines = [
        f"# Comparison of {len(result.runs)} runs ({n_done} completed)",
        "",
        f"Folders: {', '.join(f'`{f}`' for f in folders)}  ",
        f"Command: `{command}`",
        "",
        f"Ranked by {result.ranked_by}.",
        "",
        result.table,
        "",
    ]
    aer = "AER (%: alignment error rate on data.align_gold at that best validation), " if has_aer(result.runs) else ""
    corpora = test_corpora(result.runs)
    per_corpus = (
        f"test BLEU per corpus ({', '.join(f'`{name} BLEU`' for name in corpora)}: a run on several corpora "
        "scores each; a run on one corpus of that name shows its test BLEU there), "
        if corpora
        else ""
    )
    mean = " (runs on several corpora: the mean over their corpora, as for best validation BLEU)" if corpora else ""
    lines.append(
        "Columns: the hyperparameters that differ across the runs, then test BLEU and chrF "
        f"(best checkpoint, configured decoder){mean}, {per_corpus}best validation BLEU, {aer}last validation loss, "
        "parameters, training steps (updates), training minutes, training tokens per second, and status."
    )
    lines.append("")
    lines.append(
        f"`p`: paired bootstrap resampling p-value of the test BLEU difference to the best run with "
        f"identical test references; `*` marks a significant difference (p < {SIGNIFICANCE_LEVEL}); "
        "`-`: not testable (no test output, or no other run with the same references)."
        + (
            " `NAME p`: the same for each corpus's test set, a run on several corpora tested on that corpus "
            "against the runs with the same references (a run on that corpus alone among them)."
            if corpora
            else ""
        )
    )
    signatures = sorted({r.metrics.get("bleu_signature") for r in result.runs if r.metrics.get("bleu_signature")})
    if signatures:
        lines += ["", "BLEU signature: " + "; ".join(f"`{s}`" for s in signatures)]
    if result.signature:
        lines += ["", f"Significance test signature: `{result.signature}`"]
    return "\n".join(lines) + "\n"
