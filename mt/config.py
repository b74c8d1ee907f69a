"""Typed configuration: one dataclass per Hydra config group.

Hydra composes `configs/` on top of these schemas, so a misspelled key or a value of the
wrong type fails at composition time. Library code receives these dataclasses, never a
DictConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"  # the team's read-only copies, beside the project


@dataclass
class DataConfig:
    name: str = MISSING  # multi30k | iwslt16 | iwslt2017 | toy | files
    format: str = "text"  # text: {split}.{lang}[.gz] files; iwslt_xml; hf_hub
    dir: str = ""  # where the corpus lies; empty: the default for the corpus
    src_lang: str = "en"
    tgt_lang: str = "de"
    # Split name -> file stem (text), or list of set names (iwslt_xml), or hub split name.
    train: list[str] = field(default_factory=lambda: ["train"])
    valid: list[str] = field(default_factory=lambda: ["val"])
    test: list[str] = field(default_factory=lambda: ["test_2016_flickr"])
    hf_name: str = ""  # hub dataset, e.g. iwslt2017
    hf_config: str = ""  # hub config, e.g. iwslt2017-de-en
    # Extra training pairs appended as is (e.g. alignment gold sentences); "" = none.
    extra_train_src: str = ""
    extra_train_tgt: str = ""
    extra_train_repeat: int = 1  # copies of the extra pairs in the training split
    # Training pairs longer than this many subword tokens (either side) are dropped.
    max_len: int = 128
    # Valid/test sentences are never dropped, only truncated to this many tokens when encoded.
    cache_dir: str = "data/cache"
    # Processes that tokenize a split (once: the result is an Arrow file in cache_dir, memory-
    # mapped by later runs). 0 = automatic: one per core for splits of 100k pairs or more.
    num_proc: int = 0
    # Sentencepiece
    vocab_size: int = 8000
    joint_vocab: bool = True
    spm_model_type: str = "unigram"  # unigram | bpe
    spm_character_coverage: float = 1.0
    spm_input_sentence_size: int = 2_000_000


@dataclass
class ModelConfig:
    d_model: int = 256
    layers: int = 3
    encoder_layers: int | None = None  # None: `layers`
    decoder_layers: int | None = None  # None: `layers`
    heads: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation: str = "relu"  # relu | gelu
    norm: str = "pre"  # pre | post
    positions: str = "sinusoidal"  # sinusoidal | learned
    tie_embeddings: bool = True  # output = target embedding (and = source embedding if joint)
    max_positions: int = 256


@dataclass
class DecodeConfig:
    beam_size: int = 5
    length_penalty: float = 1.0  # GNMT alpha; 0 = raw log-probability
    max_len_a: float = 1.2  # max output length = a * src_len + b
    max_len_b: int = 10
    n_best: int = 1
    max_tokens: int = 6000  # source tokens per decoding batch (before beam expansion)


@dataclass
class TrainConfig:
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads; 0 = all cores
    optimizer: str = "adamw"  # adam | adamw
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    warmup_steps: int = 1000
    min_lr: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    clip_norm: float = 1.0  # 0 = no clipping
    max_tokens: int = 4096  # tokens per batch (padded, max of source and target side)
    accumulate: int = 1  # gradient accumulation steps per update
    max_epochs: int = 30
    max_steps: int = 0  # 0 = no step limit
    max_minutes: float = 0.0  # 0 = no time limit; stop training (then test) after this
    eval_every: int = 0  # validate every N updates; 0 = once per epoch
    save_every: int = 0  # write the resumable checkpoint every N updates; 0 = at validation
    patience: int = 0  # stop after N validations without BLEU gain; 0 = never
    # Keep the weights of the last N saves (validations, save_every) and, after training, test
    # their average instead of best.pt if it scores higher on the validation split; 0 = off.
    average_last: int = 0
    valid_max_sentences: int = 0  # 0 = whole validation split
    log_every: int = 50
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    compile: bool = False
    resume: bool = False
    max_bad_steps: int = 10  # consecutive non-finite losses before the run stops
    progress: bool = True
    samples: int = 3  # sample translations logged per validation


@dataclass
class MTConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def register_configs() -> None:
    """Register the schema so `configs/config.yaml` composes on top of it."""
    cs = ConfigStore.instance()
    cs.store(name="mt_schema", node=MTConfig)


def to_dataclass(cfg: DictConfig) -> MTConfig:
    """Turn a composed (and validated) DictConfig into plain dataclasses."""
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, MTConfig)
    return obj


def default_data_dir(name: str) -> Path:
    """Where a corpus lies when data.dir is empty: data/NAME (made by `make data`), else ../shared/data."""
    prepared = PROJECT_ROOT / "data" / name
    shared = SHARED_DATA / {"multi30k": "multi30k", "iwslt16": "iwslt16-de-en"}.get(name, name)
    return prepared if prepared.is_dir() or not shared.is_dir() else shared
