"""mt.evaluate's own mistakes: one line and exit status 2 (scoring itself: test_corpora, test_export)."""

import pytest

from mt.evaluate import main

from .conftest import run_cli


def evaluate(argv, capsys):
    return run_cli(main, argv, capsys)


@pytest.mark.parametrize(
    ("src", "ref", "expect"),
    [
        ("", "", "are empty: no sentences to score"),  # sacreBLEU raised IndexError on no sentences
        ("A dog runs .\n", "", "line counts differ"),
    ],
)
def test_files_with_nothing_to_score_are_one_line(src, ref, expect, trained_run, capsys, tmp_path):
    (tmp_path / "s.en").write_text(src)
    (tmp_path / "r.de").write_text(ref)
    ckpt = trained_run / "checkpoints" / "best.pt"
    argv = ["--checkpoint", str(ckpt), "--src", str(tmp_path / "s.en"), "--ref", str(tmp_path / "r.de")]
    code, out, err = evaluate([*argv, "--out", str(tmp_path / "eval")], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and expect in err, err
    assert "Traceback" not in err and not (tmp_path / "eval").exists()
