"""mt.compare: finding runs, the table, significance, outputs, errors; the sweep presets; one real sweep."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mt.compare import compare, differing_params, flatten, latest_sweep, main
from mt.evaluate import score_translations

from .conftest import ROOT, TOY

REFS = (TOY / "test.de").read_text(encoding="utf-8").splitlines()
PRESETS = sorted(p.stem for p in (ROOT / "configs" / "sweep").glob("*.yaml"))


def config(layers: int = 2, lr: float = 3e-3, test: str = "test") -> dict:
    return {
        "data": {"name": "toy", "test": [test], "dir": "tests/fixtures/toy"},
        "model": {"d_model": 64, "layers": layers, "norm": "pre"},
        "train": {"lr": lr, "max_steps": 150, "progress": False, "seed": 1234},
        "decode": {"beam_size": 5},
    }


def fake_run(
    path: Path, status: str = "completed", hyps: list[str] | None = None, refs: list[str] = REFS, **cfg
) -> Path:
    """A run folder as mt.train leaves it: metrics.json and, when tested, test.hyp.txt/test.ref.txt."""
    path.mkdir(parents=True)
    metrics = {
        "status": status,
        "parameters": 171776,
        "train_minutes": 0.5,
        "tokens_per_sec": 7000.0,
        "best_valid_bleu": 12.0,
        "valid_loss": 1.5,
        "overrides": [],
        "history": [],
        "config": config(**cfg),
    }
    if hyps is not None:
        scores = score_translations(hyps, refs)
        metrics.update(test_bleu=scores["bleu"], test_chrf=scores["chrf"], bleu_signature=scores["bleu_signature"])
        (path / "test.hyp.txt").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
        (path / "test.ref.txt").write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    (path / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return path


def worse(refs: list[str], keep: float) -> list[str]:
    """Hypotheses that keep the first `keep` fraction of each reference's words."""
    return [" ".join(r.split()[: max(1, int(len(r.split()) * keep))]) for r in refs]


def table_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("|")]


def test_flatten_and_differing_params():
    assert flatten({"model": {"layers": 2, "x": {"y": 1}}, "train": {"betas": [0.9, 0.98]}}) == {
        "model.layers": 2,
        "model.x.y": 1,
        "train.betas": [0.9, 0.98],
    }
    result_runs = [type("R", (), {"params": flatten(config(layers=n))})() for n in (1, 2)]
    result_runs[1].params["train.progress"] = True  # ignored: never changes a result
    assert differing_params(result_runs) == ["model.layers"]


def test_table_sorted_by_bleu_with_significance_and_failed_run(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fake_run(sweep / "model.layers=1", hyps=worse(REFS, 0.5), layers=1)
    fake_run(sweep / "model.layers=2", hyps=REFS, layers=2)
    fake_run(sweep / "model.layers=3", hyps=REFS[:-1] + worse(REFS[-1:], 0.5), layers=3)
    fake_run(sweep / "model.layers=4", status="failed", layers=4)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")

    main([str(sweep)])
    out = capsys.readouterr().out
    lines = table_lines(out)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:3] == ["#", "run", "model.layers"], "only the parameter that differs is a column"
    assert "train.lr" not in header and "BLEU" in header and "status" in header
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    cell = lambda row, name: row[header.index(name)]
    assert [cell(r, "run") for r in rows] == ["model.layers=2", "model.layers=3", "model.layers=1", "model.layers=4"]
    assert cell(rows[0], "BLEU") == "100.00" and cell(rows[0], "p") == "best"
    assert not cell(rows[1], "p").endswith("*"), "one sentence changed out of 30: not significant"
    assert cell(rows[2], "p").endswith("*"), "half of every sentence dropped: significant"
    assert cell(rows[3], "status") == "failed" and cell(rows[3], "BLEU") == "-", "failed runs are listed"

    md = (sweep / "comparison.md").read_text()
    assert "model.layers=4" in md and "paired bootstrap" in md and "bs:1000" in md
    with open(sweep / "comparison.csv", newline="") as handle:
        records = list(csv.DictReader(handle))
    assert [r["model.layers"] for r in records] == ["2", "3", "1", "4"]
    assert float(records[0]["test_bleu"]) == pytest.approx(100.0) and records[3]["test_bleu"] == ""
    assert float(records[2]["p_value"]) < 0.05
    assert (sweep / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_aer_column_is_the_best_validations_and_only_where_measured(tmp_path, capsys):
    """The AER of the validation at best_step (the tested checkpoint), in percent; '-' for a run
    without alignments; no column at all when no run has one."""
    sweep = tmp_path / "sweep"
    history = [
        {"step": 100, "valid_bleu": 10.0, "valid_aer": 0.5, "valid_align_precision": 0.4, "valid_align_recall": 0.6},
        {"step": 200, "valid_bleu": 12.0, "valid_aer": 0.3456, "valid_align_precision": 0.6, "valid_align_recall": 0.7},
        {"step": 300, "valid_bleu": 11.0, "valid_aer": 0.2},
    ]
    for name, layers, records in [("aligned", 1, history), ("plain", 2, [{"step": 200, "valid_bleu": 12.0}])]:
        path = fake_run(sweep / name, hyps=REFS, layers=layers)
        metrics = json.loads((path / "metrics.json").read_text())
        metrics.update(best_step=200, history=records)
        (path / "metrics.json").write_text(json.dumps(metrics))
    main([str(sweep), "--bootstrap", "0"])
    lines = table_lines(capsys.readouterr().out)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {r[1]: r for r in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert header.index("AER") == header.index("valid BLEU") + 1
    assert rows["aligned"][header.index("AER")] == "34.6" and rows["plain"][header.index("AER")] == "-"
    assert "AER (%" in (sweep / "comparison.md").read_text()
    with open(sweep / "comparison.csv", newline="") as handle:
        records = {r["run"]: r for r in csv.DictReader(handle)}
    assert float(records["aligned"]["valid_aer"]) == pytest.approx(0.3456) and records["plain"]["valid_aer"] == ""

    fake_run(tmp_path / "none" / "a", hyps=REFS)
    main([str(tmp_path / "none"), "--bootstrap", "0", "--no-files"])
    assert "AER" not in capsys.readouterr().out


def test_different_references_are_not_tested_against_each_other(tmp_path):
    other_refs = [r + " ." for r in REFS]
    fake_run(tmp_path / "a", hyps=REFS, test="test")
    fake_run(tmp_path / "b", hyps=worse(other_refs, 0.5), refs=other_refs, test="other")
    result = compare([tmp_path], n_samples=200)
    assert [r.name for r in result.runs] == ["a", "b"]
    assert all(r.p_value is None and r.baseline == "" for r in result.runs)
    assert result.params == ["data.test"]


def test_hydra_job_without_metrics_is_listed(tmp_path):
    fake_run(tmp_path / "model.layers=1", hyps=REFS, layers=1)
    job = tmp_path / "model.layers=9"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(json.dumps(config(layers=9)))  # JSON is YAML
    result = compare([tmp_path], significance=False)
    assert [(r.name, r.status) for r in result.runs] == [
        ("model.layers=1", "completed"),
        ("model.layers=9", "no metrics"),
    ]
    assert result.params == ["model.layers"] and result.rows[1][2] == "9"


def test_several_folders_and_a_single_run_folder(tmp_path):
    fake_run(tmp_path / "s1" / "model.layers=1", hyps=worse(REFS, 0.7), layers=1)
    run = fake_run(tmp_path / "s2" / "x" / "model.layers=2", hyps=REFS, layers=2)
    result = compare([tmp_path / "s1", run], n_samples=200)
    assert [r.name for r in result.runs] == ["model.layers=2", "s1/model.layers=1"]
    assert result.runs[1].significant


def test_names_drop_the_overrides_all_jobs_share(tmp_path):
    for layers in (1, 2):
        fake_run(
            tmp_path / "data.dir=data" / f"multi30k,model.layers={layers},train.max_steps=300", hyps=REFS, layers=layers
        )
    fake_run(tmp_path / "data.dir=data" / "multi30k,model.layers=3", hyps=REFS, layers=3)
    names = sorted(r.name for r in compare([tmp_path], significance=False).runs)
    assert names == ["model.layers=1,train.max_steps=300", "model.layers=2,train.max_steps=300", "model.layers=3"]
    fake_run(tmp_path / "other", hyps=REFS)  # nothing shared by all: names stay whole
    assert "data.dir=data/multi30k,model.layers=3" in [r.name for r in compare([tmp_path], significance=False).runs]


def test_default_is_the_latest_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name, age in (("2026-01-02_00-00-00", 100), ("2026-01-01_00-00-00", 0)):
        fake_run(tmp_path / "multirun" / name / "model.layers=1", hyps=REFS)
        marker = tmp_path / "multirun" / name / "multirun.yaml"
        marker.write_text("{}\n")
        os.utime(marker, (time.time() - age, time.time() - age))
    assert latest_sweep() == Path("multirun/2026-01-01_00-00-00")
    main(["--no-files"])
    assert "model.layers=1" in capsys.readouterr().out
    assert not (tmp_path / "multirun" / "2026-01-01_00-00-00" / "comparison.md").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing"], "folder not found: missing"),
        (["empty"], "no runs found in empty"),
        ([], "no sweeps found"),
        (["--bootstrap", "-1", "empty"], "--bootstrap must be 0 or more"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mt.compare: error: ") and message in err


@pytest.mark.parametrize("out", ["a file", "under a file", "/proc/cmp"])
def test_an_out_that_cannot_be_written_is_one_line_before_the_table(out, tmp_path, capsys):
    fake_run(tmp_path / "sweep" / "a", hyps=REFS)
    (tmp_path / "notes.txt").write_text("mine")
    path = {"a file": tmp_path / "notes.txt", "under a file": tmp_path / "notes.txt" / "cmp"}.get(out, Path(out))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "sweep"), "--bootstrap", "0", "--out", str(path)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == "", captured.out  # refused before the work
    assert captured.err.count("\n") == 1 and captured.err.startswith("mt.compare: error: "), captured.err
    expect = "--out " + str(path) + " is a file, not a folder" if out == "a file" else f"cannot write {path}"
    assert expect in captured.err, captured.err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "sweep"]


@pytest.mark.parametrize("name", PRESETS)
def test_sweep_presets_compose_into_several_valid_jobs(name):
    """Every configs/sweep preset is a multirun whose jobs each compose into a valid config."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    from mt.cli import CONFIG_DIR
    from mt.config import register_configs, to_dataclass

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
            assert cfg.hydra.mode == RunMode.MULTIRUN
            params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
            jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)[0]
            assert 2 <= len(jobs) <= 6
            configs = [to_dataclass(compose(config_name="config", overrides=[f"+sweep={name}", *job])) for job in jobs]
    finally:
        GlobalHydra.instance().clear()
    assert len({json.dumps(str(c)) for c in configs}) == len(jobs), "every job differs"
    if name == "smoke":
        assert all(c.data.name == "toy" and c.model.d_model == 64 for c in configs)
    assert PRESETS.count(name) == 1 and {
        "smoke",
        "model_size",
        "dropout",
        "norm",
        "label_smoothing",
        "lr_warmup",
    } <= set(PRESETS)


def test_real_two_job_sweep_then_compare(tmp_path, capsys):
    """`python -m mt.train -m ... model.layers=1,2` on the toy corpus, then the comparison of its two jobs."""
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "mt.train",
        "-m",
        "data=toy",
        "model=tiny",
        "train=smoke",
        "decode=greedy",
        "train.max_steps=20",
        "train.eval_every=20",
        "train.progress=false",
        "train.threads=1",
        "model.layers=1,2",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    main([str(sweep)])
    lines = table_lines(capsys.readouterr().out)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert "model.layers" in header
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert len(rows) == 2
    # Job folders are named by all the job's overrides; the table keeps only the ones that differ.
    assert sorted(r[1] for r in rows) == ["model.layers=1", "model.layers=2"]
    for row in rows:
        assert row[header.index("model.layers")] == row[1][-1]
        assert row[header.index("status")] == "completed"
        [folder] = sweep.glob(f"*{row[1]},*")
        bleu = json.loads((folder / "metrics.json").read_text())["test_bleu"]
        assert row[header.index("BLEU")] == f"{bleu:.2f}"
    for suffix in ("md", "csv", "png"):
        assert (sweep / f"comparison.{suffix}").stat().st_size > 0
