"""Corpora (local text, IWSLT XML, Hugging Face hub): loading, tokenizing, caching as Arrow files.

`python -m mt.data [data=iwslt16]` prints corpus statistics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import zip_longest
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from mt.batching import Split
from mt.config import DataConfig, default_data_dir
from mt.errors import UserError
from mt.fileio import iter_lines, read_lines
from mt.paths import PROJECT_ROOT
from mt.tokenizer import Tokenizer

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
if not sys.stderr.isatty():  # tokenizing a big split shows datasets' progress on a terminal only
    datasets.disable_progress_bars()


# Reading files ---------------------------------------------------------------------------
def corpus_dir(cfg: DataConfig) -> Path:
    """data.dir (a relative path: from the current directory, else from the project, as the
    built-in configs' paths are), or the corpus's default directory."""
    directory = Path(cfg.dir) if cfg.dir else default_data_dir(cfg.name)
    if not directory.is_absolute() and not directory.is_dir() and (PROJECT_ROOT / directory).is_dir():
        directory = PROJECT_ROOT / directory
    if not directory.is_dir():
        raise UserError(f"data directory not found: {directory} (set data.dir=..., or run `make data` to prepare it)")
    return directory


def _text_file(directory: Path, stem: str, lang: str) -> Path:
    for candidate in (directory / f"{stem}.{lang}.gz", directory / f"{stem}.{lang}"):
        if candidate.is_file():
            return candidate
    found = sorted({p.name.split(".")[-2 if p.suffix == ".gz" else -1] for p in directory.glob(f"{stem}.*")})
    if found:
        raise UserError(f"no '{lang}' side for split '{stem}' in {directory} (languages there: {', '.join(found)})")
    raise UserError(f"no files for split '{stem}' in {directory} (expected {stem}.{lang}.gz or {stem}.{lang})")


def _count_mismatch(src_path: Path, n_src: int, tgt_path: Path, n_tgt: int) -> UserError:
    return UserError(f"line counts differ: {src_path} has {n_src} lines, {tgt_path} has {n_tgt}")


def _paired(src_path: Path, tgt_path: Path, src: list[str], tgt: list[str]) -> tuple[list[str], list[str]]:
    if len(src) != len(tgt):
        raise _count_mismatch(src_path, len(src), tgt_path, len(tgt))
    return src, tgt


def _text_pairs(files: list[tuple[str, str, int, int, int, int]]) -> Iterator[dict[str, str]]:
    """Rows {"src", "tgt"} of line-parallel files, streamed. Each entry: two paths, then their
    sizes and modification times, which only make the datasets cache key follow the files."""
    for src_name, tgt_name, *_stamps in files:
        src_path, tgt_path = Path(src_name), Path(tgt_name)
        src_lines, tgt_lines = iter_lines(src_path), iter_lines(tgt_path)
        count = 0
        for s, t in zip_longest(src_lines, tgt_lines):
            if s is None or t is None:
                n_src = count + (s is not None) + sum(1 for _ in src_lines)
                n_tgt = count + (t is not None) + sum(1 for _ in tgt_lines)
                raise _count_mismatch(src_path, n_src, tgt_path, n_tgt)
            count += 1
            yield {"src": s, "tgt": t}


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def load_text_split(cfg: DataConfig, stems: list[str]) -> datasets.Dataset:
    """A text split streamed into an Arrow file under cache_dir/raw (memory-mapped), never a Python list."""
    directory = corpus_dir(cfg)
    files = []
    for stem in stems:
        sp, tp = _text_file(directory, stem, cfg.src_lang), _text_file(directory, stem, cfg.tgt_lang)
        files.append((str(sp), str(tp), *_stamp(sp), *_stamp(tp)))
    if not cfg.cache_dir:
        return datasets.Dataset.from_list(list(_text_pairs(files)))
    try:
        return datasets.Dataset.from_generator(
            _text_pairs,
            gen_kwargs={"files": files},
            cache_dir=str(Path(cfg.cache_dir) / "raw"),
            features=datasets.Features({"src": datasets.Value("string"), "tgt": datasets.Value("string")}),
        )
    except datasets.exceptions.DatasetGenerationError as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise
    except ValueError as err:  # the generator yielded no rows at all
        if "corresponds to no data" not in str(err):
            raise
        return datasets.Dataset.from_dict({"src": [], "tgt": []})


def read_iwslt_xml(path: Path) -> list[tuple[str, str]]:
    """Segments of an IWSLT XML file as (doc id + seg id, text), in file order."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise UserError(f"{path}: not valid XML ({err})") from None
    segments = []
    for doc in root.iter("doc"):
        for seg in doc.iter("seg"):
            segments.append((f"{doc.get('docid')}:{seg.get('id')}", (seg.text or "").strip()))
    return segments


def _iwslt_file(directory: Path, set_name: str, lang: str) -> Path:
    matches = sorted(directory.glob(f"IWSLT*.{set_name}.*.{lang}.xml"))
    if not matches:
        langs = sorted({p.name.split(".")[-2] for p in directory.glob(f"IWSLT*.{set_name}.*.xml")})
        have = f" (languages there: {', '.join(langs)})" if langs else ""
        raise UserError(f"no IWSLT XML file for set '{set_name}', language '{lang}' in {directory}{have}")
    return matches[0]


def load_iwslt_split(directory: Path, sets: list[str], src_lang: str, tgt_lang: str) -> tuple[list[str], list[str]]:
    src_all: list[str] = []
    tgt_all: list[str] = []
    for set_name in sets:
        sp, tp = _iwslt_file(directory, set_name, src_lang), _iwslt_file(directory, set_name, tgt_lang)
        src_segs, tgt_segs = read_iwslt_xml(sp), read_iwslt_xml(tp)
        _paired(sp, tp, src_segs, tgt_segs)
        for (sid, s), (tid, t) in zip(src_segs, tgt_segs):
            if sid != tid:
                raise UserError(f"segment ids differ between {sp.name} ({sid}) and {tp.name} ({tid})")
            src_all.append(s)
            tgt_all.append(t)
    return src_all, tgt_all


def load_hub_split(cfg: DataConfig, split: str) -> tuple[list[str], list[str]]:
    try:
        ds = datasets.load_dataset(cfg.hf_name, cfg.hf_config or None, split=split)
    except (ConnectionError, OSError, ValueError, FileNotFoundError) as err:
        raise UserError(
            f"cannot load Hugging Face dataset '{cfg.hf_name}' ({cfg.hf_config}) split '{split}': "
            f"{str(err).splitlines()[0][:200]}. Offline? Use a local corpus (data=multi30k or data=iwslt16), "
            "or download it once with a network (it is then cached)."
        ) from None
    pairs = ds["translation"]
    for lang in (cfg.src_lang, cfg.tgt_lang):
        if pairs and lang not in pairs[0]:
            raise UserError(f"'{cfg.hf_name}' ({cfg.hf_config}) has no '{lang}' side (it has {', '.join(pairs[0])})")
    return [p[cfg.src_lang] for p in pairs], [p[cfg.tgt_lang] for p in pairs]


def load_split(cfg: DataConfig, split: str) -> datasets.Dataset:
    """One split (train, valid or test) as a Dataset with text columns `src` and `tgt`."""
    if cfg.src_lang == cfg.tgt_lang:
        raise UserError(f"data.src_lang and data.tgt_lang are both '{cfg.src_lang}'")
    names = list(getattr(cfg, split))
    if cfg.format == "text":
        ds = load_text_split(cfg, names)
    elif cfg.format == "iwslt_xml":  # XML dev/test sets: small, parsed whole
        src, tgt = load_iwslt_split(corpus_dir(cfg), names, cfg.src_lang, cfg.tgt_lang)
        ds = datasets.Dataset.from_dict({"src": src, "tgt": tgt})
    elif cfg.format == "hf_hub":
        src, tgt = [], []
        for name in names:
            s, t = load_hub_split(cfg, name)
            src += s
            tgt += t
        ds = datasets.Dataset.from_dict({"src": src, "tgt": tgt})
    else:
        raise UserError(f"data.format must be text, iwslt_xml or hf_hub, not '{cfg.format}'")
    if split == "train" and cfg.extra_train_src:
        es, et = Path(cfg.extra_train_src), Path(cfg.extra_train_tgt)
        for p in (es, et):
            if not p.is_file():
                raise UserError(f"extra training file not found: {p}")
        extra_src, extra_tgt = _paired(es, et, read_lines(es), read_lines(et))
        extra = datasets.Dataset.from_dict(
            {"src": extra_src * cfg.extra_train_repeat, "tgt": extra_tgt * cfg.extra_train_repeat}
        )
        ds = datasets.concatenate_datasets([ds, extra])
    if len(ds) == 0:
        raise UserError(f"the {split} split of data={cfg.name} is empty ({names})")
    return ds


def load_raw(cfg: DataConfig) -> datasets.DatasetDict:
    """The three splits as a DatasetDict with text columns `src` and `tgt`."""
    return datasets.DatasetDict({split: load_split(cfg, split) for split in SPLITS})


# Tokenizer cache -------------------------------------------------------------------------
def tokenizer_key(cfg: DataConfig) -> str:
    """Hash of everything that determines the tokenizer: sweep jobs on the same data share it."""
    fields = asdict(cfg)
    fields.pop("max_len")
    fields.pop("cache_dir")
    fields.pop("align_gold")  # scored at validation, never seen by the tokenizer
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return f"{cfg.name}-{cfg.src_lang}-{cfg.tgt_lang}-{digest}"


def get_tokenizer(cfg: DataConfig, train: datasets.Dataset) -> Tokenizer:
    """Train sentencepiece on the training split, or reuse the cached one for this data config."""
    cache = Path(cfg.cache_dir) / "spm" / tokenizer_key(cfg)
    tokenizer = Tokenizer.load(cache)
    if tokenizer is not None:
        log.info("tokenizer: reusing %s", cache)
        return tokenizer
    log.info(
        "tokenizer: training sentencepiece (%s, vocab %d, joint=%s)",
        cfg.spm_model_type,
        cfg.vocab_size,
        cfg.joint_vocab,
    )
    if len(train) > cfg.spm_input_sentence_size:  # sentencepiece would sample anyway: read only a sample
        rows = np.random.default_rng(0).choice(len(train), cfg.spm_input_sentence_size, replace=False)
        train = train.select(np.sort(rows))
    src = [s for s in train["src"] if s.strip()]
    tgt = [t for t in train["tgt"] if t.strip()]
    tokenizer = Tokenizer.train(src, tgt, cfg)
    tokenizer.save(cache)
    return tokenizer


# Encoded splits and batches ---------------------------------------------------------------
class TokenColumn(Sequence):
    """The token ids of one split's side, read from an Arrow list<int32> column without copying.

    The Arrow cache file is memory-mapped, so a corpus of millions of pairs costs page cache,
    not Python objects: a row becomes a list only when a batch asks for it. `rows` selects
    (and orders) rows, e.g. the training pairs that survived filtering.
    """

    def __init__(self, chunks: list[tuple[np.ndarray, np.ndarray]], rows: np.ndarray | None = None):
        self._chunks = chunks  # (values, offsets into values) per Arrow chunk
        self._first = np.cumsum([0] + [len(offsets) - 1 for _, offsets in chunks])  # first row of each chunk
        self._rows = rows

    @classmethod
    def from_arrow(cls, column: pa.ChunkedArray, rows: np.ndarray | None = None) -> TokenColumn:
        chunks = [(chunk.values.to_numpy(), chunk.offsets.to_numpy()) for chunk in column.chunks]
        return cls(chunks, rows)

    @classmethod
    def from_lists(cls, seqs: list[list[int]]) -> TokenColumn:
        return cls.from_arrow(pa.chunked_array([pa.array(seqs, type=pa.list_(pa.int32()))]))

    def __len__(self) -> int:
        return int(self._first[-1]) if self._rows is None else len(self._rows)

    def _row(self, i: int) -> list[int]:
        chunk = int(np.searchsorted(self._first, i, side="right")) - 1
        values, offsets = self._chunks[chunk]
        j = i - int(self._first[chunk])
        return values[offsets[j] : offsets[j + 1]].tolist()

    def select(self, rows: np.ndarray) -> TokenColumn:
        """These rows (positions in this column), in this order; no ids are copied."""
        return TokenColumn(self._chunks, rows if self._rows is None else self._rows[rows])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.select(np.arange(len(self))[index])
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._row(int(index) if self._rows is None else int(self._rows[index]))

    def lengths(self) -> np.ndarray:
        """Number of ids per row (vectorized: no row is materialized)."""
        if not self._chunks:
            return np.zeros(0, dtype=np.int64)
        every = np.concatenate([np.diff(offsets) for _, offsets in self._chunks]).astype(np.int64)
        return every if self._rows is None else every[self._rows]


@dataclass
class FilterReport:
    kept: int
    empty: int
    too_long: int


class _Encoder:
    """The map function that tokenizes a batch; picklable (holds the models' bytes) for num_proc."""

    def __init__(self, tokenizer: Tokenizer, max_len: int, truncate: bool):
        self.protos = (tokenizer.src_proto, tokenizer.tgt_proto)
        self.limit = max_len - 1 if truncate else None
        self._tokenizer: Tokenizer | None = tokenizer

    def __getstate__(self) -> dict:
        return {"protos": self.protos, "limit": self.limit}

    def __setstate__(self, state: dict) -> None:
        self.protos, self.limit, self._tokenizer = state["protos"], state["limit"], None

    def __call__(self, batch: dict) -> dict:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(*self.protos)
        src, tgt = self._tokenizer.encode_src(batch["src"]), self._tokenizer.encode_tgt(batch["tgt"])
        if self.limit is not None:  # evaluation lines are never dropped, only cut to the model's positions
            src, tgt = [s[: self.limit] for s in src], [t[: self.limit] for t in tgt]
        return {"src_ids": src, "tgt_ids": tgt}


def encoded_cache_file(cfg: DataConfig, ds: datasets.Dataset, tokenizer: Tokenizer, split: str) -> Path:
    """Where a split's token ids are cached: keyed by the text's content, the tokenizer and max_len."""
    # `_fingerprint` is datasets' hash of the table's content: an edited corpus gets a new cache.
    digest = hashlib.sha256(f"{ds._fingerprint}|{split}|{cfg.max_len}".encode())
    digest.update(tokenizer.src_proto)
    digest.update(tokenizer.tgt_proto or b"")
    name = f"{cfg.name}-{cfg.src_lang}-{cfg.tgt_lang}-{split}-{digest.hexdigest()[:16]}.arrow"
    return Path(cfg.cache_dir) / "encoded" / name


def _num_proc(cfg: DataConfig, rows: int) -> int | None:
    if cfg.num_proc > 0:
        return cfg.num_proc if cfg.num_proc > 1 else None
    return min(os.cpu_count() or 1, 16) if rows >= 100_000 else None


def encode_split(
    ds: datasets.Dataset, tokenizer: Tokenizer, cfg: DataConfig, split: str, cache_file: Path | None = None
) -> tuple[Split, FilterReport]:
    """Tokenize a split (or reuse its Arrow cache); training drops empty and over-long pairs.

    Token ids stay in the memory-mapped Arrow file (TokenColumn); the training split's text
    stays there too. Evaluation splits keep every line (their text is the reference).
    """
    train = split == "train"
    num_proc = _num_proc(cfg, len(ds))
    try:
        enc = ds.map(
            _Encoder(tokenizer, cfg.max_len, truncate=not train),
            batched=True,
            batch_size=2000,
            num_proc=num_proc,
            cache_file_name=str(cache_file) if cache_file else None,
            new_fingerprint=cache_file.stem if cache_file else None,
            load_from_cache_file=True,
            keep_in_memory=cache_file is None,
        )
    except OSError as err:
        raise UserError(f"cannot write the token cache {cache_file}: {err.strerror or err}") from None
    src_ids = TokenColumn.from_arrow(enc.data.column("src_ids"))
    tgt_ids = TokenColumn.from_arrow(enc.data.column("tgt_ids"))
    src_len, tgt_len = src_ids.lengths(), tgt_ids.lengths()
    if not train:
        return Split(list(enc["src"]), list(enc["tgt"]), src_ids, tgt_ids), FilterReport(len(enc), 0, 0)
    empty = (src_len == 0) | (tgt_len == 0)
    too_long = ~empty & ((src_len + 1 > cfg.max_len) | (tgt_len + 1 > cfg.max_len))
    keep = np.flatnonzero(~empty & ~too_long)
    if len(keep) < len(enc):
        enc, src_ids, tgt_ids = enc.select(keep), src_ids.select(keep), tgt_ids.select(keep)
    # Text columns stay lazy (read from the Arrow file on demand): only the ids feed training.
    report = FilterReport(len(keep), int(empty.sum()), int(too_long.sum()))
    return Split(enc["src"], enc["tgt"], src_ids, tgt_ids), report


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    splits: dict[str, Split]
    reports: dict[str, FilterReport]


def prepare(cfg: DataConfig, tokenizer: Tokenizer | None = None) -> PreparedData:
    """Load, tokenize (training a tokenizer unless one is given) and filter all splits."""
    raw = load_raw(cfg)
    if tokenizer is None:
        tokenizer = get_tokenizer(cfg, raw["train"])
    splits, reports = {}, {}
    for name in SPLITS:
        cache = encoded_cache_file(cfg, raw[name], tokenizer, name) if cfg.cache_dir else None
        splits[name], reports[name] = encode_split(raw[name], tokenizer, cfg, name, cache)
    if len(splits["train"]) == 0:
        raise UserError("no training pairs left after filtering empty and over-long lines")
    return PreparedData(tokenizer, splits, reports)


if __name__ == "__main__":  # python -m mt.data: corpus statistics (mt/data_stats.py)
    from mt.data_stats import main

    main()
