"""Sentencepiece tokenization: trained on the training split, carried inside checkpoints."""

from __future__ import annotations

import io
import logging
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm

from mt.config import DataConfig
from mt.errors import UserError
from mt.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

# Fixed special ids, identical for every vocabulary: models and decoders rely on them.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
WORD_START = "\u2581"  # sentencepiece's word-boundary marker


def _load(proto: bytes) -> spm.SentencePieceProcessor:
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto)
    return sp


def train_sentencepiece(lines: Sequence[str], cfg: DataConfig, vocab_size: int) -> bytes:
    """Train one sentencepiece model in memory and return its serialized proto."""
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=buffer,
            vocab_size=vocab_size,
            model_type=cfg.spm_model_type,
            character_coverage=cfg.spm_character_coverage,
            input_sentence_size=cfg.spm_input_sentence_size,
            shuffle_input_sentence=True,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            num_threads=2,
            minloglevel=2,
        )
    except RuntimeError as err:
        message = str(err).strip().splitlines()[-1]
        if "Vocabulary size" in message or "vocab_size" in message:
            raise UserError(
                f"data.vocab_size={vocab_size} is too large for this training corpus "
                f"({message.split(']')[-1].strip()}); choose a smaller data.vocab_size"
            ) from None
        raise UserError(f"sentencepiece training failed: {message}") from None
    return buffer.getvalue()


class Tokenizer:
    """Source and target sentencepiece models (one shared model when the vocabulary is joint)."""

    def __init__(self, src_proto: bytes, tgt_proto: bytes | None = None):
        self.src_proto = src_proto
        self.tgt_proto = tgt_proto  # None: joint vocabulary
        self.src = _load(src_proto)
        self.tgt = self.src if tgt_proto is None else _load(tgt_proto)

    @property
    def joint(self) -> bool:
        return self.tgt_proto is None

    @property
    def src_vocab_size(self) -> int:
        return self.src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt.get_piece_size()

    @classmethod
    def train(cls, src_lines: Sequence[str], tgt_lines: Sequence[str], cfg: DataConfig) -> Tokenizer:
        if cfg.joint_vocab:
            return cls(train_sentencepiece(list(src_lines) + list(tgt_lines), cfg, cfg.vocab_size))
        return cls(
            train_sentencepiece(src_lines, cfg, cfg.vocab_size),
            train_sentencepiece(tgt_lines, cfg, cfg.vocab_size),
        )

    def encode_src(self, lines: Sequence[str]) -> list[list[int]]:
        return self.src.encode(list(lines))

    def encode_tgt(self, lines: Sequence[str]) -> list[list[int]]:
        return self.tgt.encode(list(lines))

    def decode_tgt(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Detokenize target ids (special ids dropped) back to plain text."""
        specials = (PAD_ID, BOS_ID, EOS_ID)
        return self.tgt.decode([[i for i in seq if i not in specials] for seq in ids])

    def src_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.src.id_to_piece(i) for i in ids]

    def tgt_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.tgt.id_to_piece(i) for i in ids]

    # Persistence: files in a directory (run dir, cache) and raw bytes (checkpoints).
    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        joint, src, tgt = directory / "spm.joint.model", directory / "spm.src.model", directory / "spm.tgt.model"
        if self.joint:
            atomic_write_bytes(joint, self.src_proto)
            stale = [src, tgt]
        else:
            atomic_write_bytes(src, self.src_proto)
            atomic_write_bytes(tgt, self.tgt_proto or b"")
            stale = [joint]
        for path in stale:  # `load` must not find the other layout's old files
            path.unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: Path) -> Tokenizer | None:
        joint = directory / "spm.joint.model"
        if joint.is_file():
            return cls(joint.read_bytes())
        src, tgt = directory / "spm.src.model", directory / "spm.tgt.model"
        if src.is_file() and tgt.is_file():
            return cls(src.read_bytes(), tgt.read_bytes())
        return None


def words_of_pieces(pieces: Sequence[str]) -> list[int]:
    """Map each subword piece to the index of the word it belongs to (`▁` starts a word)."""
    word_ids: list[int] = []
    word = -1
    for piece in pieces:
        if piece.startswith(WORD_START) or word < 0:
            word += 1
        word_ids.append(word)
    return word_ids


def _is_punctuation(piece: str) -> bool:
    text = piece.replace(WORD_START, "")
    return bool(text) and all(unicodedata.category(ch)[0] in "PS" for ch in text)


def word_units(pieces: Sequence[str]) -> list[int]:
    """Map each piece to its word, where leading and trailing punctuation are words of their own.

    Words start at `▁` (as in `words_of_pieces`); within one, the pieces made only of
    punctuation or symbols at its start or end (`(`, `.`, `",`) each become a word, so
    "Eiscreme." is "Eiscreme" and ".", while "don't" and "well-known" stay whole. A lone `▁`
    belongs to the piece after it. The teacher alignments (mt.align.teacher) and the word
    grids both use these words.
    """
    word_ids: list[int] = []
    groups = words_of_pieces(pieces)
    word = -1
    start = 0
    while start < len(pieces):
        end = start
        while end < len(pieces) and groups[end] == groups[start]:
            end += 1
        group = pieces[start:end]
        core = [i for i, p in enumerate(group) if p.replace(WORD_START, "") and not _is_punctuation(p)]
        first, last = (core[0], core[-1]) if core else (len(group), -1)
        units: list[int] = []
        for i, piece in enumerate(group):
            if not piece.replace(WORD_START, ""):  # a lone `▁`: decided by the next piece
                units.append(-1)
                continue
            if not (first < i <= last):  # a word starts here (the core, or each punctuation piece)
                word += 1
            units.append(word)
        for i in range(len(units) - 1, -1, -1):  # a lone `▁` joins the word after it (or starts one)
            if units[i] < 0:
                units[i] = units[i + 1] if i + 1 < len(units) else word + 1
                word = max(word, units[i])
        word_ids += units
        start = end
    return word_ids
