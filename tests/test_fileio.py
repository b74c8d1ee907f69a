"""Output files: atomic where they are files, written in place where they are not (a pipe, a
device), never over one of the command's inputs; an unwritable path is one UserError."""

import os
import threading

import pytest

from mt.errors import UserError
from mt.fileio import atomic_output, atomic_write_text, refuse_output_over_input


def test_a_failed_block_leaves_the_old_file_and_no_temp_file(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_output(out) as handle:
        handle.write("half of the new\n")
        raise RuntimeError("the run fails")
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_output(out) as handle:
        handle.write("new\n")
        assert out.read_text() == "old\n"  # nothing shows before the block ends
    assert out.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_in_place_shows_each_line_at_once(tmp_path):
    out = tmp_path / "session.txt"
    with atomic_output(out, in_place=True) as handle:
        handle.write("first answer\n")
        handle.flush()
        assert out.read_text() == "first answer\n"


def test_a_symbolic_link_keeps_pointing_at_its_rewritten_target(tmp_path):
    target, link = tmp_path / "real.txt", tmp_path / "link.txt"
    target.write_text("old\n")
    link.symlink_to(target)
    with atomic_output(link) as handle:
        handle.write("new\n")
    atomic_write_text(link, "newer\n")
    assert link.is_symlink() and target.read_text() == "newer\n"


def test_a_pipe_is_written_into_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    with atomic_output(fifo) as handle:
        handle.write("through the pipe\n")
    reader.join(timeout=10)
    assert received == ["through the pipe\n"]
    assert not fifo.is_file() and fifo.exists()  # still the pipe, not a file put in its place


def test_a_stream_name_writes_into_the_stream_not_over_its_file(tmp_path):
    redirected = tmp_path / "redirected.txt"
    redirected.write_text("earlier\n")
    inode = redirected.stat().st_ino
    with open(redirected, "a") as shell_side:  # as `>> redirected.txt` leaves file descriptor N open
        with atomic_output(f"/proc/self/fd/{shell_side.fileno()}") as handle:
            handle.write("translations\n")
        shell_side.write("more from the shell\n")  # the shell's descriptor still reaches the file
    assert redirected.stat().st_ino == inode  # written through, not replaced by a new file
    assert redirected.read_text().endswith("translations\nmore from the shell\n")


@pytest.mark.parametrize("case", ["a directory", "under a file", "in /proc"])
def test_an_unwritable_path_is_one_user_error(case, tmp_path):
    (tmp_path / "a-file").write_text("")
    path = {"a directory": tmp_path, "under a file": tmp_path / "a-file" / "x.txt", "in /proc": "/proc/no/x.txt"}[case]
    with pytest.raises(UserError, match="cannot write"), atomic_output(path) as handle:
        handle.write("never")
    with pytest.raises(UserError, match="cannot write"):
        atomic_write_text(path, "never")


def test_an_output_that_is_an_input_is_refused(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("keep me\n")
    refuse_output_over_input(tmp_path / "other.txt", [source], "--output")  # a new file: fine
    (tmp_path / "alias.txt").symlink_to(source)
    for same in (source, tmp_path / "alias.txt", tmp_path / "." / "in.txt"):
        with pytest.raises(UserError, match="--output .* is also an input"):
            refuse_output_over_input(same, [None, source], "--output")
