"""Corpora (local text, TSV, IWSLT XML, Hugging Face hub): loading, held-out splits, mixing several
corpora, tokenizing, caching as Arrow files.

`python -m mt.data [data=iwslt16]` prints corpus statistics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mt.batching import Split
from mt.config import CorpusConfig, DataConfig, HeldOutConfig, default_data_dir
from mt.errors import UserError
from mt.fileio import iter_lines, read_lines
from mt.paths import PROJECT_ROOT
from mt.tokenizer import Tokenizer

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
if not sys.stderr.isatty():  # tokenizing a big split shows datasets' progress on a terminal only
    datasets.disable_progress_bars()


# Reading files ---------------------------------------------------------------------------
def corpus_dir(cfg: CorpusConfig) -> Path:
    """data.dir (a relative path: from the current directory, else from the project, as the
    built-in configs' paths are), or the corpus's default directory."""
    directory = Path(cfg.dir) if cfg.dir else default_data_dir(cfg.name)
    if not directory.is_absolute() and not directory.is_dir() and (PROJECT_ROOT / directory).is_dir():
        directory = PROJECT_ROOT / directory
    if not directory.is_dir():
        raise UserError(
            f"data directory not found: {directory} (set data.dir=..., or data.corpora.NAME.dir=... for a corpus"
            " of a mix; `make data` prepares Multi30k in data/multi30k)"
        )
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


def _arrow_from_rows(
    cfg: DataConfig, rows, gen_kwargs: dict, features: datasets.Features, in_memory: bool
) -> datasets.Dataset:
    """Rows of a generator streamed into an Arrow file under cache_dir/raw (memory-mapped), keyed by
    the generator and its arguments; in memory without a cache_dir."""
    if in_memory:
        return datasets.Dataset.from_list(list(rows(**gen_kwargs)), features=features)
    try:
        return datasets.Dataset.from_generator(
            rows, gen_kwargs=gen_kwargs, cache_dir=str(Path(cfg.cache_dir) / "raw"), features=features
        )
    except datasets.exceptions.DatasetGenerationError as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise
    except ValueError as err:  # the generator yielded no rows at all
        if "corresponds to no data" not in str(err):
            raise
        return datasets.Dataset.from_dict({name: [] for name in features}, features=features)


def load_text_split(cfg: DataConfig, stems: list[str], corpus: CorpusConfig | None = None) -> datasets.Dataset:
    """A text split streamed into an Arrow file under cache_dir/raw (memory-mapped), never a Python list."""
    directory = corpus_dir(corpus or cfg)
    files = []
    for stem in stems:
        sp, tp = _text_file(directory, stem, cfg.src_lang), _text_file(directory, stem, cfg.tgt_lang)
        files.append((str(sp), str(tp), *_stamp(sp), *_stamp(tp)))
    if not cfg.cache_dir:
        return datasets.Dataset.from_list(list(_text_pairs(files)))
    return _arrow_from_rows(cfg, _text_pairs, {"files": files}, PAIR_FEATURES, in_memory=False)


PAIR_FEATURES = datasets.Features({"src": datasets.Value("string"), "tgt": datasets.Value("string")})


# Tab-separated pairs (format: tsv) -----------------------------------------------------------
TSV_FEATURES = datasets.Features({**PAIR_FEATURES, "bad": datasets.Value("string")})


def _tsv_file(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.tsv.gz", directory / f"{stem}.tsv"):
        if candidate.is_file():
            return candidate
    raise UserError(f"no file for split '{stem}' in {directory} (expected {stem}.tsv.gz or {stem}.tsv)")


def _tsv_rows(
    files: list[tuple[str, int, int]],
    columns: tuple[int, int],
    langs: tuple[str, str],
    strict: bool,
    header: bool,
    setting: str = "data.strict",
) -> Iterator[dict[str, str]]:
    """Rows {"src", "tgt", "bad"} of tab-separated files; `bad` is "" or "file:line: what is wrong".

    A line is bad if it has another number of columns than the file's (a stray tab shifts the
    columns), or an empty side. The file's number of columns: that of its header line with
    `header` (the line is skipped), else the most common one among its lines (a first pass over
    the file), so one odd line anywhere, the first included, is the only bad one. A file whose
    lines have fewer columns than `columns` (source, target) needs is an error. Strict: the first
    bad line is a UserError that names the `setting` (data.strict, or data.corpora.NAME.strict).
    Each entry of `files`: the path, then its size and modification time, which only make the
    datasets cache key follow the file.
    """
    need = max(columns) + 1
    for name, *_stamps in files:
        path = Path(name)
        expected = _tsv_width(path, header)
        if expected is not None and expected < need:
            what = "its header line has" if header else "most of its lines have"
            raise UserError(
                f"{path}: {what} {expected} tab-separated columns; data.columns names column {need - 1} (0-based)"
            )
        for number, line in enumerate(iter_lines(path), start=1):
            if header and number == 1:
                continue
            cells = line.split("\t")
            problem = ""
            if len(cells) != expected:
                problem = f"wrong number of columns: {len(cells)}, expected {expected}"
            else:
                empty = [lang for lang, col in zip(langs, columns) if not cells[col].strip()]
                problem = f"empty {' and '.join(empty)} side" if empty else ""
            if problem and strict:
                raise UserError(f"{path}:{number}: {problem} ({setting}=true; false skips and counts bad lines)")
            src, tgt = (cells[columns[0]], cells[columns[1]]) if not problem else ("", "")
            yield {"src": src, "tgt": tgt, "bad": f"{path.name}:{number}: {problem}" if problem else ""}


def _tsv_width(path: Path, header: bool) -> int | None:
    """The number of columns of a TSV file: its header line's, else the most common (ties: the
    widest); None for an empty file."""
    if header:
        lines = iter_lines(path)
        first = next(lines, None)
        lines.close()
        return None if first is None else first.count("\t") + 1
    widths = Counter(line.count("\t") + 1 for line in iter_lines(path))
    return max(widths, key=lambda width: (widths[width], width)) if widths else None


def load_tsv_split(cfg: DataConfig, corpus: CorpusConfig, stems: list[str]) -> datasets.Dataset:
    """Pairs of tab-separated files ({stem}.tsv[.gz]): the columns of data.src_lang and data.tgt_lang;
    bad lines are skipped and counted in one log line (or, with strict: true, an error naming file:line)."""
    directory = corpus_dir(corpus)
    files = [(str(path), *_stamp(path)) for path in (_tsv_file(directory, stem) for stem in stems)]
    columns = (corpus.columns[cfg.src_lang], corpus.columns[cfg.tgt_lang])  # tuples: `files` is the only list
    langs = (cfg.src_lang, cfg.tgt_lang)
    setting = "data.strict" if corpus is cfg else f"data.corpora.{corpus.name}.strict"
    gen_kwargs = {"files": files, "columns": columns, "langs": langs, "strict": corpus.strict, "header": corpus.header}
    gen_kwargs["setting"] = setting
    ds = _arrow_from_rows(cfg, _tsv_rows, gen_kwargs, TSV_FEATURES, in_memory=not cfg.cache_dir)
    bad = pc.not_equal(ds.data.column("bad"), "")
    n_bad = pc.sum(bad).as_py() or 0
    if n_bad:
        problems = pc.filter(ds.data.column("bad"), bad).to_pylist()
        empty = sum("empty" in p for p in problems)
        log.warning(
            f"{corpus.name}: skipped {n_bad} bad lines of {', '.join(Path(f[0]).name for f in files)} "
            f"({n_bad - empty} with a wrong number of columns, {empty} with an empty side; first: {problems[0]})"
        )
        ds = ds.select(np.flatnonzero(~bad.to_numpy(zero_copy_only=False)))
    return ds.remove_columns("bad")


# Held-out splits of a corpus that ships as one file -------------------------------------------
# Named in the tokenizer cache key of configs with held-out splits: changing how they are carved
# out changes the training pairs, so a tokenizer trained on the old ones is not reused.
HELD_OUT_METHOD = "pair-graph components"


def sentence_keys(sentences: Sequence[str], seed: int) -> np.ndarray:
    """A 64-bit hash per sentence (whitespace at the ends ignored), salted with `seed`."""
    salt = str(seed).encode()
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(s.strip().encode(), digest_size=8, key=salt).digest(), "little")
            for s in sentences
        ),
        dtype=np.uint64,
        count=len(sentences),
    )


def pair_components(src: Sequence[str], tgt: Sequence[str]) -> tuple[np.ndarray, list[list[str]], list[list[str]]]:
    """Connected components of the bipartite graph whose nodes are the distinct sentences of each
    language (whitespace at the ends ignored) and whose edges are the pairs (union-find).

    Returns the component of each row (0..n-1, in order of first appearance) and, per component,
    its distinct source sentences and its distinct target sentences. Two pairs that share a
    sentence of either language are in the same component, and so are all pairs linked by a chain
    of such pairs (English A - German X - English B - German Y ...)."""
    src_ids: dict[str, int] = {}
    tgt_ids: dict[str, int] = {}
    rows = [
        (src_ids.setdefault(s.strip(), len(src_ids)), tgt_ids.setdefault(t.strip(), len(tgt_ids)))
        for s, t in zip(src, tgt)
    ]
    offset = len(src_ids)
    parent = list(range(offset + len(tgt_ids)))

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for s, t in rows:
        a, b = find(s), find(offset + t)
        if a != b:
            parent[max(a, b)] = min(a, b)
    number: dict[int, int] = {}
    row_component = np.fromiter(
        (number.setdefault(find(s), len(number)) for s, _ in rows), dtype=np.int64, count=len(rows)
    )
    sources: list[list[str]] = [[] for _ in number]
    targets: list[list[str]] = [[] for _ in number]
    for sentence, i in src_ids.items():
        sources[number[find(i)]].append(sentence)
    for sentence, i in tgt_ids.items():
        targets[number[find(offset + i)]].append(sentence)
    return row_component, sources, targets


def held_out_rows(
    src: Sequence[str],
    tgt: Sequence[str],
    valid_sources: int,
    test_sources: int,
    seed: int = 0,
    langs: tuple[str, str] = ("src", "tgt"),
    count: str = "src",
) -> dict[str, np.ndarray]:
    """Row positions of train, valid and test of the pairs (src[i], tgt[i]).

    Grouped by connected component of the pair graph (pair_components): a sentence of either
    language is in one split only, with every pair it is in, so no valid or test sentence (source
    or target) occurs in training. Components are ordered by a hash (salted with `seed`) of their
    smallest member, a sentence tagged with its language (`langs`: the language names, so that the
    two directions of a corpus get the same split); in that order, each component goes to valid
    if its distinct `count`-side sentences ("src" or "tgt") still fit into valid's remaining
    `valid_sources`, else to test if they fit into test's remaining `test_sources`, else to
    training, until both are full: valid and test hold exactly that many distinct sentences of
    the `count` side. Depends on the set of pairs only, not on the order of the lines."""
    row_component, sources, targets = pair_components(src, tgt)
    counted = sources if count == "src" else targets
    smallest = [
        min([f"{langs[0]}\t{s}" for s in ss] + [f"{langs[1]}\t{t}" for t in ts]) for ss, ts in zip(sources, targets)
    ]
    keys = sentence_keys(smallest, seed)
    order = sorted(range(len(smallest)), key=lambda c: (int(keys[c]), smallest[c]))
    total = sum(len(c) for c in counted)
    if valid_sources + test_sources >= total:
        raise UserError(
            f"cannot hold out {valid_sources} + {test_sources} sentences: the corpus has only "
            f"{total} distinct ones (lower held_out.valid_sources/test_sources)"
        )
    split_of = np.zeros(len(smallest), dtype=np.int8)  # 0 train, 1 valid, 2 test
    left = [valid_sources, test_sources]
    for c in order:
        if left == [0, 0]:
            break
        n = len(counted[c])
        for which in (0, 1):
            if n <= left[which]:
                split_of[c], left[which] = which + 1, left[which] - n
                break
    if left != [0, 0]:
        raise UserError(
            f"cannot hold out exactly {valid_sources} + {test_sources} sentences in whole groups of linked "
            f"translations (short by {left[0]} + {left[1]}; lower held_out.valid_sources/test_sources)"
        )
    row_split = split_of[row_component]
    return {name: np.flatnonzero(row_split == i) for i, name in enumerate(SPLITS)}


def hold_out(
    ds: datasets.Dataset, held: HeldOutConfig, langs: tuple[str, str], count: str
) -> dict[str, datasets.Dataset]:
    """train/valid/test of one dataset (columns src, tgt in the languages `langs`): held_out_rows,
    counting distinct sentences of the `count` column."""
    rows = held_out_rows(ds["src"], ds["tgt"], held.valid_sources, held.test_sources, held.seed, langs, count)
    return {split: ds.select(positions) for split, positions in rows.items()}


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


# Talk metadata lines of an IWSLT release's train.tags files; <title> and <description> lines are
# translated text and kept without their tags (as fairseq's prepare-iwslt14.sh does).
IWSLT_METADATA = ("<url>", "<keywords>", "<speaker>", "<talkid>", "<reviewer", "<translator", "<doc", "</doc>")
IWSLT_TEXT_TAGS = ("<title>", "</title>", "<description>", "</description>")
IWSLT_TRAIN = "train"  # the set name that reads train.tags.PAIR.LANG (the release's training talks)


def read_iwslt_tags(path: Path) -> list[str]:
    """The text lines of an IWSLT release's train.tags.PAIR.LANG file, metadata lines dropped."""
    lines = []
    for line in iter_lines(path):
        text = line.strip()
        if text.startswith(IWSLT_METADATA):
            continue
        for tag in IWSLT_TEXT_TAGS:
            text = text.replace(tag, "")
        lines.append(text.strip())
    return lines


def _iwslt_file(directory: Path, set_name: str, lang: str) -> Path:
    if set_name == IWSLT_TRAIN:
        found = sorted(directory.glob(f"train.tags.*.{lang}"))
        if not found:
            raise UserError(
                f"no train.tags.*.{lang} in {directory}: set '{IWSLT_TRAIN}' reads the training talks of a full "
                "IWSLT release (e.g. de-en.tgz of IWSLT 2016/2017); the offline shared data has only dev/test sets"
            )
        return found[0]
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
        if set_name == IWSLT_TRAIN:  # line-parallel text, no segment ids
            src, tgt = _paired(sp, tp, read_iwslt_tags(sp), read_iwslt_tags(tp))
            src_all += src
            tgt_all += tgt
            continue
        src_segs, tgt_segs = read_iwslt_xml(sp), read_iwslt_xml(tp)
        _paired(sp, tp, src_segs, tgt_segs)
        for (sid, s), (tid, t) in zip(src_segs, tgt_segs):
            if sid != tid:
                raise UserError(f"segment ids differ between {sp.name} ({sid}) and {tp.name} ({tid})")
            src_all.append(s)
            tgt_all.append(t)
    return src_all, tgt_all


def load_hub_split(cfg: DataConfig, split: str, corpus: CorpusConfig | None = None) -> tuple[list[str], list[str]]:
    corpus = corpus or cfg
    try:
        ds = datasets.load_dataset(corpus.hf_name, corpus.hf_config or None, split=split)
    except RuntimeError as err:  # datasets >= 4 refuses hub datasets that are loading scripts
        raise UserError(
            f"cannot load Hugging Face dataset '{corpus.hf_name}' ({corpus.hf_config}): "
            f"{str(err).splitlines()[0][:200]}. For IWSLT, download the official release and read its files: "
            "data=iwslt16 data.dir=DIR 'data.train=[train]' (README, IWSLT)."
        ) from None
    except (ConnectionError, OSError, ValueError, FileNotFoundError) as err:
        raise UserError(
            f"cannot load Hugging Face dataset '{corpus.hf_name}' ({corpus.hf_config}) split '{split}': "
            f"{str(err).splitlines()[0][:200]}. Offline? Use a local corpus (data=multi30k or data=iwslt16), "
            "or download it once with a network (it is then cached)."
        ) from None
    pairs = ds["translation"]
    for lang in (cfg.src_lang, cfg.tgt_lang):
        if pairs and lang not in pairs[0]:
            raise UserError(
                f"'{corpus.hf_name}' ({corpus.hf_config}) has no '{lang}' side (it has {', '.join(pairs[0])})"
            )
    return [p[cfg.src_lang] for p in pairs], [p[cfg.tgt_lang] for p in pairs]


def _read_files(cfg: DataConfig, corpus: CorpusConfig, names: list[str]) -> datasets.Dataset:
    """The pairs of the files (or sets, or hub splits) `names` of one corpus, in its format."""
    if corpus.format == "text":
        return load_text_split(cfg, names, corpus)
    if corpus.format == "tsv":
        return load_tsv_split(cfg, corpus, names)
    if corpus.format == "iwslt_xml":  # XML dev/test sets and train.tags: at most ~200k lines, read whole
        src, tgt = load_iwslt_split(corpus_dir(corpus), names, cfg.src_lang, cfg.tgt_lang)
        return datasets.Dataset.from_dict({"src": src, "tgt": tgt})
    if corpus.format == "hf_hub":
        src, tgt = [], []
        for name in names:
            s, t = load_hub_split(cfg, name, corpus)
            src += s
            tgt += t
        return datasets.Dataset.from_dict({"src": src, "tgt": tgt})
    raise UserError(f"data.format must be text, tsv, iwslt_xml or hf_hub, not '{corpus.format}'")


def load_corpus(cfg: DataConfig, corpus: CorpusConfig, splits: tuple[str, ...] = SPLITS) -> dict[str, datasets.Dataset]:
    """One corpus's train, valid and test pairs (text columns `src` and `tgt`; `splits` of them),
    without extra pairs."""
    if cfg.src_lang == cfg.tgt_lang:
        raise UserError(f"data.src_lang and data.tgt_lang are both '{cfg.src_lang}'")
    if corpus.held_out.enabled:  # every split comes from the training files
        count = "tgt" if corpus.held_out.group_by == cfg.tgt_lang else "src"
        langs = (cfg.src_lang, cfg.tgt_lang)
        whole = hold_out(_read_files(cfg, corpus, list(corpus.train)), corpus.held_out, langs, count)
        parts = {split: whole[split] for split in splits}
    else:
        parts = {split: _read_files(cfg, corpus, list(getattr(corpus, split))) for split in splits}
    where = f"data={cfg.name}" if corpus is cfg else f"data.corpora.{corpus.name}"
    for split, ds in parts.items():
        if len(ds) == 0 and not (split == "train" and cfg.extra_train_src):
            names = corpus.train if corpus.held_out.enabled else getattr(corpus, split)
            raise UserError(f"the {split} split of {where} is empty ({list(names)})")
    return parts


MIX_SOURCE_COLUMN = "corpus"  # the training mix's column: index in data.corpora of each pair's corpus (-1: extra)


def mix_rows(n: int, weight: float) -> np.ndarray:
    """Rows of a corpus of n training pairs in the mix: floor(weight) copies of every row, then a
    fixed sample (seeded, in corpus order) of round(fraction * n) rows for the fractional part."""
    whole, fraction = int(weight), weight - int(weight)
    sample = np.sort(np.random.default_rng(0).choice(n, round(fraction * n), replace=False))
    return np.concatenate([np.tile(np.arange(n), whole), sample]).astype(np.int64)


def training_mix(cfg: DataConfig, trains: list[tuple[CorpusConfig, datasets.Dataset]]) -> datasets.Dataset:
    """The training split: the one corpus's pairs, or each corpus's repeated by its weight (in the
    order of data.corpora), then data.extra_train_* pairs."""
    if not cfg.corpora:
        ds = trains[0][1]
    else:
        parts, counts = [], []
        for index, (corpus, train) in enumerate(trains):
            part = train if corpus.weight == 1 else train.select(mix_rows(len(train), corpus.weight))
            # Which corpus each pair came from survives filtering (data.finish_on trains on one alone).
            parts.append(part.add_column(MIX_SOURCE_COLUMN, np.full(len(part), index, dtype=np.int16)))
            counts.append(f"{corpus.name} {len(train):,} x {corpus.weight:g} = {len(part):,}")
        ds = datasets.concatenate_datasets(parts)
        log.info(f"training mix: {'; '.join(counts)} -> {len(ds):,} pairs")
    if cfg.extra_train_src:
        es, et = Path(cfg.extra_train_src), Path(cfg.extra_train_tgt)
        for p in (es, et):
            if not p.is_file():
                raise UserError(f"extra training file not found: {p}")
        extra_src, extra_tgt = _paired(es, et, read_lines(es), read_lines(et))
        columns = {"src": extra_src * cfg.extra_train_repeat, "tgt": extra_tgt * cfg.extra_train_repeat}
        if MIX_SOURCE_COLUMN in ds.column_names:  # from no corpus of the mix
            columns[MIX_SOURCE_COLUMN] = np.full(len(columns["src"]), -1, dtype=np.int16)
        extra = datasets.Dataset.from_dict(columns, features=ds.features)
        ds = datasets.concatenate_datasets([ds, extra])
    if len(ds) == 0:
        raise UserError(f"the train split of data={cfg.name} is empty")
    return ds


def pick_corpus(cfg: DataConfig, name: str = "") -> CorpusConfig:
    """The corpus called `name` in data.corpora (or the one corpus; "" = the first)."""
    corpora = cfg.corpus_list()
    if not name:
        return corpora[0]
    for corpus in corpora:
        if corpus.name == name:
            return corpus
    raise UserError(f"no corpus '{name}' in data={cfg.name} (it has {', '.join(c.name for c in corpora)})")


def load_split(cfg: DataConfig, split: str, corpus: str = "") -> datasets.Dataset:
    """One split (train, valid or test) of one corpus (`corpus`, "" = the first) as a Dataset with
    text columns `src` and `tgt`; the training split of a one-corpus config with data.extra_train_*."""
    chosen = pick_corpus(cfg, corpus)
    ds = load_corpus(cfg, chosen, (split,))[split]
    return training_mix(cfg, [(chosen, ds)]) if split == "train" and not cfg.corpora else ds


def load_raw(cfg: DataConfig) -> datasets.DatasetDict:
    """The three splits of a one-corpus config as a DatasetDict with text columns `src` and `tgt`."""
    if cfg.corpora:
        raise ValueError("load_raw reads a one-corpus config; several corpora: load_corpus and training_mix")
    parts = load_corpus(cfg, cfg)
    return datasets.DatasetDict({**parts, "train": training_mix(cfg, [(cfg, parts["train"])])})


# Tokenizer cache -------------------------------------------------------------------------
def tokenizer_key(cfg: DataConfig) -> str:
    """Hash of everything that determines the tokenizer: sweep jobs on the same data share it."""
    fields = cfg.as_record()
    fields.pop("max_len")
    fields.pop("cache_dir")
    fields.pop("align_gold")  # scored at validation, never seen by the tokenizer
    fields.pop("finish_on", None)  # when a corpus trains alone, not what the tokenizer reads
    fields.pop("finish_updates", None)
    if any(corpus.held_out.enabled for corpus in cfg.corpus_list()):
        fields["held_out_method"] = HELD_OUT_METHOD  # a new way of splitting: other training pairs
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return f"{cfg.name}-{cfg.src_lang}-{cfg.tgt_lang}-{digest}"


def get_tokenizer(cfg: DataConfig, train: datasets.Dataset) -> Tokenizer:
    """Train sentencepiece on the training split, or reuse the cached one for this data config."""
    cache = Path(cfg.cache_dir) / "spm" / tokenizer_key(cfg) if cfg.cache_dir else None
    tokenizer = Tokenizer.load(cache) if cache else None
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
    if cache:
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

    def id_counts(self, size: int) -> np.ndarray:
        """How often each id in [0, size) occurs in the selected rows (a row selected twice counts twice)."""
        counts = np.zeros(size, dtype=np.int64)
        for c, (values, offsets) in enumerate(self._chunks):
            ids = values[offsets[0] : offsets[-1]]  # a sliced Arrow chunk's values can hold more
            if self._rows is None:
                counts += np.bincount(ids, minlength=size)[:size]
                continue
            first, n = int(self._first[c]), len(offsets) - 1
            local = self._rows[(self._rows >= first) & (self._rows < first + n)] - first
            times = np.repeat(np.bincount(local, minlength=n), np.diff(offsets))  # per id: its row's selections
            counts += np.bincount(ids, weights=times, minlength=size)[:size].astype(np.int64)
        return counts

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
    source = enc.data.column(MIX_SOURCE_COLUMN).to_numpy()[keep] if MIX_SOURCE_COLUMN in enc.column_names else None
    if len(keep) < len(enc):
        enc, src_ids, tgt_ids = enc.select(keep), src_ids.select(keep), tgt_ids.select(keep)
    # Text columns stay lazy (read from the Arrow file on demand): only the ids feed training.
    report = FilterReport(len(keep), int(empty.sum()), int(too_long.sum()))
    return Split(enc["src"], enc["tgt"], src_ids, tgt_ids, source=source), report


def held_out_key(corpus: str, split: str, single: bool) -> str:
    """PreparedData.splits' key of a corpus's valid or test split: `valid`, or `NAME.valid` of data.corpora."""
    return split if single else f"{corpus}.{split}"


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    splits: dict[str, Split]  # train, and each corpus's valid and test (keys: held_out_key)
    reports: dict[str, FilterReport]  # the same keys
    corpora: list[str]  # corpus names, in data.corpora's order (the data config's name for one corpus)

    def held_out(self, split: str) -> dict[str, Split]:
        """The valid (or test) split of every corpus, by corpus name."""
        return {name: self.splits[held_out_key(name, split, split in self.splits)] for name in self.corpora}


def prepare(cfg: DataConfig, tokenizer: Tokenizer | None = None) -> PreparedData:
    """Load every corpus, mix the training pairs, tokenize (training a tokenizer on the mix unless
    one is given) and filter them; tokenize each corpus's valid and test split."""
    corpora = cfg.corpus_list()
    loaded = {corpus.name: load_corpus(cfg, corpus) for corpus in corpora}
    raw = {"train": training_mix(cfg, [(corpus, loaded[corpus.name]["train"]) for corpus in corpora])}
    for corpus in corpora:
        for split in ("valid", "test"):
            raw[held_out_key(corpus.name, split, not cfg.corpora)] = loaded[corpus.name][split]
    if tokenizer is None:
        tokenizer = get_tokenizer(cfg, raw["train"])
    splits, reports = {}, {}
    for key, ds in raw.items():
        cache = encoded_cache_file(cfg, ds, tokenizer, key) if cfg.cache_dir else None
        splits[key], reports[key] = encode_split(ds, tokenizer, cfg, "train" if key == "train" else "eval", cache)
    if len(splits["train"]) == 0:
        raise UserError("no training pairs left after filtering empty and over-long lines")
    return PreparedData(tokenizer, splits, reports, [corpus.name for corpus in corpora])


if __name__ == "__main__":  # python -m mt.data: corpus statistics (mt/data_stats.py)
    from mt.data_stats import main

    main()
