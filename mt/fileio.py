"""Reading text files (UTF-8, plain or gzip) and atomic writes: a crash leaves the old file or the new one."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TextIO

import torch

from mt.errors import UserError


def _temp_beside(target: Path, shown: Path) -> tuple[int, str]:
    """A new temp file in `target`'s directory (made if missing) with the usual permissions; a
    path that cannot be written (a directory, no permission, a read-only place) is a UserError
    naming `shown`, the path as the user gave it."""
    if target.is_dir():
        raise UserError(f"cannot write {shown}: it is a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write {shown}: {err.strerror or err}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    return fd, tmp


def _in_place(path: Path) -> bool:
    """An existing path that is not a regular file or a directory (a pipe, /dev/null, a terminal),
    or a name of an open stream (/dev/stdout, /dev/fd/N, /proc/self/fd/N, even when it leads to a
    file the shell redirected to), is written where it is: replacing it would break what it points to."""
    if path.is_absolute() and path.parts[1:2] in (("dev",), ("proc",)):
        return True
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _open(path: Path, mode: str) -> IO:
    try:
        return open(path, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""}))
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None


def _commit(handle: IO, tmp: str, target: Path, shown: Path) -> None:
    """Flush the temp file to disk and rename it over `target` (a full disk shows up here)."""
    try:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(tmp, target)
    except OSError as err:
        raise UserError(f"cannot write {shown}: {err.strerror or err}") from None


def _atomic_write(path: Path, write) -> None:
    """Write through a temp file in the same directory, fsync, then rename over `path` (over its
    target, if it is a symbolic link).

    A crash at any moment leaves either the old file or the new one, never a torn file.
    """
    path = Path(path)
    if _in_place(path):
        with _open(path, "wb") as handle:
            write(handle)
        return
    target = Path(os.path.realpath(path))
    fd, tmp = _temp_beside(target, path)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            _commit(handle, tmp, target, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_output(path: Path | str, in_place: bool = False) -> Iterator[TextIO]:
    """A UTF-8 text file written through a temp file that replaces `path` only when the block
    ends without an error: a failed or interrupted run leaves the old file (or none) as it was.
    `in_place` (a session whose every line should land at once, e.g. an interactive one) and
    paths that are not regular files (a pipe, /dev/stdout) are written directly instead."""
    path = Path(path)
    if in_place or _in_place(path):
        if path.is_dir():
            raise UserError(f"cannot write {path}: it is a directory")
        with _open(path, "w") as handle:
            yield handle
        return
    target = Path(os.path.realpath(path))
    fd, tmp = _temp_beside(target, path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
            _commit(handle, tmp, target, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: Path | str) -> None:
    """Refuse, before long work, an output file that could not be written: a temp file is made
    beside it and removed (permission bits do not tell for root, read-only mounts, /proc)."""
    path = Path(path)
    if _in_place(path):
        return
    fd, tmp = _temp_beside(Path(os.path.realpath(path)), path)
    os.close(fd)
    os.unlink(tmp)


def refuse_output_over_input(output: Path | str | None, inputs: Iterable[Path | str | None], option: str) -> None:
    """One line instead of an output file that would replace one of the command's own inputs."""
    if not output or not Path(output).exists():
        return
    for source in inputs:
        if source and Path(source).exists() and os.path.samefile(output, source):
            raise UserError(f"{option} {output} is also an input of this command: choose another output file")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_text(obj: Any) -> str:
    """How the project writes a JSON file: indented, UTF-8 as is, a final newline."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json_text(obj))


def atomic_torch_save(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda handle: torch.save(obj, handle))


def new_directory_beside(path: Path) -> Path:
    """An empty hidden directory next to `path`, to build its replacement in (`replace_directory`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    umask = os.umask(0)
    os.umask(umask)
    built.chmod(0o777 & ~umask)  # mkdtemp makes 0700; give the folder the usual permissions
    return built


def replace_directory(built: Path, path: Path) -> None:
    """Put the directory `built` at `path` by renames, removing what was there only afterwards:
    a crash leaves the old directory or the new one at `path`, never a half-written one."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old")) / path.name
        os.replace(path, old)
    os.replace(built, path)
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)


def iter_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file (gzip or plain), one at a time; bad bytes -> error naming file and line."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    yield raw.rstrip(b"\n").decode("utf-8").rstrip("\r")
                except UnicodeDecodeError as err:
                    raise UserError(
                        f"{path}: line {number} is not valid UTF-8 ({err.reason} at byte {err.start})"
                    ) from None
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read {path}: {err}") from None


def read_lines(path: Path) -> list[str]:
    return list(iter_lines(path))
