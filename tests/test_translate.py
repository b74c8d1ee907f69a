"""The translate CLI, including every bad input a user can give it (one line, no traceback)."""

import io
import sys
import time

import pytest
import torch

from mt.translate import main

from .conftest import run_cli

SENTENCE = "Today the dog runs in the park ."


def translate(argv, capsys, monkeypatch, stdin: bytes | None = None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    return run_cli(main, argv, capsys)


@pytest.fixture
def ckpt(trained_run):
    return str(trained_run / "checkpoints" / "best.pt")


def test_translates_positional_text(ckpt, capsys, monkeypatch):
    code, out, err = translate(["--checkpoint", ckpt, SENTENCE], capsys, monkeypatch)
    assert code == 0 and out.strip().startswith("Heute läuft der hund"), out


def test_stdin_keeps_one_line_per_input_including_empty(ckpt, capsys, monkeypatch):
    lines = b"The cat sleeps in the house .\n\nA man waits at the beach .\n"
    code, out, _ = translate(["--checkpoint", ckpt, "--beam", "2"], capsys, monkeypatch, stdin=lines)
    rows = out.split("\n")[:-1]
    assert code == 0 and len(rows) == 3 and rows[1] == ""
    assert rows[0].startswith("Die katze") and rows[2].startswith("Ein mann")


def test_n_best_prints_scores(ckpt, capsys, monkeypatch):
    code, out, _ = translate(["--checkpoint", ckpt, "--beam", "3", "--n-best", "3", SENTENCE], capsys, monkeypatch)
    rows = [r.split(" ||| ") for r in out.strip().splitlines()]
    assert code == 0 and len(rows) == 3
    scores = [float(r[2]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(r[0] == "0" for r in rows)


def test_show_attention_and_plot(ckpt, capsys, monkeypatch, tmp_path):
    png = tmp_path / "attn.png"
    code, out, _ = translate(
        ["--checkpoint", ckpt, "--show-attention", "--plot", str(png), SENTENCE], capsys, monkeypatch
    )
    assert code == 0 and png.stat().st_size > 1000
    assert out.splitlines()[1] == "cross-attention of layer mean head mean (default), % of each row, * = link"
    header = out.splitlines()[2]
    assert header.split() == SENTENCE.split()  # words, not subword pieces
    assert "alignment: " in out


def test_show_attention_gives_the_links_of_mt_align(ckpt, capsys, monkeypatch, tmp_path):
    """One pooling path: `mt.translate --show-attention` and `mt.align --translations` (same beam,
    default AlignConfig) show the same translation words, the same links, and the grid stars them."""
    from mt.align.cli import main as align

    src, translations, links = tmp_path / "src.txt", tmp_path / "hyp.txt", tmp_path / "hyp.align"
    src.write_text(SENTENCE + "\n")
    outputs = ["--translations", str(translations), "--output", str(links)]
    align(["--checkpoint", ckpt, "--src", str(src), *outputs, "--beam", "5"])
    src_words, tgt_words = SENTENCE.split(), translations.read_text().split()
    pairs = [tuple(map(int, link.split("-"))) for link in links.read_text().split()]
    assert len({j for _, j in pairs}) == len(tgt_words) > 0  # every target word linked

    code, out, _ = translate(["--checkpoint", ckpt, "--beam", "5", "--show-attention", SENTENCE], capsys, monkeypatch)
    lines = out.splitlines()
    assert code == 0 and lines[-1].startswith("alignment: ")
    shown = [tuple(x.split("->")) for x in lines[-1].removeprefix("alignment: ").split("  ")]
    assert shown == [(src_words[i], tgt_words[j]) for i, j in pairs]
    header, *rows = lines[2:-1]
    assert header.split() == src_words and [row.split()[0] for row in rows] == tgt_words
    starred = {(i, j) for j, row in enumerate(rows) for i, cell in enumerate(row.split()[1:]) if cell.endswith("*")}
    assert starred == set(pairs)


@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    """An untrained tiny model whose checkpoint records full-context aligning heads (layer 1 head 0)."""
    from tests.test_align import SUPERVISED, toy_model_file

    return str(toy_model_file(tmp_path_factory.mktemp("sup") / "sup.pt", SUPERVISED))


def test_show_attention_reads_the_recorded_heads_in_word_units(supervised, capsys, monkeypatch, tmp_path):
    """The grid says which heads it shows; punctuation is a word of its own on both sides; the
    alignment line is what `mt.align --translations` writes (both re-read the translation with full context)."""
    from mt.align.cli import main as align

    png = tmp_path / "attn.png"
    args = ["--checkpoint", supervised, "--beam", "2", "--show-attention", "the cat sits."]
    code, out, _ = translate([*args, "--plot", str(png)], capsys, monkeypatch)
    title, header, *rows, alignment = out.splitlines()[1:]
    assert code == 0 and png.stat().st_size > 1000
    assert title == "cross-attention of layer 1 head 0, full context (supervised), % of each row, * = link"
    assert header.split() == ["the", "cat", "sits", "."]

    src, hyp, links = tmp_path / "src.txt", tmp_path / "hyp.txt", tmp_path / "hyp.align"
    src.write_text("the cat sits.\n")
    align(
        ["--checkpoint", supervised, "--src", str(src), "--translations", str(hyp), "--output", str(links)]
        + [
            "--beam",
            "2",
        ]
    )
    src_words, tgt_words = header.split(), hyp.read_text().split()
    pairs = [tuple(map(int, link.split("-"))) for link in links.read_text().split()]
    assert [row.split()[0] for row in rows] == tgt_words
    assert alignment == "alignment: " + "  ".join(f"{src_words[i]}->{tgt_words[j]}" for i, j in pairs)

    code, out, _ = translate([*args, "--layer", "0", "--head", "0,1"], capsys, monkeypatch)
    assert code == 0 and "of layer 0 heads 0,1, full context (options)" in out.splitlines()[1]
    code, _, err = translate([*args, "--head", "5"], capsys, monkeypatch)
    assert code == 2 and "--head 5 is out of range" in err and len(err.strip().splitlines()) == 1


def test_no_run_yet_says_make_train(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _, err = translate(["hello"], capsys, monkeypatch)
    assert code == 2 and "make train" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("case", "expect_code", "expect"),
    [
        ("empty string", 0, ""),
        ("whitespace only", 0, ""),
        ("20,000-character line", 0, "warning: input 1 has"),
        ("control bytes on stdin", 0, ""),
        ("binary file on stdin", 2, "not valid UTF-8"),
        ("invalid UTF-8", 2, "stdin line 2 is not valid UTF-8"),
        ("missing checkpoint", 2, "checkpoint not found"),
        ("truncated checkpoint", 2, "not a readable checkpoint"),
        ("checkpoint of another kind", 2, "not an mt checkpoint"),
        ("directory instead of file", 2, "is a directory"),
        ("beam 0", 2, "--beam must be at least 1"),
        ("beam -3", 2, "--beam must be at least 1"),
        ("n-best above beam", 2, "--n-best must not exceed --beam (2), got 3"),
    ],
)
def test_bad_input_matrix(case, expect_code, expect, ckpt, capsys, monkeypatch, tmp_path):
    argv, stdin = ["--checkpoint", ckpt], None
    if case == "empty string":
        argv.append("")
    elif case == "whitespace only":
        argv.append("   \t ")
    elif case == "20,000-character line":
        argv.append(("the dog runs in the park " * 800)[:20000])
    elif case == "control bytes on stdin":
        stdin = b"\x00\x01the cat\x07 sleeps .\x1b[0m\n"
    elif case == "binary file on stdin":
        stdin = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8\xff\xe0"
    elif case == "invalid UTF-8":
        stdin = b"the dog runs .\nthe \xc3\x28 cat\n"
    elif case == "missing checkpoint":
        argv = ["--checkpoint", str(tmp_path / "nope.pt"), "hi"]
    elif case == "truncated checkpoint":
        data = open(ckpt, "rb").read()
        (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
        argv = ["--checkpoint", str(tmp_path / "cut.pt"), "hi"]
    elif case == "checkpoint of another kind":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
        argv = ["--checkpoint", str(tmp_path / "other.pt"), "hi"]
    elif case == "directory instead of file":
        argv = ["--checkpoint", str(tmp_path), "hi"]
    elif case.startswith("beam"):
        argv += ["--beam", case.split()[1], "hi"]
    elif case == "n-best above beam":
        argv += ["--beam", "2", "--n-best", "3", "hi"]
    code, out, err = translate(argv, capsys, monkeypatch, stdin=stdin)
    assert code == expect_code, (out, err)
    assert "Traceback" not in err
    if expect_code:
        assert len(err.strip().splitlines()) == 1 and expect in err, err
    else:
        assert expect in err or expect in out
        assert out.endswith("\n")
        if case in ("empty string", "whitespace only"):
            assert out == "\n"
        else:
            assert out.strip(), "a translation is printed"


def test_several_texts_give_several_lines(ckpt, capsys, monkeypatch):
    code, out, _ = translate(["--checkpoint", ckpt, "--beam", "1", "The cat sleeps .", SENTENCE], capsys, monkeypatch)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 and lines[1].startswith("Heute läuft der hund"), out


def test_checkpoint_may_be_a_run_folder_and_is_named(trained_run, ckpt, capsys, monkeypatch):
    _, by_file, _ = translate(["--checkpoint", ckpt, SENTENCE], capsys, monkeypatch)
    code, by_folder, err = translate(["--checkpoint", str(trained_run), SENTENCE], capsys, monkeypatch)
    assert code == 0 and by_folder == by_file
    assert f"mt.translate: using {trained_run / 'checkpoints' / 'best.pt'}" in err


def test_reading_a_terminal_says_so(ckpt, capsys, monkeypatch):
    class Terminal(io.TextIOWrapper):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal(io.BytesIO(b"The cat sleeps .\n")))
    main(["--checkpoint", ckpt, "--beam", "1"])
    out, err = capsys.readouterr()
    assert "reading sentences from the terminal" in err and len(out.splitlines()) == 1


def test_a_line_the_tokenizer_reads_as_nothing_translates_to_an_empty_line(ckpt, capsys, monkeypatch):
    code, out, _ = translate(["--checkpoint", ckpt, "\u200b\u200b", SENTENCE], capsys, monkeypatch)
    lines = out.split("\n")
    assert code == 0 and lines[0] == "" and lines[1].startswith("Heute"), out


def test_interactive_prompt_has_line_editing(ckpt, tmp_path):
    """Typed in a real terminal, arrow keys move the cursor (readline) instead of sending the escape
    code `^[[D` into the sentence: "The cat sleps ." + Left x4 + "e" is "The cat sleeps ."."""
    import os
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: the translator on the terminal's other end
        os.execv(sys.executable, [sys.executable, "-m", "mt.translate", "--interactive", "--beam", "1",
                                  "--checkpoint", ckpt])  # fmt: skip
    screen = b""

    def read_until(marker: bytes, seconds: float = 120) -> None:
        nonlocal screen
        deadline = time.monotonic() + seconds
        while marker not in screen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    screen += os.read(fd, 4096)
                except OSError:
                    break

    try:
        read_until(b"> ")
        os.write(fd, b"The cat sleps ." + b"\x1b[D" * 4 + b"e\r")
        read_until(b" ms)")
        os.write(fd, b"\r")  # an empty line ends the session
    finally:
        os.waitpid(pid, 0)
        os.close(fd)
    text = screen.decode("utf-8", "replace")
    assert "^[[D" not in text and "katze schläft" in text.lower(), text  # the edited sentence was translated


def test_output_file_appears_only_when_everything_is_translated(ckpt, capsys, monkeypatch, tmp_path):
    previous = tmp_path / "prev.de"
    previous.write_text("precious\n")
    bad = tmp_path / "mixed.en"
    bad.write_bytes(b"The cat sleeps .\nthe \xc3\x28 cat\n")
    code, _, err = translate(
        ["--checkpoint", ckpt, "--input", str(bad), "--output", str(previous)], capsys, monkeypatch
    )
    assert code == 2 and "line 2 is not valid UTF-8" in err
    assert previous.read_text() == "precious\n"  # the failed run left it as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.en", "prev.de"]  # no temp file left
    code, _, err = translate(
        ["--checkpoint", ckpt, "--input", str(tmp_path / "nope.en"), "--output", str(tmp_path / "new.de")],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "input file not found" in err and not (tmp_path / "new.de").exists()
    good = tmp_path / "good.en"
    good.write_text(f"{SENTENCE}\n")
    code, _, _ = translate(["--checkpoint", ckpt, "--input", str(good), "--output", str(previous)], capsys, monkeypatch)
    assert code == 0 and previous.read_text().startswith("Heute läuft der hund")


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("output is the input", "is also an input of this command"),
        ("text and --input", "sentences given as arguments and --input: choose one"),
        ("plot of an unknown format", ".xyz is not an image format"),
        ("plot into a directory", "is a directory"),
        ("plot of several sentences without {n}", "put {n}"),
        ("plot of an input file without {n}", "put {n}"),
    ],
)
def test_file_mistakes_are_one_line_before_loading(case, expect, ckpt, capsys, monkeypatch, tmp_path):
    source = tmp_path / "in.en"
    source.write_text(f"{SENTENCE}\n")
    argv = ["--checkpoint", ckpt]
    if case == "output is the input":
        argv += ["--input", str(source), "--output", str(source)]
    elif case == "text and --input":
        argv += ["--input", str(source), SENTENCE]
    elif case == "plot of an unknown format":
        argv += ["--plot", str(tmp_path / "attn.xyz"), SENTENCE]
    elif case == "plot into a directory":
        (tmp_path / "figs.png").mkdir()
        argv += ["--plot", str(tmp_path / "figs.png"), SENTENCE]
    elif case == "plot of several sentences without {n}":
        argv += ["--plot", str(tmp_path / "a.png"), SENTENCE, "The cat sleeps ."]
    elif case == "plot of an input file without {n}":
        argv += ["--plot", str(tmp_path / "a.png"), "--input", str(source)]
    code, out, err = translate(argv, capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expect in err, err
    assert source.read_text() == f"{SENTENCE}\n" and out == ""
    assert not list(tmp_path.glob("*.png")) or case == "plot into a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) in (["in.en"], ["figs.png", "in.en"])


def test_plot_without_a_suffix_is_a_png_of_exactly_that_name(ckpt, capsys, monkeypatch, tmp_path):
    code, _, err = translate(["--checkpoint", ckpt, "--plot", str(tmp_path / "attn"), SENTENCE], capsys, monkeypatch)
    assert code == 0 and f"written to {tmp_path / 'attn'}" in err
    assert [p.name for p in tmp_path.iterdir()] == ["attn"]  # not attn.png
    assert (tmp_path / "attn").read_bytes().startswith(b"\x89PNG")


def test_plot_of_several_sentences_numbers_the_files(ckpt, capsys, monkeypatch, tmp_path):
    pattern = str(tmp_path / "attn-{n}.png")
    code, _, err = translate(
        ["--checkpoint", ckpt, "--plot", pattern, SENTENCE, "", "The cat sleeps ."], capsys, monkeypatch
    )
    assert code == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["attn-1.png", "attn-3.png"]
    assert "line 2 is empty: no plot" in err


def test_a_byte_order_mark_is_not_part_of_the_first_word(ckpt, capsys, monkeypatch, tmp_path):
    source = tmp_path / "bom.en"
    source.write_bytes(f"\ufeff{SENTENCE}\n".encode())
    code, out, _ = translate(["--checkpoint", ckpt, "--show-attention", "--input", str(source)], capsys, monkeypatch)
    assert code == 0 and out.splitlines()[2].split() == SENTENCE.split()


def test_a_bad_option_is_one_line_not_the_usage_block(capsys, monkeypatch):
    code, out, err = translate(["--layer", "abc", "hi"], capsys, monkeypatch)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("python -m mt.translate: error: argument --layer") and "usage:" not in err
