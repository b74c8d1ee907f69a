"""Shared fixtures: the toy corpus, a toy tokenizer, and one trained toy checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mt.config import DataConfig, DecodeConfig, ModelConfig, MTConfig, TrainConfig
from mt.model import Transformer
from mt.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
TOY = ROOT / "tests" / "fixtures" / "toy"


def toy_train_cmd(*overrides: str) -> list[str]:
    """`python -m mt.train` on the toy corpus with the tiny model and the smoke recipe."""
    return [sys.executable, "-m", "mt.train", "data=toy", "model=tiny", "train=smoke", *overrides]


def toy_config(tmp: Path, **train_overrides) -> MTConfig:
    """The toy/tiny/smoke configuration as dataclasses, caches under `tmp`."""
    train = TrainConfig(
        lr=3e-3,
        warmup_steps=20,
        max_tokens=1024,
        max_epochs=100,
        max_steps=150,
        eval_every=75,
        log_every=10,
        valid_max_sentences=50,
        progress=False,
        threads=1,
    )
    for key, value in train_overrides.items():
        setattr(train, key, value)
    return MTConfig(
        data=DataConfig(
            name="toy",
            dir=str(TOY),
            train=["train"],
            valid=["valid"],
            test=["test"],
            vocab_size=64,
            cache_dir=str(tmp / "cache"),
        ),
        model=ModelConfig(d_model=64, layers=2, heads=4, ffn_dim=128, max_positions=160),
        train=train,
        decode=DecodeConfig(beam_size=3),
    )


def tiny_model(vocab: int = 40, seed: int = 0, **model_overrides) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=32, layers=2, heads=4, ffn_dim=64, dropout=0.0, max_positions=64)
    for key, value in model_overrides.items():
        setattr(cfg, key, value)
    return Transformer(cfg, vocab, vocab).eval()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One toy training run (a few seconds), shared by the tests that need a real checkpoint."""
    from mt.train import run

    run_dir = tmp_path_factory.mktemp("toy-run")
    torch.set_num_threads(2)
    run(toy_config(run_dir, threads=2, max_steps=300, eval_every=150), run_dir)
    return run_dir


def pytest_collection_modifyitems(items):
    """Tests that need the trained toy model are slow like the ones that train (`make test-fast` skips both)."""
    for item in items:
        if "trained_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def run_cli(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """A command's main(argv) as the shell sees it: (exit status, stdout, stderr)."""
    code = 0
    try:
        main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err
