"""Device choice shared by every command: auto (CUDA when present), cpu or cuda; what CPU this is
(for the benchmarks' records)."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

from mt.errors import UserError


def pick_device(name: str, option: str = "--device") -> torch.device:
    """`option` names the setting in error messages (`train.device`, `--device`)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"{option} must be auto, cpu, cuda or cuda:N, not '{name}'")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{option} is cuda but no CUDA device is available")
    return torch.device(name)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to reuse freed memory instead of returning it to the OS.

    By default every tensor above a few MB (a [N, vocab] logits tensor is ~100 MB) is a fresh
    mmap, so each training step page-faults its big buffers in again; on our 2-core CPU that
    cost ~12% of training throughput (docs/benchmarks.md). Returns False where not glibc.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        limit = ctypes.c_int(1 << 30)
        return bool(libc.mallopt(m_mmap_threshold, limit)) and bool(libc.mallopt(m_trim_threshold, limit))
    except (OSError, AttributeError):
        return False


# CPU features that decide how fast bf16 matmuls can be (AVX512-BF16, AMX)
CPU_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info(cpuinfo: str | None = None) -> dict:
    """The CPU's model name and which of CPU_FLAGS it has, from /proc/cpuinfo (Linux), else lscpu;
    the model name falls back to platform.processor() / platform.machine() elsewhere."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            try:
                cpuinfo = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                cpuinfo = ""
    model, flags = "", None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "features") and flags is None:
            flags = set(value.split())
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_arch": platform.machine(),
        "cpu_flags": {f: f in flags for f in CPU_FLAGS} if flags is not None else None,
    }
