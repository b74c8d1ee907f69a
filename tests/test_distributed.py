"""DDP with torchrun: two CPU processes (gloo) must train exactly like one process with twice the batch."""

import json
import subprocess
import sys

import pytest
import torch

from mt.checkpoint import read
from mt.distributed import Dist, shard

from .conftest import ROOT


def train_on_two_ranks(overrides: list[str], cwd) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=2 -m mt.train OVERRIDES` (gloo on CPU)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*torchrun, "-m", "mt.train", *overrides], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_shards_are_disjoint_and_cover_the_update():
    group = list(range(8))  # 2 ranks x accumulate 4
    parts = [shard(group, Dist(rank=r, world=2), accumulate=4) for r in range(2)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert shard(list(range(3)), Dist(rank=2, world=3), accumulate=1) == [2]


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra", [[], ["train.align_weight=0.1", "model.align_full_context=true"]], ids=["plain", "aligning-head"]
)
def test_torchrun_two_ranks_match_one_process_with_double_batch(tmp_path, extra):
    common = [
        *extra,
        "data=toy",
        "model=tiny",
        "train=smoke",
        "train.max_steps=6",
        "train.eval_every=0",
        "model.dropout=0.0",
        "train.threads=1",
        "train.progress=false",
        "train.valid_max_sentences=5",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    single = subprocess.run(
        [sys.executable, "-m", "mt.train", *common, "train.accumulate=2", f"hydra.run.dir={tmp_path / 'single'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    ddp = train_on_two_ranks([*common, f"hydra.run.dir={tmp_path / 'ddp'}"], cwd=ROOT)
    assert ddp.returncode == 0, ddp.stderr
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 6
    assert metrics["ddp_max_param_divergence"] == 0.0  # replicas identical after every step
    a = read(tmp_path / "single" / "checkpoints" / "last.pt")
    b = read(tmp_path / "ddp" / "checkpoints" / "last.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=1e-6, rtol=1e-5)
    # Both consumed the same 12 batches; DDP drops the epoch's odd 13th batch, so it is at the next epoch.
    assert (a["train_state"]["epoch"], a["train_state"]["batch_in_epoch"]) == (0, 12)
    assert (b["train_state"]["epoch"], b["train_state"]["batch_in_epoch"]) == (1, 0)


@pytest.mark.slow
def test_without_a_cache_the_ranks_share_rank_zeros_tokenizer_and_teacher(tmp_path):
    """data.cache_dir="" shares nothing through files, and sentencepiece and eflomal each drawn per
    rank could differ (eflomal samples): rank 0 makes both once and the others take its copies."""
    ddp = train_on_two_ranks(
        [
            "data=toy",
            "model=tiny",
            "train=smoke",
            "train.max_steps=2",
            "train.eval_every=0",
            "train.threads=1",
            "train.progress=false",
            "train.valid_max_sentences=5",
            "train.align_weight=0.1",
            "data.cache_dir=",
            f"hydra.run.dir={tmp_path / 'ddp'}",
        ],
        cwd=tmp_path,  # a cache that ignored "" would land here
    )
    out = ddp.stdout + ddp.stderr
    assert ddp.returncode == 0, ddp.stderr
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["processes"] == 2
    assert out.count("tokenizer: training sentencepiece") == 1, out
    assert out.count("teacher alignments: eflomal") == 1, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
