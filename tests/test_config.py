import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from mt.cli import CONFIG_DIR, check_overrides
from mt.config import MTConfig, register_configs, to_dataclass
from mt.errors import UserError

from .conftest import ROOT

register_configs()


def group_options(group):
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [f"{g}={o}" for g in ("data", "model", "train", "decode") for o in group_options(g)]
    + [f"experiment={o}" for o in group_options("experiment")],
)
def test_every_config_option_composes(override):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = to_dataclass(compose(config_name="config", overrides=[override]))
    assert isinstance(cfg, MTConfig)


def test_defaults_are_multi30k_en_de_small_model():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = to_dataclass(compose(config_name="config"))
    assert (cfg.data.name, cfg.data.src_lang, cfg.data.tgt_lang) == ("multi30k", "en", "de")
    assert (cfg.model.d_model, cfg.model.layers, cfg.model.heads) == (256, 3, 4)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.d_modell=3", "d_modell"),
        ("train.max_tokens=abc", "train.max_tokens"),
        ("data=nonexistent", "data/nonexistent"),
    ],
)
def test_bad_overrides_are_one_clear_error(override, message):
    with pytest.raises(UserError, match=message):
        check_overrides([override])


def test_cli_bad_key_exits_nonzero_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "mt.train", "model.d_modell=3"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "d_modell" in lines[0], proc.stderr


def test_cli_prints_composed_config():
    proc = subprocess.run([sys.executable, "-m", "mt.train", "--cfg", "job", "model=tiny"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "d_model: 64" in proc.stdout and "src_lang: en" in proc.stdout
