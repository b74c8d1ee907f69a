"""Teacher alignments for the aligning heads: eflomal on the training split, mapped to pieces, cached.

Garg et al. (2019) train one cross-attention head on a statistical aligner's links. Here the
aligner is eflomal (IBM1 + HMM + fertility, Gibbs sampling), run in both directions over the
training pairs as the model sees them: each side's pieces grouped into words by
`mt.tokenizer.word_units` (so eflomal's words are exactly groups of the model's pieces, and
punctuation is a word of its own), symmetrized with grow-diag-final-and (or another
`train.align_teacher`: a symmetrization, or eflomal's forward links alone), then every link
between two words becomes links between all their pieces. The result is cached under
`data.cache_dir/align/`, keyed by the training split's token ids, the tokenizer and the teacher,
like the token ids themselves: a changed corpus or tokenizer gets new alignments, a rerun reuses them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mt.align.symmetrize import symmetrize
from mt.config import DEFAULT_ALIGN_TEACHER, DEFAULT_ALIGN_TEACHER_RUNS, DEFAULT_ALIGN_TEACHER_SAMPLERS
from mt.errors import UserError
from mt.fileio import atomic_write_bytes, read_lines
from mt.tokenizer import WORD_START, Tokenizer, word_units

log = logging.getLogger(__name__)
FORWARD = "forward"  # train.align_teacher: eflomal's source->target links, not symmetrized
EFLOMAL_MODEL = 3  # IBM1 + HMM + fertility
FORMAT_VERSION = 2  # bump when the mapping changes: old caches are then not reused


@dataclass
class PieceLinks:
    """Links between source and target piece positions, per sentence pair, as flat arrays.

    Pair k's links are src[offsets[k]:offsets[k+1]] - tgt[...]; positions index the pair's token
    ids (no bos/eos), so target position t is the decoder step that predicts target token t.
    """

    offsets: np.ndarray  # [pairs + 1] int64
    src: np.ndarray  # [links] int32
    tgt: np.ndarray  # [links] int32

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def of(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
        return self.src[lo:hi], self.tgt[lo:hi]

    @classmethod
    def from_lists(cls, pairs: Sequence[Sequence[tuple[int, int]]]) -> PieceLinks:
        offsets = np.zeros(len(pairs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(p) for p in pairs])
        flat = [link for p in pairs for link in p]
        src = np.array([s for s, _ in flat], dtype=np.int32)
        tgt = np.array([t for _, t in flat], dtype=np.int32)
        return cls(offsets, src, tgt)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, offsets=self.offsets, src=self.src, tgt=self.tgt)
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> PieceLinks:
        with np.load(path) as z:
            return cls(z["offsets"], z["src"], z["tgt"])

    def with_null(self, src_lengths: Sequence[int], tgt_lengths: Sequence[int]) -> PieceLinks:
        """These links plus one to the source eos (position = source length) for every target
        position that has none: the null link model.align_null trains."""
        src_lengths, tgt_lengths = np.asarray(src_lengths, np.int64), np.asarray(tgt_lengths, np.int64)
        pairs = len(self)
        pair_of_link = np.repeat(np.arange(pairs), np.diff(self.offsets))
        starts = np.concatenate([[0], np.cumsum(tgt_lengths)])  # every target position, flat
        linked = np.zeros(int(starts[-1]), dtype=bool)
        linked[starts[pair_of_link] + self.tgt] = True
        free = np.flatnonzero(~linked)
        free_pair = np.searchsorted(starts, free, side="right") - 1
        pair = np.concatenate([pair_of_link, free_pair])
        src = np.concatenate([self.src, src_lengths[free_pair]]).astype(np.int32)
        tgt = np.concatenate([self.tgt, free - starts[free_pair]]).astype(np.int32)
        order = np.lexsort((src, tgt, pair))  # by pair, then target position, then source
        offsets = np.zeros(pairs + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(np.bincount(pair, minlength=pairs))
        share = 100 * len(free) / max(1, len(linked))
        log.info("null links: %d of %d target tokens (%.1f%%) have no teacher link", len(free), len(linked), share)
        return PieceLinks(offsets, src[order], tgt[order])


def sentence_words(pieces: list[str]) -> tuple[list[str], list[int]]:
    """A sentence's words (pieces grouped by `word_units`, `▁` removed) and each piece's word."""
    units = word_units(pieces)
    words = [""] * (max(units) + 1 if units else 0)
    for piece, w in zip(pieces, units):
        words[w] += piece
    return [w.replace(WORD_START, "") or WORD_START for w in words], units


def word_to_piece_links(word_links: Sequence[tuple[int, int]], src_units: list[int], tgt_units: list[int]):
    """Word links -> the links of all their pieces (Garg et al.: subwords of aligned words align)."""
    src_pieces: dict[int, list[int]] = {}
    tgt_pieces: dict[int, list[int]] = {}
    for p, w in enumerate(src_units):
        src_pieces.setdefault(w, []).append(p)
    for p, w in enumerate(tgt_units):
        tgt_pieces.setdefault(w, []).append(p)
    return sorted((s, t) for i, j in word_links for s in src_pieces.get(i, []) for t in tgt_pieces.get(j, []))


def teacher_settings(method: str, samplers: int, runs: int) -> str:
    """The teacher's part of its cache key."""
    voted = f"|runs{runs}" if runs != 1 else ""  # one run keeps the keys of the caches written before runs existed
    return f"v{FORMAT_VERSION}|{method}|model{EFLOMAL_MODEL}|samplers{samplers}{voted}"


def cache_key(
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    tokenizer: Tokenizer,
    method: str,
    samplers: int,
    runs: int = DEFAULT_ALIGN_TEACHER_RUNS,
) -> str:
    """Hash of the pairs' token ids, the tokenizer and the teacher's settings (train.align_teacher*)."""
    digest = hashlib.sha256(teacher_settings(method, samplers, runs).encode())
    digest.update(tokenizer.src_proto)
    digest.update(tokenizer.tgt_proto or b"")
    for seqs in (src_ids, tgt_ids):
        digest.update(len(seqs).to_bytes(8, "little"))
        for ids in seqs:
            row = np.asarray(ids, dtype=np.int32)
            digest.update(len(row).to_bytes(4, "little"))
            digest.update(row.tobytes())
    return digest.hexdigest()[:20]


def _parse(line: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in (t.split("-") for t in line.split())]


def run_eflomal(
    src: list[str], tgt: list[str], samplers: int
) -> tuple[list[list[tuple[int, int]]], list[list[tuple[int, int]]]]:
    """eflomal's forward and reverse word links (both as source-target) of whitespace-tokenized pairs."""
    try:
        import eflomal
    except ImportError:
        raise UserError(
            "train.align_weight > 0 needs the eflomal aligner for its teacher alignments: "
            "pip install eflomal (a dependency of mt: make install)"
        ) from None
    aligner = eflomal.Aligner(model=EFLOMAL_MODEL, n_samplers=samplers)
    with tempfile.TemporaryDirectory() as tmp:
        fwd, rev = Path(tmp) / "fwd", Path(tmp) / "rev"
        aligner.align(src, tgt, links_filename_fwd=str(fwd), links_filename_rev=str(rev), quiet=True)
        forward, reverse = read_lines(fwd), read_lines(rev)
    if len(forward) != len(src) or len(reverse) != len(src):
        raise UserError(f"eflomal wrote {len(forward)}/{len(reverse)} alignment lines for {len(src)} pairs")
    return [_parse(x) for x in forward], [_parse(x) for x in reverse]


Links = list[list[tuple[int, int]]]


def majority(runs: Sequence[Sequence[Iterable[tuple[int, int]]]]) -> Links:
    """Each pair's links that more than half of the runs drew (eflomal samples: its runs disagree
    on the uncertain links, and a vote keeps the ones it is sure of)."""
    out = []
    for pair in zip(*runs, strict=True):
        counts = Counter(link for links in pair for link in set(links))
        out.append(sorted(link for link, n in counts.items() if 2 * n > len(runs)))
    return out


def teacher_links(
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    tokenizer: Tokenizer,
    cache_dir: str,
    method: str = DEFAULT_ALIGN_TEACHER,
    samplers: int = DEFAULT_ALIGN_TEACHER_SAMPLERS,
    runs: int = DEFAULT_ALIGN_TEACHER_RUNS,
) -> PieceLinks:
    """Piece-level teacher links for every pair (eflomal; method: a symmetrization of its two
    directions, or FORWARD), from the cache if there."""
    key = cache_key(src_ids, tgt_ids, tokenizer, method, samplers, runs)
    cache = Path(cache_dir) / "align" / f"teacher-{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        log.info("teacher alignments: reusing %s", cache)
        return PieceLinks.from_file(cache)
    start = time.perf_counter()
    # Each distinct pair is aligned once: repeated pairs (data.extra_train_repeat) would make
    # the Gibbs sampler reinforce its own choices for them (measured: AER 15.3 -> 20.2 with the
    # Hansards gold pairs repeated 10 times).
    distinct: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    row_of = [distinct.setdefault((tuple(s), tuple(t)), len(distinct)) for s, t in zip(src_ids, tgt_ids)]
    src_words, tgt_words = [], []
    src_units, tgt_units = [], []
    for s_ids, t_ids in distinct:
        words, units = sentence_words(tokenizer.src_pieces(s_ids))
        src_words.append(" ".join(words))
        src_units.append(units)
        words, units = sentence_words(tokenizer.tgt_pieces(t_ids))
        tgt_words.append(" ".join(words))
        tgt_units.append(units)
    log.info(
        "teacher alignments: eflomal (model %d, %d samplers) on %d distinct training pairs, both directions, %s%s ...",
        EFLOMAL_MODEL,
        samplers,
        len(src_words),
        "forward links alone" if method == FORWARD else method,
        f", each direction's links voted by {runs} runs" if runs > 1 else "",
    )
    drawn = [run_eflomal(src_words, tgt_words, samplers) for _ in range(runs)]
    forward, reverse = majority([f for f, _ in drawn]), majority([r for _, r in drawn])
    aligned_pairs = [
        word_to_piece_links(f if method == FORWARD else symmetrize(f, r, method), su, tu)
        for f, r, su, tu in zip(forward, reverse, src_units, tgt_units)
    ]
    pairs = [aligned_pairs[k] for k in row_of]
    links = PieceLinks.from_lists(pairs)
    aligned = sum(1 for p in pairs if p)
    log.info(
        "teacher alignments: %d piece links, %d of %d pairs aligned, %.0f s%s",
        len(links.src),
        aligned,
        len(pairs),
        time.perf_counter() - start,
        f"; cached in {cache}" if cache else "",
    )
    if cache is not None:
        atomic_write_bytes(cache, links.to_bytes())
    return links
