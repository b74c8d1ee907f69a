import subprocess
import sys

import pytest

from mt.cli import check_overrides, compose_config
from mt.config import DecodeConfig, ModelConfig, MTConfig, TrainConfig, validate
from mt.errors import UserError
from mt.paths import CONFIG_DIR

from .conftest import ROOT, toy_train_cmd


def group_options(group):
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [f"{g}={o}" for g in ("data", "model", "train", "decode") for o in group_options(g)]
    + [f"experiment={o}" for o in group_options("experiment")],
)
def test_every_config_option_composes(override):
    cfg = compose_config([override])
    assert isinstance(cfg, MTConfig) and cfg.problems() == []


def test_defaults_are_multi30k_plus_tatoeba_en_de_mini_model():
    cfg = compose_config()
    assert (cfg.data.name, cfg.data.src_lang, cfg.data.tgt_lang) == ("multi30k_tatoeba", "en", "de")
    assert list(cfg.data.corpora) == ["multi30k", "tatoeba"]
    assert compose_config(["data=multi30k"]).data.corpora == {}  # the captions-only recipe is one word away
    assert (cfg.model.d_model, cfg.model.layers, cfg.model.heads) == (128, 3, 4)


@pytest.mark.parametrize("override", ["train=full"] + [f"experiment={o}" for o in group_options("experiment")])
def test_recipes_measured_with_the_wider_model_keep_it(override):
    """Their published figures are of model=small (d_model 256); the default's narrower model must not leak in,
    while a model chosen on the command line still wins."""
    assert compose_config([override]).model.d_model == 256
    assert compose_config([override, "model=tiny"]).model.d_model == 64


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
    proc = subprocess.run(
        [sys.executable, "-m", "mt.train", "model.d_modell=3"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "d_modell" in lines[0], proc.stderr


def test_cli_prints_composed_config():
    proc = subprocess.run(
        [sys.executable, "-m", "mt.train", "--cfg", "job", "model=tiny"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "d_model: 64" in proc.stdout and "src_lang: en" in proc.stdout


OUT_OF_RANGE = [
    ("train.lr=-1", "train.lr must be > 0"),
    ("model.dropout=1.5", "model.dropout must be in [0, 1)"),
    ("train.max_tokens=0", "train.max_tokens must be at least 1"),
    ("decode.beam_size=0", "decode.beam_size must be at least 1"),
    ("model.layers=0", "model.layers must be at least 1"),
]


@pytest.mark.parametrize(("override", "message"), OUT_OF_RANGE)
def test_cli_value_out_of_range_is_one_line_and_exit_2(override, message, tmp_path):
    proc = subprocess.run(
        toy_train_cmd(override, f"hydra.run.dir={tmp_path / 'run'}"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("mt.train: error: ") and message in lines[0]
    assert not (tmp_path / "run").exists()  # refused before Hydra wrote anything


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.heads=3", "model.d_model"),  # 128 is not divisible by 3
        ("model.norm=middle", "model.norm"),
        ("model.activation=tanh", "model.activation"),
        ("model.attention_dropout=-0.1", "model.attention_dropout"),
        ("model.decoder_layers=0", "model.decoder_layers"),
        ("train.warmup_steps=-5", "train.warmup_steps"),
        ("train.optimizer=sgd", "train.optimizer"),
        ("train.precision=fp8", "train.precision"),
        ("train.lr_schedule=step", "train.lr_schedule"),
        ("train.label_smoothing=1.0", "train.label_smoothing"),
        ("train.betas=[0.9]", "train.betas"),
        ("train.accumulate=0", "train.accumulate"),
        ("train.device=tpu", "train.device"),
        ("decode.n_best=9", "decode.n_best"),
        ("decode.length_penalty=-1", "decode.length_penalty"),
        ("data.vocab_size=0", "data.vocab_size"),
        ("data.tgt_lang=en", "data.tgt_lang"),
        ("data.format=csv", "data.format"),
        ("data.max_len=1000", "data.max_len"),  # longer than model.max_positions
    ],
)
def test_every_setting_is_range_checked(override, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        compose_config([override])


def test_a_budgeted_lr_schedule_needs_a_step_budget_past_warmup():
    assert compose_config(["train.lr_schedule=cosine"]).problems() == []  # 2,400 updates, warmup 200
    for budget in ("train.max_steps=0", "train.max_steps=200", "train.max_steps=150"):
        with pytest.raises(UserError, match=r"train\.lr_schedule reaches train\.min_lr at train\.max_steps"):
            compose_config(["train.lr_schedule=cosine", budget])


def test_validation_lists_every_problem_and_accepts_defaults():
    cfg = MTConfig(model=ModelConfig(layers=0, dropout=2.0), train=TrainConfig(lr=0), decode=DecodeConfig())
    with pytest.raises(UserError) as err:
        validate(cfg)
    assert all(key in str(err.value) for key in ("model.layers", "model.dropout", "train.lr"))
    assert ModelConfig().problems() == [] and TrainConfig().problems() == [] and DecodeConfig().problems() == []
