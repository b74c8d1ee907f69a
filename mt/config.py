"""Typed configuration: one dataclass per Hydra config group, and the checks of its values.

Hydra composes `configs/` on top of these schemas, so a misspelled key or a value of the
wrong type fails at composition time; each dataclass's `problems()` then checks ranges and
choices, and `validate` turns them into one UserError (one line, exit 2). Library code
receives these dataclasses, never a DictConfig.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mt.errors import UserError
from mt.paths import PREPARED_DATA, SHARED_DATA

DATA_FORMATS = ("text", "iwslt_xml", "hf_hub", "tsv")
SPM_MODEL_TYPES = ("unigram", "bpe")
ACTIVATIONS = ("relu", "gelu")
NORMS = ("pre", "post")
POSITIONS = ("sinusoidal", "learned")
OPTIMIZERS = ("adam", "adamw")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LR_SCHEDULES = ("inverse_sqrt", "linear", "cosine")
# Which eflomal links the aligning heads learn (train.align_teacher): a symmetrization of both
# directions (mt.align.symmetrize), or "forward", eflomal's links in the model's own direction alone.
DEFAULT_ALIGN_TEACHER = "grow-diag-final-and"  # Garg et al.; also what a checkpoint without a record learned
# eflomal's independent samplers for the teacher (train.align_teacher_samplers): 3 is eflomal's own
# default; checkpoints without a record learned from 2 (the setting until 2026-11-27).
DEFAULT_ALIGN_TEACHER_SAMPLERS = 3
UNRECORDED_ALIGN_TEACHER_SAMPLERS = 2
DEFAULT_ALIGN_TEACHER_RUNS = 1  # eflomal runs whose majority links make the teacher (train.align_teacher_runs)
UNRECORDED_ALIGN_TEACHER_RUNS = 1
ALIGN_TEACHERS = (DEFAULT_ALIGN_TEACHER, "grow-diag-final", "grow-diag", "intersection", "union", "forward")


# Settings that never change a result (where and how visibly a run happens): neither swept
# parameters in mt.compare nor hyperparameters in TensorBoard.
NOT_HYPERPARAMETERS = frozenset({
    "data.cache_dir", "data.num_proc", "train.progress", "train.resume", "train.overwrite",
    "train.log_every", "train.samples", "train.save_every", "train.device", "train.threads",
})  # fmt: skip


class _Checks:
    """Collects what is wrong with a config group, each problem naming its key (`train.lr`)."""

    def __init__(self, group: str, cfg: object):
        self.group, self.cfg, self.found = group, cfg, []
        for f in fields(cfg):  # inf passes every range check (inf > 0): no setting of ours is infinite
            value = getattr(cfg, f.name)
            if isinstance(value, float) and math.isinf(value):
                self.found.append(f"{group}.{f.name} must be a finite number, got {value!r}")

    def require(self, ok: bool, key: str, rule: str) -> None:
        if not ok:
            self.found.append(f"{self.group}.{key} {rule}, got {getattr(self.cfg, key)!r}")

    def at_least(self, minimum: float, *keys: str) -> None:
        for key in keys:
            value = getattr(self.cfg, key)
            self.require(value is None or value >= minimum, key, f"must be at least {minimum}")

    def choice(self, key: str, options: tuple[str, ...]) -> None:
        self.require(getattr(self.cfg, key) in options, key, f"must be one of {', '.join(options)}")

    def fraction(self, *keys: str) -> None:
        for key in keys:
            self.require(0 <= getattr(self.cfg, key) < 1, key, "must be in [0, 1)")


@dataclass
class GoldConfig:
    """A gold alignment set: whitespace-tokenized sentence files and Pharaoh links (i-j sure, ipj possible)."""

    src: str = ""  # source sentences, one per line (the model's source language)
    tgt: str = ""
    links: str = ""  # one line of links per sentence pair
    one_based: bool = False  # links count words from 1 (the Hansards gold does)
    reversed: bool = False  # links are written target-source (a gold set used for the other direction)

    @property
    def enabled(self) -> bool:
        return bool(self.links)

    def problems(self) -> list[str]:
        c = _Checks("data.align_gold", self)
        for key in ("src", "tgt"):
            c.require(bool(getattr(self, key)) == self.enabled, key, "and data.align_gold.links go together")
        return c.found


@dataclass
class HeldOutConfig:
    """Validation and test sets carved out of the training files (a corpus that ships as one file).

    Grouped by connected component of the pair graph: two pairs that share a sentence of either
    language are in the same split (and so, transitively, is every pair linked to them), so no
    valid or test sentence, source or target, is seen in training. Which groups are held out
    depends only on a hash (salted with `seed`) of each group's smallest sentence, not on the
    order of the lines; both directions of a corpus get the same split.
    """

    # Exactly this many distinct sentences of the `group_by` language for validation (test), in
    # whole groups: each group goes to valid if its sentences still fit, else to test if they fit
    # there, else to training (mt.data.held_out_rows).
    valid_sources: int = 0
    test_sources: int = 0
    group_by: str = ""  # the language whose distinct sentences the counts count; "" = data.src_lang
    seed: int = 0

    @property
    def enabled(self) -> bool:
        return self.valid_sources > 0 or self.test_sources > 0


@dataclass
class CorpusConfig:
    """One corpus: where its files lie, how to read them, which parts are train, valid and test.

    A data config is itself one corpus (the keys below at its top level), or lists several in
    `data.corpora` (mixed for training, validated and tested one by one).
    """

    name: str = ""  # in data.corpora: the entry's key
    format: str = "text"  # text: {split}.{lang}[.gz] files; iwslt_xml; hf_hub; tsv: {split}.tsv[.gz]
    dir: str = ""  # where the corpus lies; empty: the default for the corpus
    # Split name -> file stem (text, tsv), or list of set names (iwslt_xml), or hub split name.
    train: list[str] = field(default_factory=lambda: ["train"])
    valid: list[str] = field(default_factory=lambda: ["val"])
    test: list[str] = field(default_factory=lambda: ["test_2016_flickr"])
    hf_name: str = ""  # hub dataset, e.g. iwslt2017
    hf_config: str = ""  # hub config, e.g. iwslt2017-de-en
    # tsv: language -> 0-based column (e.g. {en: 0, de: 1}); other columns (attribution) are ignored.
    columns: dict[str, int] = field(default_factory=dict)
    # tsv: a bad line (another number of columns than the header line's, or without a header than
    # most lines', or an empty side) is an error naming file:line; otherwise such lines are
    # skipped and counted in one log line.
    strict: bool = False
    header: bool = False  # tsv: the first line of each file labels the columns (not a pair)
    held_out: HeldOutConfig = field(default_factory=lambda: HeldOutConfig())
    # In data.corpora: copies of this corpus's training pairs in the mix (0.5 = a fixed half of
    # them, 2.5 = two copies and a fixed half; 0 = validated and tested only).
    weight: float = 1.0

    def corpus_problems(self, group: str, src_lang: str, tgt_lang: str) -> list[str]:
        c = _Checks(group, self)
        c.choice("format", DATA_FORMATS)
        c.at_least(0, "weight")
        if self.format == "tsv":
            for lang in (src_lang, tgt_lang):
                c.require(lang in self.columns, "columns", f"must give the column of {lang!r} (format tsv)")
            c.require(all(v >= 0 for v in self.columns.values()), "columns", "must be 0-based column numbers")
            c.require(len(set(self.columns.values())) == len(self.columns), "columns", "must be distinct")
        else:
            c.require(not self.columns, "columns", "applies to format tsv only")
            c.require(not self.header, "header", "applies to format tsv only")
        held = self.held_out
        h = _Checks(f"{group}.held_out", held)
        h.at_least(0, "valid_sources", "test_sources")
        h.require(held.group_by in ("", src_lang, tgt_lang), "group_by", f"must be {src_lang!r} or {tgt_lang!r}")
        if held.enabled:
            for key in ("valid", "test"):
                c.require(not getattr(self, key), key, f"must be [] when {group}.held_out carves it from train")
        return c.found + h.found


@dataclass
class DataConfig(CorpusConfig):
    """The corpus (or corpora) and what they share: languages, tokenizer, length limit, caches."""

    name: str = MISSING  # multi30k | iwslt16 | iwslt2017 | tatoeba | toy | files; with corpora: the mix's
    src_lang: str = "en"
    tgt_lang: str = "de"
    # Several corpora (name -> its settings; their format, dir, splits, columns, held_out and weight
    # instead of the top level's): one tokenizer, trained on the mix; validated and tested per corpus.
    corpora: dict[str, CorpusConfig] = field(default_factory=dict)
    # Gradual fine-tuning: the last `finish_updates` of train.max_steps updates draw their batches
    # from this corpus of data.corpora alone (the mix before them, so the model ends in its domain);
    # "" = the mix to the end. A time limit (train.max_minutes) that stops training first skips it,
    # unless a linear or cosine train.lr_schedule is fitted to that limit: its end keeps these updates.
    finish_on: str = ""
    finish_updates: int = 0
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
    # Gold word alignments scored (AER) at every validation through the aligning head; "" = none.
    align_gold: GoldConfig = field(default_factory=lambda: GoldConfig())
    # Sentencepiece
    vocab_size: int = 8000
    joint_vocab: bool = True
    spm_model_type: str = "unigram"  # unigram | bpe
    spm_character_coverage: float = 1.0
    spm_input_sentence_size: int = 2_000_000

    def corpus_list(self) -> list[CorpusConfig]:
        """data.corpora, each named by its key; or, without corpora, this config as the one corpus."""
        if not self.corpora:
            return [self]
        return [replace(corpus, name=name) for name, corpus in self.corpora.items()]

    def as_record(self) -> dict[str, Any]:
        """The settings as metrics.json records them and the tokenizer cache key hashes them: the
        keys that came with TSV and several corpora are left out at their defaults (so one-corpus
        runs record, and find their caches, as before them); with data.corpora, the unused top-level
        corpus keys are left out."""
        record = asdict(self)
        unset = asdict(DataConfig(name=self.name))
        for key in ("columns", "strict", "header", "held_out", "weight", "corpora", "finish_on", "finish_updates"):
            if record[key] == unset[key]:
                record.pop(key)
        if self.corpora:
            for key in (f.name for f in fields(CorpusConfig) if f.name != "name"):
                record.pop(key, None)
        return record

    def problems(self) -> list[str]:
        c = _Checks("data", self)
        c.choice("spm_model_type", SPM_MODEL_TYPES)
        c.require(self.src_lang != self.tgt_lang, "tgt_lang", f"must differ from data.src_lang ({self.src_lang!r})")
        c.at_least(1, "extra_train_repeat")
        c.at_least(2, "max_len")
        c.at_least(0, "num_proc")
        c.at_least(8, "vocab_size")  # room for the 4 special pieces and a few more
        c.require(0 < self.spm_character_coverage <= 1, "spm_character_coverage", "must be in (0, 1]")
        c.require(
            bool(self.extra_train_src) == bool(self.extra_train_tgt),
            "extra_train_tgt",
            "and data.extra_train_src go together",
        )
        c.at_least(0, "finish_updates")
        c.require(bool(self.finish_on) == (self.finish_updates > 0), "finish_updates", "and data.finish_on go together")
        c.require(
            not self.finish_on or self.finish_on in self.corpora,
            "finish_on",
            f"must name a corpus of data.corpora ({', '.join(self.corpora) or 'none listed'})",
        )
        found = c.found
        if not self.corpora:
            c.require(self.weight == 1.0, "weight", "applies to data.corpora entries only")
            return found + self.corpus_problems("data", self.src_lang, self.tgt_lang) + self.align_gold.problems()
        unset = CorpusConfig()
        for key in (f.name for f in fields(CorpusConfig) if f.name != "name"):
            c.require(getattr(self, key) == getattr(unset, key), key, "is set per corpus when data.corpora is used")
        for name, corpus in self.corpora.items():
            found += corpus.corpus_problems(f"data.corpora.{name}", self.src_lang, self.tgt_lang)
        return found + self.align_gold.problems()


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
    # The aligning cross-attention (Garg et al. 2019), trained on teacher alignments when
    # train.align_weight > 0: heads 0..align_heads-1 of decoder layer align_layer (None: the
    # penultimate; negative counts from the end). align_full_context: that layer's attention is
    # read from an extra decoder pass without the causal mask (every target word visible).
    # align_null: a target token the teacher leaves unaligned is trained to attend to the source's
    # end-of-sentence token, and a word whose aligning attention peaks there is read as unaligned
    # (the null link a statistical aligner has; without it every target word gets a link).
    align_layer: int | None = None
    align_heads: int = 1
    align_full_context: bool = False
    align_null: bool = False
    # The output layer scores only the pieces that occur in the training targets (and eos, unk);
    # the others are never emitted. With a joint vocabulary many pieces are source-side only: this
    # saves their share of the output layer's matmuls and of the loss (docs/benchmarks.md).
    output_shortlist: bool = False

    def decoder_depth(self) -> int:
        return self.decoder_layers if self.decoder_layers is not None else self.layers

    def aligning_layer(self) -> int:
        """The aligning decoder layer as an index in [0, decoder layers)."""
        depth = self.decoder_depth()
        if self.align_layer is None:
            return max(depth - 2, 0)
        return self.align_layer % depth if -depth <= self.align_layer < depth else self.align_layer

    def problems(self) -> list[str]:
        c = _Checks("model", self)
        c.at_least(1, "d_model", "layers", "encoder_layers", "decoder_layers", "heads", "ffn_dim", "max_positions")
        c.fraction("dropout", "attention_dropout")
        c.choice("activation", ACTIVATIONS)
        c.choice("norm", NORMS)
        c.choice("positions", POSITIONS)
        if self.heads >= 1:
            c.require(self.d_model % self.heads == 0, "d_model", f"must be divisible by model.heads ({self.heads})")
            c.require(1 <= self.align_heads <= self.heads, "align_heads", f"must be in [1, model.heads={self.heads}]")
        depth = self.decoder_depth()
        if depth >= 1 and self.align_layer is not None:
            c.require(-depth <= self.align_layer < depth, "align_layer", f"must be in [{-depth}, {depth - 1}]")
        return c.found


@dataclass
class DecodeConfig:
    beam_size: int = 5
    length_penalty: float = 1.0  # GNMT alpha; 0 = raw log-probability
    max_len_a: float = 1.2  # max output length = a * src_len + b
    max_len_b: int = 10
    n_best: int = 1
    max_tokens: int = 6000  # source tokens per decoding batch (before beam expansion)

    def problems(self) -> list[str]:
        c = _Checks("decode", self)
        c.at_least(1, "beam_size", "max_tokens", "n_best")
        c.at_least(0, "length_penalty", "max_len_a", "max_len_b")
        c.require(
            self.n_best <= max(self.beam_size, 1), "n_best", f"must not exceed decode.beam_size ({self.beam_size})"
        )
        return c.found


@dataclass
class ServeConfig:
    """`python -m mt.serve`: where it listens and what one request may ask for."""

    host: str = "127.0.0.1"  # loopback only unless told otherwise
    port: int = 8000  # 0 = any free port
    max_chars: int = 1000  # characters per text
    max_texts: int = 32  # texts per request
    max_beam: int = 8  # largest beam a request may ask for
    max_body_bytes: int = 1_048_576  # request body size
    queue_size: int = 64  # requests waiting for the decoder; beyond this the answer is 503
    batching: bool = True  # decode requests that arrive together in one batch
    batch_window_ms: float = 5.0  # how long the first request of a batch waits for others
    max_batch_texts: int = 64  # texts per decoding batch (a request is never split)

    def problems(self) -> list[str]:
        c = _Checks("serve", self)
        c.require(bool(self.host.strip()), "host", "must not be empty")
        c.require(0 <= self.port <= 65535, "port", "must be in [0, 65535]")
        c.at_least(1, "max_chars", "max_texts", "max_beam", "max_body_bytes", "queue_size", "max_batch_texts")
        c.require(0 <= self.batch_window_ms <= 1000, "batch_window_ms", "must be in [0, 1000]")
        return c.found


@dataclass
class TrainConfig:
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads; 0 = all cores
    optimizer: str = "adamw"  # adam | adamw
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    warmup_steps: int = 1000
    # After warmup: inverse_sqrt (Noam; independent of the step budget) | linear | cosine (both reach
    # min_lr at train.max_steps, so the run ends annealed; where train.max_minutes will stop training
    # sooner, the end is fitted to it after the first 100 updates, from their speed: mt.train).
    lr_schedule: str = "inverse_sqrt"
    min_lr: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    # Weight of the alignment loss (Garg et al. 2019; 0 = off): the aligning heads (model.align_*)
    # learn eflomal's alignments of the training corpus (mt.align.teacher, cached under data.cache_dir).
    align_weight: float = 0.0
    # The teacher links: grow-diag-final-and of eflomal's two directions (Garg et al.), another
    # symmetrization, or forward: eflomal's source->target links alone, each target word linked to
    # at most one source word (as a decoder head attends). Two models of opposite directions then
    # learn from eflomal's two independent directions, so intersecting their links may filter their
    # errors as intersecting eflomal's does (with grow-diag-final-and both learn nearly the same links).
    align_teacher: str = DEFAULT_ALIGN_TEACHER
    # Samplers averaged in eflomal's teacher run: more give a steadier, better teacher (measured on
    # the Hansards gold, 10 runs each: intersection AER 13.18 +- 0.20 with 3 against 13.60 +- 0.29
    # with 2; docs/alignment.md).
    align_teacher_samplers: int = DEFAULT_ALIGN_TEACHER_SAMPLERS
    # Independent eflomal runs; each direction keeps the links more than half of them drew, then
    # symmetrizes. Measured on the Hansards gold (eflomal's own output, 3 samplers): a vote of 5 runs
    # gives grow-diag-final-and 13.21 against 14.55 for one run (docs/alignment.md).
    align_teacher_runs: int = DEFAULT_ALIGN_TEACHER_RUNS
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
    # Train into a run directory that already holds a run (its checkpoints, metrics and
    # TensorBoard logs are deleted first). Without it such a directory is refused unless resuming.
    overwrite: bool = False

    def problems(self) -> list[str]:
        c = _Checks("train", self)
        c.require(self.lr > 0, "lr", "must be > 0")
        c.at_least(
            0,
            "min_lr",
            "warmup_steps",
            "weight_decay",
            "align_weight",
            "clip_norm",
            "max_steps",
            "max_minutes",
            "eval_every",
            "save_every",
            "patience",
            "average_last",
            "valid_max_sentences",
            "threads",
            "samples",
        )
        c.at_least(1, "max_tokens", "accumulate", "max_epochs", "log_every", "max_bad_steps")
        c.at_least(1, "align_teacher_samplers", "align_teacher_runs")
        c.fraction("label_smoothing")
        c.choice("optimizer", OPTIMIZERS)
        c.choice("precision", PRECISIONS)
        c.choice("lr_schedule", LR_SCHEDULES)
        c.require(
            self.lr_schedule == "inverse_sqrt" or self.max_steps > self.warmup_steps,
            "lr_schedule",
            f"reaches train.min_lr at train.max_steps, so it needs train.max_steps ({self.max_steps}) > "
            f"train.warmup_steps ({self.warmup_steps})",
        )
        c.choice("align_teacher", ALIGN_TEACHERS)
        c.require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "needs two values in [0, 1)")
        c.require(self.lr <= 0 or self.min_lr <= self.lr, "min_lr", f"must not exceed train.lr ({self.lr})")
        c.require(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "device",
            "must be auto, cpu, cuda or cuda:N",
        )
        c.require(not (self.resume and self.overwrite), "overwrite", "cannot be combined with train.resume=true")
        return c.found


@dataclass
class MTConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def problems(self) -> list[str]:
        found = self.data.problems() + self.model.problems() + self.train.problems() + self.decode.problems()
        if self.data.max_len > self.model.max_positions:
            found.append(
                f"data.max_len ({self.data.max_len}) must not exceed model.max_positions ({self.model.max_positions})"
            )
        if self.data.finish_updates and not 0 < self.data.finish_updates < self.train.max_steps:
            found.append(
                f"data.finish_updates ({self.data.finish_updates}) counts the last of train.max_steps updates: "
                f"it needs train.max_steps > {self.data.finish_updates} (it is {self.train.max_steps})"
            )
        if self.model.align_null and self.train.align_weight <= 0:
            found.append("model.align_null trains the aligning heads: it needs train.align_weight > 0")
        teacher_keys = {
            "align_teacher": DEFAULT_ALIGN_TEACHER,
            "align_teacher_samplers": DEFAULT_ALIGN_TEACHER_SAMPLERS,
            "align_teacher_runs": DEFAULT_ALIGN_TEACHER_RUNS,
        }
        for key, default in teacher_keys.items():
            if getattr(self.train, key) != default and self.train.align_weight <= 0:
                found.append(f"train.{key} sets the aligning heads' teacher: it needs train.align_weight > 0")
        return found


def validate(cfg: MTConfig | DataConfig | ModelConfig | TrainConfig | DecodeConfig | ServeConfig):
    """The config itself if every value is in range; else one UserError listing what is wrong."""
    found = list(dict.fromkeys(cfg.problems()))  # a group checked twice (data and its corpus view) says it once
    if found:
        raise UserError("; ".join(found))
    return cfg


def register_configs() -> None:
    """Register the schema so `configs/config.yaml` composes on top of it."""
    cs = ConfigStore.instance()
    cs.store(name="mt_schema", node=MTConfig)


def to_dataclass(cfg: DictConfig) -> MTConfig:
    """Turn a composed DictConfig into plain dataclasses whose values are checked (`validate`)."""
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, MTConfig)
    # Hydra's `+key=value` adds a key even to the schema's nodes, and to_object drops what no
    # dataclass field holds: a misspelt `+train.lrr=0.1` would train with the default lr unsaid.
    unknown = _keys_not_in(OmegaConf.to_container(cfg), asdict(obj))
    if unknown:
        raise UserError(f"unknown config key {', '.join(unknown)}: no such setting (see python -m mt.train --cfg job)")
    return validate(obj)


def _keys_not_in(given: Any, known: Any, prefix: str = "") -> list[str]:
    """Dotted keys of the mapping `given` that `known` lacks, at any depth."""
    if not isinstance(given, dict) or not isinstance(known, dict):
        return []
    found = []
    for key, value in given.items():
        name = f"{prefix}{key}"
        found += [name] if key not in known else _keys_not_in(value, known[key], f"{name}.")
    return found


def data_config_from_record(record: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> DataConfig:
    """The DataConfig that DataConfig.as_record() recorded (in a checkpoint or metrics.json), with
    `data.KEY=VALUE` overrides on top; checked (`validate`)."""
    plain = []
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep or not key.startswith("data.") or key.startswith(("data.+", "data.~")):
            raise UserError(
                f"cannot apply {override!r} to the recorded data config: give data.KEY=VALUE, "
                "or name a corpus config with --data"
            )
        plain.append(override.removeprefix("data."))
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(DataConfig(name=record.get("name", ""))), record, OmegaConf.from_dotlist(plain)
        )
        obj = OmegaConf.to_object(merged)
    except (OmegaConfBaseException, ValueError) as err:
        raise UserError(f"recorded data config: {str(err).strip().splitlines()[0]}") from None
    assert isinstance(obj, DataConfig)
    return validate(obj)


def default_data_dir(name: str) -> Path:
    """Where a corpus lies when data.dir is empty: data/NAME (made by `make data`), else ../shared/data."""
    prepared = PREPARED_DATA / name
    shared_names = {"multi30k": "multi30k", "iwslt16": "iwslt16-de-en", "tatoeba": "tatoeba-en-de"}
    shared = SHARED_DATA / shared_names.get(name, name)
    return prepared if prepared.is_dir() or not shared.is_dir() else shared
