"""Every path root the toolkit uses, in one place.

Paths relative to the current directory (run folders, caches) follow the user; paths anchored at
the project (configs, the shared data beside it) do not.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"  # Hydra's config groups
PREPARED_DATA = PROJECT_ROOT / "data"  # corpora made by `make data`, and data/cache
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"  # the team's read-only copies, beside the project
ALIGNMENT_GOLD = SHARED_DATA / "alignment-gold" / "en-fr"  # Hansards en-fr gold links
RUN_ROOT = Path("outputs")  # single runs (hydra.run.dir); the latest finished one is every tool's default model
SWEEP_ROOT = Path("multirun")  # sweeps (hydra.sweep.dir)
