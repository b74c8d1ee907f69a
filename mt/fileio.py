"""Reading text files (UTF-8, plain or gzip) and atomic writes: a crash leaves the old file or the new one."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mt.errors import UserError


def _atomic_write(path: Path, write) -> None:
    """Write through a temp file in the same directory, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


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
