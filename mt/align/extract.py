"""Word alignments from cross-attention: subword pieces -> words, pooling, links.

Attention convention (as produced by `mt.decode` and `teacher_forced_attention`):
[L, H, R, S+1] where row r is the decoder step that *predicts* target token r (row n
predicts eos) and the last column is the source eos. "shift" reads target token j from
row j + 1, the step where it is the decoder *input*.

Words. Sources are always encoded word by word (`encode_sentences`): each whitespace token on
its own, so the pieces of word k are exactly those of token k, against gold as in `mt.translate`
(which encodes its input the same way; with sentencepiece's whitespace splitting the ids equal
those of the whole line). Given targets are encoded the same way, and gold pairs keep exactly
their whitespace tokens (the gold links index them). Where no gold fixes the words (a
translation and the text it came from: `mt.translate`, `mt.serve`, `mt.align --translations`),
words are *word units* (`mt.tokenizer.word_units`): pieces grouped at `▁`, with the punctuation
at a word's ends a word of its own ("Eiscreme." -> "Eiscreme", "."; `encode_units`).

One path. `python -m mt.align` (given pairs, own translations, sweep, plots) and
`mt.translate --show-attention` all go from attention to a word matrix and links through
`align_words`, so they agree for the same sentence and `AlignConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch
from torch import Tensor

from mt.config import DecodeConfig
from mt.errors import UserError
from mt.tokenizer import WORD_START, word_units

Link = tuple[int, int]  # (source word, target word), 0-based
WORDS = ("sum", "max", "subword")
# Links from a word matrix: "argmax" links every target word to its row maximum; "mutual" keeps
# only the cells that are the maximum of both their row and their column (SimAlign's "ArgMax",
# Jalili Sabet et al. 2020), so a word with no clear partner stays unaligned (the null link a
# statistical aligner has): fewer links, higher precision.
LINKS = ("argmax", "mutual")


@dataclass
class AlignConfig:
    # Defaults: the best configuration measured for the Multi30k en->fr model (1,200 updates) on
    # the Hansards en-fr gold (docs/alignment.md): mean of layers and heads, no shift, max pooling.
    # A checkpoint that records its aligning heads is read with those (`align_config_for`).
    layer: int | None = None  # decoder layer (negative counts from the end); None = mean of layers
    head: int | list[int] | None = None  # one head, the mean of these heads, or None = mean of all heads
    shift: bool = False  # True: read target token j from row j + 1 (where it is the decoder input)
    # Subwords -> words for links: "sum" (sum source pieces, mean target pieces, then argmax per
    # target word), "max" (max over source pieces instead of the sum), "subword" (argmax per target
    # piece; two words are linked if any of their pieces are).
    words: str = "max"
    links: str = "argmax"  # see LINKS
    # Teacher-forced without the causal mask: how a model trained with model.align_full_context
    # reads its aligning heads (a freely decoded translation is re-read this way).
    full_context: bool = False
    # A model trained with model.align_null: a target word whose attention peaks on the source's
    # end-of-sentence token (not a word) gets no link.
    null: bool = False
    # Where layer/head/shift come from: "supervised" | "sweep" (the checkpoint's record, see
    # align_config_for), "options" (set by the user over it), "" (the default above).
    origin: str = ""

    def heads(self) -> list[int] | None:
        """The heads averaged (None: all of them)."""
        if self.head is None:
            return None
        return [self.head] if isinstance(self.head, int) else list(self.head)

    def reading(self) -> tuple:
        """What decides the attention read (not its pooling or where it came from)."""
        return self.layer, self.heads(), self.shift, self.full_context

    def name(self) -> str:
        layer = "mean" if self.layer is None else str(self.layer)
        head = "mean" if self.head is None else ",".join(map(str, self.heads() or []))
        shift = "yes" if self.shift else "no"
        return f"layer={layer} head={head} shift={shift} words={self.words} links={self.links}"

    def describe(self) -> str:
        """Which attention the links come from, for people: "layer 1 head 0 (supervised)"."""
        heads = self.heads()
        text = "layer mean" if self.layer is None else f"layer {self.layer}"
        if heads is None:
            text += " head mean"
        else:
            text += f" head{'s' if len(heads) > 1 else ''} {','.join(map(str, heads))}"
        text += ", shift" if self.shift else ""
        text += ", full context" if self.full_context else ""
        text += ", null on eos" if self.null else ""
        return text + f" ({self.origin or 'default'})"


def check_config(cfg: AlignConfig, layers: int, heads: int) -> None:
    if cfg.layer is not None and not -layers <= cfg.layer < layers:
        raise UserError(f"--layer {cfg.layer} is out of range: the model has {layers} decoder layers")
    chosen = cfg.heads()
    if chosen == []:
        raise UserError("--head names no head")
    for head in chosen or []:
        if not -heads <= head < heads:
            raise UserError(f"--head {head} is out of range: the model has {heads} heads")


def config_of_record(record: Mapping[str, Any]) -> AlignConfig:
    """The AlignConfig of a checkpoint's "alignment" record (mt.checkpoint.AligningHeads)."""
    layer, heads = record.get("layer"), record.get("heads")
    fine = (
        isinstance(layer, int)
        and isinstance(heads, list)
        and heads
        and all(isinstance(h, int) for h in heads)
        and all(isinstance(record.get(k), bool) for k in ("shift", "full_context"))
        and isinstance(record.get("null", False), bool)
    )
    if not fine:
        raise UserError(f"the checkpoint's alignment record is malformed: {dict(record)}")
    head: int | list[int] = heads[0] if len(heads) == 1 else list(heads)
    origin = str(record.get("source") or "record")
    null = record.get("null", False)  # absent in checkpoints from before model.align_null
    return AlignConfig(layer, head, record["shift"], full_context=record["full_context"], null=null, origin=origin)


def align_config_for(ckpt: Mapping[str, Any] | None, **given: Any) -> AlignConfig:
    """How a checkpoint's alignments are read unless options say otherwise: the aligning heads its
    "alignment" record names (trained, or saved by `mt.align sweep --save`), else the default
    AlignConfig. `given`: AlignConfig fields set by options (--layer, --head, --shift, --words);
    they replace the record's, which then no longer names the config (origin "options"); --words
    and --links only change how the read attention becomes links."""
    record = (ckpt or {}).get("alignment")
    base = config_of_record(record) if record else AlignConfig()
    cfg = replace(base, **given)
    # Another layer/head/shift is not the trained head: its attention on eos means nothing, so
    # the null rule (model.align_null) goes with the record.
    return cfg if cfg.reading() == base.reading() else replace(cfg, origin="options", null=False)


# Words <-> subword pieces ------------------------------------------------------------------
Encode = Callable[[list[str]], list[list[int]]]  # Tokenizer.encode_src / encode_tgt


def encode_sentences(encode: Encode, sentences: Sequence[Sequence[str]]) -> list[tuple[list[int], list[int]]]:
    """Whitespace-tokenized sentences -> (piece ids, word index of each piece) per sentence.

    Every word is encoded on its own (all words of all sentences in one call to `encode`), so
    subword -> word matches the given tokens exactly.
    """
    pieces = iter(encode([w for words in sentences for w in words]) if any(sentences) else [])
    out = []
    for words in sentences:
        ids: list[int] = []
        word_ids: list[int] = []
        for w in range(len(words)):
            piece_ids = next(pieces)
            ids += piece_ids
            word_ids += [w] * len(piece_ids)
        out.append((ids, word_ids))
    return out


def encode_words(encode: Encode, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """One whitespace-tokenized sentence -> (piece ids, word index of each piece)."""
    return encode_sentences(encode, [words])[0]


def join_words(pieces: list[str], word_ids: list[int]) -> list[str]:
    """The words of grouped pieces: pieces concatenated, `▁` removed (a lone `▁` stays)."""
    words = [""] * (max(word_ids) + 1 if word_ids else 0)
    for piece, w in zip(pieces, word_ids):
        words[w] += piece
    return [w.replace(WORD_START, "") or WORD_START for w in words]


class Units(NamedTuple):
    """One sentence read as word units: its piece ids, the unit of each piece, each unit's text."""

    ids: list[int]
    unit_ids: list[int]
    words: list[str]


def encode_units(tokenizer, sentences: Sequence[Sequence[str]]) -> list[Units]:
    """Source sentences (whitespace words) encoded word by word, as `encode_sentences`, then each
    word's pieces split into word units (`word_units`: "cream." -> "cream", "."). The ids are
    those of `encode_sentences`; only the grouping changes. Words without pieces get no unit."""
    out = []
    for words, (ids, word_ids) in zip(sentences, encode_sentences(tokenizer.encode_src, sentences)):
        pieces = tokenizer.src_pieces(ids)
        unit_ids: list[int] = []
        texts: list[str] = []
        start = 0
        while start < len(ids):
            end = start
            while end < len(ids) and word_ids[end] == word_ids[start]:
                end += 1
            local = word_units(pieces[start:end])
            unit_ids += [len(texts) + u for u in local]
            texts += unit_texts(words[word_ids[start]], pieces[start:end], local)
            start = end
        out.append(Units(ids, unit_ids, texts))
    return out


def unit_texts(word: str, pieces: list[str], units: list[int]) -> list[str]:
    """The text of each unit of one whitespace word: its pieces joined, except that the word's
    own spelling is kept where the pieces differ from it (sentencepiece normalizes text and reads
    unknown characters as <unk>): units are cut off the word's ends while they match it, and
    the one unit left in the middle is the rest of the word."""
    texts = join_words(pieces, units)
    if len(texts) <= 1:
        return [word] * len(texts)
    start, end, first, last = 0, len(word), 0, len(texts)
    while first < last and word.startswith(texts[first], start, end):
        start, first = start + len(texts[first]), first + 1
    while last > first and word.endswith(texts[last - 1], start, end):
        end, last = end - len(texts[last - 1]), last - 1
    if last - first == 1 and start < end:
        texts[first] = word[start:end]
    return texts


# Attention -> word matrix -> links -----------------------------------------------------------
def select(attention: Tensor, cfg: AlignConfig) -> Tensor:
    """[L,H,R,S+1] -> [R,S+1] for the configured layer/head (or their mean)."""
    a = attention.float()
    a = a.mean(0) if cfg.layer is None else a[cfg.layer]
    heads = cfg.heads()
    return a.mean(0) if heads is None else a[heads].mean(0)


def token_matrix(attention: Tensor, n_src: int, n_tgt: int, cfg: AlignConfig, keep_eos: bool = False) -> Tensor:
    """Rows for the n_tgt target tokens (shifted or not) -> [n_tgt, n_src], or with the source eos
    column last ([n_tgt, n_src + 1]) when keep_eos."""
    a = select(attention, cfg)
    rows = a[1 : n_tgt + 1] if cfg.shift else a[:n_tgt]
    return rows[:, : n_src + 1] if keep_eos else rows[:, :n_src]


def pool_words(matrix: Tensor, src_words: list[int], tgt_words: list[int]) -> Tensor:
    """Subword [n_tgt, n_src] -> word [T_words, S_words]: sum over source pieces, mean over target pieces."""
    n_sw, n_tw = max(src_words) + 1, max(tgt_words) + 1
    src_index = torch.tensor(src_words)
    tgt_index = torch.tensor(tgt_words)
    by_src = torch.zeros(matrix.size(0), n_sw).index_add_(1, src_index, matrix)
    summed = torch.zeros(n_tw, n_sw).index_add_(0, tgt_index, by_src)
    counts = torch.bincount(tgt_index, minlength=n_tw).clamp(min=1).unsqueeze(1)
    return summed / counts


def pool_words_max(matrix: Tensor, src_words: list[int], tgt_words: list[int]) -> Tensor:
    """Like pool_words, but the maximum (not the sum) over the pieces of a source word."""
    n_sw = max(src_words) + 1
    index = torch.tensor(src_words).expand(matrix.size(0), -1)
    by_src = torch.zeros(matrix.size(0), n_sw).scatter_reduce_(1, index, matrix, "amax", include_self=False)
    return pool_words(by_src, list(range(n_sw)), tgt_words)


def argmax_links(matrix: Tensor) -> list[Link]:
    """Each target word aligned to the source word it attends to most: (source, target) pairs."""
    if matrix.numel() == 0:
        return []
    best = matrix.argmax(dim=1).tolist()
    return sorted((int(i), j) for j, i in enumerate(best))


def mutual_links(matrix: Tensor) -> list[Link]:
    """(source i, target j) where cell [j, i] is the maximum of both its row and its column."""
    if matrix.numel() == 0:
        return []
    row_best, col_best = matrix.argmax(dim=1).tolist(), matrix.argmax(dim=0).tolist()
    return sorted((i, j) for j, i in enumerate(row_best) if col_best[i] == j)


def matrix_links(matrix: Tensor, links: str) -> list[Link]:
    return argmax_links(matrix) if links == "argmax" else mutual_links(matrix)


class WordAlignment(NamedTuple):
    matrix: Tensor  # [target words, source words], pooled as AlignConfig.words says ("subword": summed)
    links: list[Link]  # sorted (source word, target word) pairs


def align_words(attention: Tensor, src_word_ids: list[int], tgt_word_ids: list[int], cfg: AlignConfig) -> WordAlignment:
    """The one path from attention [L,H,n+1,S+1] to words: select layer/head and rows (shift),
    pool the pieces of each word (cfg.words) and link them (cfg.links).

    `src_word_ids` / `tgt_word_ids` give the word index of each source / target piece.
    """
    if cfg.words not in WORDS:
        raise UserError(f"words must be one of {', '.join(WORDS)}, not '{cfg.words}'")
    if cfg.links not in LINKS:
        raise UserError(f"links must be one of {', '.join(LINKS)}, not '{cfg.links}'")
    if not src_word_ids or not tgt_word_ids:
        return WordAlignment(torch.zeros(0, 0), [])
    n_words = max(src_word_ids) + 1
    tokens = token_matrix(attention, len(src_word_ids), len(tgt_word_ids), cfg, keep_eos=cfg.null)
    if cfg.null:  # the source eos is one more "word": links to it are the unaligned target words
        src_word_ids = [*src_word_ids, n_words]
    if cfg.words == "max":
        matrix = pool_words_max(tokens, src_word_ids, tgt_word_ids)
    else:
        matrix = pool_words(tokens, src_word_ids, tgt_word_ids)
    if cfg.words == "subword":  # piece links, each standing for its two words' link
        links = {(src_word_ids[i], tgt_word_ids[j]) for i, j in matrix_links(tokens, cfg.links)}
    else:
        links = set(matrix_links(matrix, cfg.links))
    return WordAlignment(matrix[:, :n_words], sorted(link for link in links if link[0] < n_words))


def attention_grid_text(
    matrix: Tensor, src_words: list[str], tgt_words: list[str], links: Iterable[Link] | None = None
) -> str:
    """The word-level attention as a text table, in percent of each row; * marks the links
    (without `links`: each row's maximum)."""
    if matrix.numel() == 0:
        return "(nothing to show)"
    share = matrix / matrix.sum(dim=1, keepdim=True).clamp(min=1e-9)
    marked = set(links) if links is not None else {(int(share[j].argmax()), j) for j in range(len(tgt_words))}
    widths = [max(4, len(w)) for w in src_words]
    label = max(len(w) for w in tgt_words)
    lines = [" " * label + "  " + " ".join(w.rjust(n) for w, n in zip(src_words, widths))]
    for j, word in enumerate(tgt_words):
        cells = [
            (f"{round(100 * float(v))}" + ("*" if (i, j) in marked else " ")).rjust(n)
            for i, (v, n) in enumerate(zip(share[j], widths))
        ]
        lines.append((word.ljust(label) + "  " + " ".join(cells)).rstrip())  # an unmarked last cell ends in a blank
    return "\n".join(lines)


def format_links(links: Iterable[Link]) -> str:
    """Pharaoh format, 0-based: `source-target` pairs."""
    return " ".join(f"{i}-{j}" for i, j in sorted(links))


# Attention from a model ---------------------------------------------------------------------
@torch.no_grad()
def teacher_forced_attention(
    model,
    src_ids: Sequence[list[int]],
    tgt_ids: Sequence[list[int]],
    device="cpu",
    max_tokens: int = 4000,
    on_batch: Callable[[int], object] | None = None,
    full_context: bool = False,
) -> list[Tensor]:
    """Cross-attention of the model reading the reference target: one [L,H,n+1,S+1] per pair.

    Rows follow the convention above (input [bos, y1..yn]; row r predicts y_{r+1} / eos).
    `full_context`: the decoder without its causal mask (AlignConfig.full_context).
    """
    from mt.batching import pad, source_tensor
    from mt.tokenizer import BOS_ID

    model.eval()
    out: list[Tensor | None] = [None] * len(src_ids)
    order = sorted(range(len(src_ids)), key=lambda i: (len(src_ids[i]), len(tgt_ids[i])), reverse=True)
    start = 0
    while start < len(order):
        width = max(len(src_ids[order[start]]), len(tgt_ids[order[start]])) + 1
        chunk = order[start : start + max(1, max_tokens // width)]
        src = source_tensor([list(src_ids[i]) for i in chunk]).to(device)
        tgt_in = pad([[BOS_ID] + list(tgt_ids[i]) for i in chunk]).to(device)
        _, attention = model(src, tgt_in, need_weights=True, full_context=full_context)
        stacked = torch.stack(attention, dim=1).float().cpu()  # [B,L,H,T,S]
        for b, i in enumerate(chunk):
            out[i] = stacked[b, :, :, : len(tgt_ids[i]) + 1, : len(src_ids[i]) + 1].clone()
        start += len(chunk)
        if on_batch is not None:  # progress: pairs done
            on_batch(len(chunk))
    return out  # type: ignore[return-value]


def model_dims(loaded) -> tuple[int, int]:
    """(decoder layers, heads) of a loaded checkpoint."""
    return len(loaded.model.decoder), loaded.model.config.heads


def source_limit(loaded) -> int:
    return loaded.model.config.max_positions - 1  # room for the eos


@dataclass
class Encoded:
    """Sentence pairs as piece ids with the word index of every piece."""

    src_ids: list[list[int]]
    src_words: list[list[int]]
    tgt_ids: list[list[int]]
    tgt_words: list[list[int]]


def encode_pairs(tokenizer, src_lines: Sequence[str], tgt_lines: Sequence[str], limit: int) -> Encoded:
    """Both sides encoded word by word (`encode_sentences`), each cut to `limit` pieces."""
    src = encode_sentences(tokenizer.encode_src, [s.split() for s in src_lines])
    tgt = encode_sentences(tokenizer.encode_tgt, [t.split() for t in tgt_lines])
    cut = lambda pairs, k: [pair[k][:limit] for pair in pairs]
    return Encoded(cut(src, 0), cut(src, 1), cut(tgt, 0), cut(tgt, 1))


def pair_attention(
    loaded, enc: Encoded, device, on_batch: Callable[[int], object] | None = None, full_context: bool = False
) -> list[Tensor]:
    """Teacher-forced attention per pair; pairs with an empty side get an empty tensor (no links)."""
    keep = [i for i in range(len(enc.src_ids)) if enc.src_ids[i] and enc.tgt_ids[i]]
    src, tgt = [enc.src_ids[i] for i in keep], [enc.tgt_ids[i] for i in keep]
    att = teacher_forced_attention(loaded.model, src, tgt, device, on_batch=on_batch, full_context=full_context)
    out = [torch.zeros(0)] * len(enc.src_ids)
    for i, a in zip(keep, att):
        out[i] = a
    return out


def all_alignments(att: Sequence[Tensor], enc: Encoded, cfg: AlignConfig) -> list[WordAlignment]:
    """The word alignment of each pair (`align_words`); a pair with an empty side has none."""
    return [
        align_words(a, sw, tw, cfg) if a.numel() else WordAlignment(torch.zeros(0, 0), [])
        for a, sw, tw in zip(att, enc.src_words, enc.tgt_words)
    ]


def all_links(att: Sequence[Tensor], enc: Encoded, cfg: AlignConfig) -> list[list[Link]]:
    return [w.links for w in all_alignments(att, enc, cfg)]


def pairs_attention(
    loaded,
    src_lines: Sequence[str],
    tgt_lines: Sequence[str],
    cfg: AlignConfig,
    device="cpu",
    on_batch: Callable[[int], object] | None = None,
) -> tuple[list[Tensor], Encoded]:
    """The teacher-forced attention of whitespace-tokenized pairs (read as `cfg` says), and their encoding."""
    check_config(cfg, *model_dims(loaded))
    enc = encode_pairs(loaded.tokenizer, src_lines, tgt_lines, source_limit(loaded))
    return pair_attention(loaded, enc, device, on_batch, cfg.full_context), enc


def align_pairs(
    loaded,
    src_lines: Sequence[str],
    tgt_lines: Sequence[str],
    cfg: AlignConfig,
    device="cpu",
    on_batch: Callable[[int], object] | None = None,
) -> list[list[Link]]:
    """Teacher-forced alignments of whitespace-tokenized pairs: one list of (src, tgt) links per pair."""
    return all_links(*pairs_attention(loaded, src_lines, tgt_lines, cfg, device, on_batch), cfg)


@dataclass
class AlignedTranslation:
    src_words: list[str]  # the source word units the pieces cover
    tgt_words: list[str]  # the translation's word units (pieces joined; `word_units`)
    matrix: Tensor  # [target words, source words] (align_words)
    links: list[Link]


def align_hypothesis(
    tokenizer, src_words: Sequence[str], src_word_ids: list[int], hyp, cfg: AlignConfig
) -> AlignedTranslation:
    """Align a decoded hypothesis (mt.decode.Hypothesis with attention) to its source words.

    `src_words` / `src_word_ids`: the source's word units and the unit of each piece the model
    read (`encode_units`, truncated). The hypothesis' pieces are grouped into word units too.
    """
    pieces = tokenizer.tgt_pieces(hyp.tokens)
    tgt_word_ids = word_units(pieces)
    src = list(src_words[: max(src_word_ids) + 1]) if src_word_ids else []
    matrix, links = torch.zeros(0, 0), []
    if hyp.attention is not None:
        matrix, links = align_words(hyp.attention, src_word_ids, tgt_word_ids, cfg)
    return AlignedTranslation(src, join_words(pieces, tgt_word_ids), matrix, links)


def reread_best(model, src_ids: Sequence[list[int]], hyps: Sequence[list], cfg: AlignConfig, device="cpu") -> list:
    """The n-best lists with the best hypothesis' attention as `cfg` reads it: unchanged, or for a
    full-context config (AlignConfig.full_context) from a teacher-forced pass over the hypothesis
    without the causal mask, since the incremental decoder only ever attends causally."""
    if not cfg.full_context:
        return list(hyps)
    todo = [i for i, h in enumerate(hyps) if h]
    forced = teacher_forced_attention(
        model, [src_ids[i] for i in todo], [hyps[i][0].tokens for i in todo], device, full_context=True
    )
    out = [list(h) for h in hyps]
    for i, attention in zip(todo, forced):
        out[i][0] = replace(out[i][0], attention=attention)
    return out


def align_translations(
    loaded,
    src_lines: Sequence[str],
    cfg: AlignConfig,
    decode: DecodeConfig | None = None,
    device="cpu",
    on_batch: Callable[[int], object] | None = None,
) -> tuple[list[str], list[list[Link]]]:
    """Translate, then align each word unit of a translation to a word unit of its source.

    Returns the translations as whitespace-separated word units (the words the links index,
    punctuation split off: "Eiscreme ." for "Eiscreme.") and the links, whose source side indexes
    the source's word units (`encode_units`), not its whitespace tokens.
    """
    from mt.decode import translate_ids

    check_config(cfg, *model_dims(loaded))
    tok, limit = loaded.tokenizer, source_limit(loaded)
    units = [
        u._replace(ids=u.ids[:limit], unit_ids=u.unit_ids[:limit])
        for u in encode_units(tok, [s.split() for s in src_lines])
    ]
    keep = [i for i, u in enumerate(units) if u.ids]
    src_ids = [units[i].ids for i in keep]
    results = translate_ids(
        loaded.model, src_ids, decode or DecodeConfig(), device, not cfg.full_context, on_batch=on_batch
    )
    results = reread_best(loaded.model, src_ids, results, cfg, device)
    texts, links = [""] * len(src_lines), [[] for _ in src_lines]
    for i, hyps in zip(keep, results):
        if hyps:
            # The words the links index: pieces joined per word unit (sentencepiece's detokenization
            # could merge or split words differently, so it is not used here).
            aligned = align_hypothesis(tok, units[i].words, units[i].unit_ids, hyps[0], cfg)
            texts[i], links[i] = " ".join(aligned.tgt_words), aligned.links
    return texts, links
