"""Word alignments from cross-attention, and alignment error rate (AER) against gold.

Attention convention (as produced by `mt.decode` and `teacher_forced_attention`):
[L, H, R, S+1] where row r is the decoder step that *predicts* target token r (row n
predicts eos) and the last column is the source eos. "shift" reads target token j from
row j + 1, the step where it is the decoder *input*.

Command line (see docs/alignment.md):

    python -m mt.align --checkpoint CKPT --src FILE --tgt FILE [--layer N|mean] [--head N|mean]
                       [--no-shift] [--reverse-checkpoint CKPT2 --symmetrize grow-diag-final] > out.align
    python -m mt.align --checkpoint CKPT --src FILE --translations OUT      # align own translations
    python -m mt.align score --gold G --hyp H [--gold-one-based]
    python -m mt.align sweep --checkpoint CKPT --src FILE --tgt FILE --gold G [--gold-one-based] [--json F]
    python -m mt.align prepare-gold --out data/align
    python -m mt.align plot --checkpoint CKPT --src FILE --tgt FILE --lines 5 9 --gold G --out 'img/{n}.png'

Alignments are Pharaoh `i-j` (0-based, source word - target word), one line per sentence pair.
Source and target files are whitespace-tokenized: every whitespace token is one word, and
subword pieces are mapped back to those words (pieces of a word are encoded word by word).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from mt.device import pick_device
from mt.errors import UserError, exit_on_user_error
from mt.tokenizer import words_of_pieces

Link = tuple[int, int]  # (source word, target word), 0-based
GOLD_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "alignment-gold" / "en-fr"


@dataclass
class AlignConfig:
    # Defaults: the best configuration measured for the Multi30k en->fr model (1,200 updates) on
    # the Hansards en-fr gold (docs/alignment.md): mean of layers and heads, no shift, max pooling.
    layer: int | None = None  # decoder layer (negative counts from the end); None = mean of layers
    head: int | None = None  # None = mean of heads
    shift: bool = False  # True: read target token j from row j + 1 (where it is the decoder input)
    # Subwords -> words for links: "sum" (sum source pieces, mean target pieces, then argmax per
    # target word), "max" (max over source pieces instead of the sum), "subword" (argmax per target
    # piece; two words are linked if any of their pieces are).
    words: str = "max"

    def name(self) -> str:
        layer = "mean" if self.layer is None else str(self.layer)
        head = "mean" if self.head is None else str(self.head)
        return f"layer={layer} head={head} shift={'yes' if self.shift else 'no'} words={self.words}"


WORDS = ("sum", "max", "subword")


def select(attention: Tensor, cfg: AlignConfig) -> Tensor:
    """[L,H,R,S+1] -> [R,S+1] for the configured layer/head (or their mean)."""
    a = attention.float()
    a = a.mean(0) if cfg.layer is None else a[cfg.layer]
    return a.mean(0) if cfg.head is None else a[cfg.head]


def token_matrix(attention: Tensor, n_src: int, n_tgt: int, cfg: AlignConfig) -> Tensor:
    """Rows for the n_tgt target tokens (shifted or not), source eos column dropped -> [n_tgt, n_src]."""
    a = select(attention, cfg)
    rows = a[1 : n_tgt + 1] if cfg.shift else a[:n_tgt]
    return rows[:, :n_src]


def pool_words(matrix: Tensor, src_words: list[int], tgt_words: list[int]) -> Tensor:
    """Subword [n_tgt, n_src] -> word [T_words, S_words]: sum over source pieces, mean over target pieces."""
    n_sw, n_tw = max(src_words) + 1, max(tgt_words) + 1
    src_index = torch.tensor(src_words)
    tgt_index = torch.tensor(tgt_words)
    by_src = torch.zeros(matrix.size(0), n_sw).index_add_(1, src_index, matrix)
    summed = torch.zeros(n_tw, n_sw).index_add_(0, tgt_index, by_src)
    counts = torch.bincount(tgt_index, minlength=n_tw).clamp(min=1).unsqueeze(1)
    return summed / counts


def join_words(pieces: list[str], word_ids: list[int]) -> list[str]:
    words = [""] * (max(word_ids) + 1 if word_ids else 0)
    for piece, w in zip(pieces, word_ids):
        words[w] += piece
    return [w.replace("\u2581", "") or "\u2581" for w in words]


def word_attention(
    attention: Tensor, src_pieces: list[str], tgt_pieces: list[str], cfg: AlignConfig
) -> tuple[Tensor, list[str], list[str]]:
    """Word-level attention [target words, source words] with the words themselves."""
    if not src_pieces or not tgt_pieces:
        return torch.zeros(0, 0), [], []
    src_ids, tgt_ids = words_of_pieces(src_pieces), words_of_pieces(tgt_pieces)
    matrix = pool_words(token_matrix(attention, len(src_pieces), len(tgt_pieces), cfg), src_ids, tgt_ids)
    return matrix, join_words(src_pieces, src_ids), join_words(tgt_pieces, tgt_ids)


def argmax_links(matrix: Tensor) -> list[tuple[int, int]]:
    """Each target word aligned to the source word it attends to most: (source, target) pairs."""
    if matrix.numel() == 0:
        return []
    best = matrix.argmax(dim=1).tolist()
    return sorted((int(i), j) for j, i in enumerate(best))


def attention_grid_text(matrix: Tensor, src_words: list[str], tgt_words: list[str]) -> str:
    """The word-level attention as a text table, in percent; * marks each row's maximum."""
    if matrix.numel() == 0:
        return "(nothing to show)"
    share = matrix / matrix.sum(dim=1, keepdim=True).clamp(min=1e-9)
    widths = [max(4, len(w)) for w in src_words]
    label = max(len(w) for w in tgt_words)
    lines = [" " * label + "  " + " ".join(w.rjust(n) for w, n in zip(src_words, widths))]
    for j, word in enumerate(tgt_words):
        best = int(share[j].argmax())
        cells = [(f"{round(100 * float(v))}" + ("*" if i == best else " ")).rjust(n) for i, (v, n) in
                 enumerate(zip(share[j], widths))]
        lines.append(word.ljust(label) + "  " + " ".join(cells))
    return "\n".join(lines)


def format_links(links: Iterable[tuple[int, int]]) -> str:
    """Pharaoh format, 0-based: `source-target` pairs."""
    return " ".join(f"{i}-{j}" for i, j in sorted(links))


# Words <-> subword pieces ------------------------------------------------------------------
def encode_words(encode, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """Encode whitespace-tokenized words one by one -> (piece ids, word index of each piece).

    `encode` maps a list of strings to a list of id lists (Tokenizer.encode_src/encode_tgt).
    Encoding word by word guarantees that subword -> word matches the given tokens exactly.
    """
    ids: list[int] = []
    word_ids: list[int] = []
    for w, pieces in enumerate(encode(list(words)) if words else []):
        ids += pieces
        word_ids += [w] * len(pieces)
    return ids, word_ids


def word_matrix(attention: Tensor, src_word_ids: list[int], tgt_word_ids: list[int], cfg: AlignConfig) -> Tensor:
    """[L,H,n+1,S+1] attention -> word-level [target words, source words] for given piece->word maps."""
    if not src_word_ids or not tgt_word_ids:
        return torch.zeros(0, 0)
    matrix = token_matrix(attention, len(src_word_ids), len(tgt_word_ids), cfg)
    if cfg.words == "max":
        return pool_words_max(matrix, src_word_ids, tgt_word_ids)
    return pool_words(matrix, src_word_ids, tgt_word_ids)


def pool_words_max(matrix: Tensor, src_words: list[int], tgt_words: list[int]) -> Tensor:
    """Like pool_words, but the maximum (not the sum) over the pieces of a source word."""
    n_sw = max(src_words) + 1
    index = torch.tensor(src_words).expand(matrix.size(0), -1)
    by_src = torch.zeros(matrix.size(0), n_sw).scatter_reduce_(1, index, matrix, "amax", include_self=False)
    return pool_words(by_src, list(range(n_sw)), tgt_words)


def links_of(attention: Tensor, src_word_ids: list[int], tgt_word_ids: list[int], cfg: AlignConfig) -> list[Link]:
    if cfg.words not in WORDS:
        raise UserError(f"words must be one of {', '.join(WORDS)}, not '{cfg.words}'")
    if cfg.words == "subword":
        if not src_word_ids or not tgt_word_ids:
            return []
        best = token_matrix(attention, len(src_word_ids), len(tgt_word_ids), cfg).argmax(dim=1).tolist()
        return sorted({(src_word_ids[i], tgt_word_ids[j]) for j, i in enumerate(best)})
    return argmax_links(word_matrix(attention, src_word_ids, tgt_word_ids, cfg))


# Attention from a model ---------------------------------------------------------------------
@torch.no_grad()
def teacher_forced_attention(
    model, src_ids: Sequence[list[int]], tgt_ids: Sequence[list[int]], device: torch.device | str = "cpu",
    max_tokens: int = 4000,
) -> list[Tensor]:
    """Cross-attention of the model reading the reference target: one [L,H,n+1,S+1] per pair.

    Rows follow the convention above (input [bos, y1..yn]; row r predicts y_{r+1} / eos).
    """
    from mt.data import pad, source_tensor
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
        _, attention = model(src, tgt_in, need_weights=True)
        stacked = torch.stack(attention, dim=1).float().cpu()  # [B,L,H,T,S]
        for b, i in enumerate(chunk):
            out[i] = stacked[b, :, :, : len(tgt_ids[i]) + 1, : len(src_ids[i]) + 1].clone()
        start += len(chunk)
    return out  # type: ignore[return-value]


def _truncate(ids: list[int], word_ids: list[int], limit: int) -> tuple[list[int], list[int]]:
    return ids[:limit], word_ids[:limit]


@dataclass
class Encoded:
    """Sentence pairs as piece ids with the word index of every piece."""

    src_ids: list[list[int]]
    src_words: list[list[int]]
    tgt_ids: list[list[int]]
    tgt_words: list[list[int]]


def encode_pairs(tokenizer, src_lines: Sequence[str], tgt_lines: Sequence[str], limit: int) -> Encoded:
    enc = Encoded([], [], [], [])
    for s, t in zip(src_lines, tgt_lines):
        si, sw = _truncate(*encode_words(tokenizer.encode_src, s.split()), limit)
        ti, tw = _truncate(*encode_words(tokenizer.encode_tgt, t.split()), limit)
        enc.src_ids.append(si)
        enc.src_words.append(sw)
        enc.tgt_ids.append(ti)
        enc.tgt_words.append(tw)
    return enc


def pair_attention(loaded, enc: Encoded, device) -> list[Tensor]:
    # Empty sides get a placeholder (they produce no links anyway).
    keep = [i for i in range(len(enc.src_ids)) if enc.src_ids[i] and enc.tgt_ids[i]]
    att = teacher_forced_attention(loaded.model, [enc.src_ids[i] for i in keep], [enc.tgt_ids[i] for i in keep],
                                   device)
    out = [torch.zeros(0)] * len(enc.src_ids)
    for i, a in zip(keep, att):
        out[i] = a
    return out


def check_config(cfg: AlignConfig, layers: int, heads: int) -> None:
    if cfg.layer is not None and not -layers <= cfg.layer < layers:
        raise UserError(f"--layer {cfg.layer} is out of range: the model has {layers} decoder layers")
    if cfg.head is not None and not -heads <= cfg.head < heads:
        raise UserError(f"--head {cfg.head} is out of range: the model has {heads} heads")


# Symmetrization -------------------------------------------------------------------------------
def invert(links: Iterable[Link]) -> list[Link]:
    """Links of a tgt->src model (its source = our target) in our source-target order."""
    return sorted((j, i) for i, j in links)


NEIGHBOURS = [(-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]


def _grow(alignment: set[Link], union: set[Link]) -> set[Link]:
    """Koehn's grow-diag: add union points next to (incl. diagonally) aligned points whose
    source or target word is still unaligned, until nothing changes."""
    alignment = set(alignment)
    grown = True
    while grown:
        grown = False
        for i, j in sorted(alignment):
            for di, dj in NEIGHBOURS:
                p = (i + di, j + dj)
                if p in union and p not in alignment:
                    if p[0] not in {a for a, _ in alignment} or p[1] not in {b for _, b in alignment}:
                        alignment.add(p)
                        grown = True
    return alignment


def grow_diag_final(forward: Iterable[Link], backward: Iterable[Link], final_and: bool = False) -> set[Link]:
    """Koehn et al.'s grow-diag-final(-and), both inputs as (source, target) links."""
    f, b = set(forward), set(backward)
    alignment = _grow(f & b, f | b)
    for direction in (f, b):  # final(-and): points of each direction touching an unaligned word
        for p in sorted(direction):
            if p in alignment:
                continue
            unaligned_src = p[0] not in {a for a, _ in alignment}
            unaligned_tgt = p[1] not in {c for _, c in alignment}
            if (unaligned_src and unaligned_tgt) if final_and else (unaligned_src or unaligned_tgt):
                alignment.add(p)
    return alignment


SYMMETRIZE = ("intersection", "union", "grow-diag", "grow-diag-final", "grow-diag-final-and")


def symmetrize(forward: Iterable[Link], backward: Iterable[Link], method: str) -> list[Link]:
    """Combine a source->target and a target->source alignment (both given as (source, target))."""
    f, b = set(forward), set(backward)
    if method == "intersection":
        out = f & b
    elif method == "union":
        out = f | b
    elif method == "grow-diag":
        out = _grow(f & b, f | b)
    elif method == "grow-diag-final":
        out = grow_diag_final(f, b)
    elif method == "grow-diag-final-and":
        out = grow_diag_final(f, b, final_and=True)
    else:
        raise UserError(f"--symmetrize must be one of {', '.join(SYMMETRIZE)}, not '{method}'")
    return sorted(out)


# Reading and scoring alignments ---------------------------------------------------------------
@dataclass
class GoldLine:
    sure: set[Link]
    possible: set[Link]  # includes the sure links (S ⊆ P)


def parse_links(line: str, one_based: bool = False, where: str = "") -> GoldLine:
    """`i-j` (sure) and `ipj` (possible) links -> GoldLine; 0-based unless one_based."""
    sure: set[Link] = set()
    possible: set[Link] = set()
    shift = 1 if one_based else 0
    for token in line.split():
        kind = "p" if "p" in token else "-" if "-" in token else None
        parts = token.split(kind) if kind else []
        if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
            raise UserError(f"{where}: cannot read alignment link '{token}' (expected i-j or ipj)")
        link = (int(parts[0]) - shift, int(parts[1]) - shift)
        if link[0] < 0 or link[1] < 0:
            raise UserError(f"{where}: link '{token}' has index 0 in a one-based file (drop --gold-one-based?)")
        possible.add(link)
        if kind == "-":
            sure.add(link)
    return GoldLine(sure, possible)


def read_alignment_file(path: str | Path, one_based: bool = False) -> list[GoldLine]:
    from mt.data import read_lines

    path = Path(path)
    if not path.is_file():
        raise UserError(f"alignment file not found: {path}")
    return [parse_links(line, one_based, f"{path}:{n}") for n, line in enumerate(read_lines(path), start=1)]


def flip_gold(gold: Sequence[GoldLine]) -> list[GoldLine]:
    return [GoldLine({(j, i) for i, j in g.sure}, {(j, i) for i, j in g.possible}) for g in gold]


@dataclass
class Score:
    precision: float
    recall: float
    aer: float
    hyp_links: int
    sure_links: int
    possible_links: int
    hyp_sure: int  # |A ∩ S|
    hyp_possible: int  # |A ∩ P|


def aer(gold: Sequence[GoldLine], hyp: Sequence[Iterable[Link]]) -> Score:
    """Corpus-level precision, recall and AER (Och & Ney 2003), P including S.

    precision = |A∩P| / |A|, recall = |A∩S| / |S|, AER = 1 - (|A∩S| + |A∩P|) / (|A| + |S|).
    With nothing to count (|A| = 0, |S| = 0) precision / recall are 1 and AER 0.
    """
    if len(gold) != len(hyp):
        raise UserError(f"gold has {len(gold)} sentences but the hypothesis has {len(hyp)}")
    a_total = s_total = p_total = a_s = a_p = 0
    for g, h in zip(gold, hyp):
        links = set(h)
        possible = g.possible | g.sure
        a_total += len(links)
        s_total += len(g.sure)
        p_total += len(possible)
        a_s += len(links & g.sure)
        a_p += len(links & possible)
    precision = a_p / a_total if a_total else 1.0
    recall = a_s / s_total if s_total else 1.0
    error = 1.0 - (a_s + a_p) / (a_total + s_total) if a_total + s_total else 0.0
    return Score(precision, recall, error, a_total, s_total, p_total, a_s, a_p)


def format_score(score: Score) -> str:
    return (f"precision {100 * score.precision:.2f}  recall {100 * score.recall:.2f}  AER {100 * score.aer:.2f}"
            f"  (|A| {score.hyp_links}, |S| {score.sure_links}, |P| {score.possible_links})")


# Pipelines ------------------------------------------------------------------------------------
def read_parallel(src: str, tgt: str | None) -> tuple[list[str], list[str] | None]:
    from mt.data import read_lines

    for p in (src, tgt):
        if p is not None and not Path(p).is_file():
            raise UserError(f"file not found: {p}")
    s = read_lines(Path(src))
    if tgt is None:
        return s, None
    t = read_lines(Path(tgt))
    if len(s) != len(t):
        raise UserError(f"{src} has {len(s)} lines but {tgt} has {len(t)}")
    return s, t


def _load(path: str, device):
    from mt.checkpoint import load

    return load(path, device)


def _dims(loaded) -> tuple[int, int]:
    return len(loaded.model.decoder), loaded.model.config.heads


def align_pairs(loaded, src_lines: Sequence[str], tgt_lines: Sequence[str], cfg: AlignConfig,
                device="cpu") -> list[list[Link]]:
    """Teacher-forced alignments of whitespace-tokenized pairs: one list of (src, tgt) links per pair."""
    check_config(cfg, *_dims(loaded))
    enc = encode_pairs(loaded.tokenizer, src_lines, tgt_lines, loaded.model.config.max_positions - 1)
    att = pair_attention(loaded, enc, device)
    return [links_of(a, sw, tw, cfg) if a.numel() else [] for a, sw, tw in zip(att, enc.src_words, enc.tgt_words)]


def align_translations(loaded, src_lines: Sequence[str], cfg: AlignConfig, beam: int = 5,
                       device="cpu") -> tuple[list[str], list[list[Link]]]:
    """Translate, then align each translation word (pieces grouped at `▁`) to a source word.

    Returns the translations as whitespace-separated words (the words the links index) and the links.
    """
    from mt.config import DecodeConfig
    from mt.decode import translate_ids

    check_config(cfg, *_dims(loaded))
    tok = loaded.tokenizer
    limit = loaded.model.config.max_positions - 1
    encoded = [_truncate(*encode_words(tok.encode_src, s.split()), limit) for s in src_lines]
    keep = [i for i, (ids, _) in enumerate(encoded) if ids]
    results = translate_ids(loaded.model, [encoded[i][0] for i in keep], DecodeConfig(beam_size=beam), device,
                            need_attention=True)
    texts, links = [""] * len(src_lines), [[] for _ in src_lines]
    for i, hyps in zip(keep, results):
        if not hyps:
            continue
        hyp = hyps[0]
        pieces = tok.tgt_pieces(hyp.tokens)
        tgt_words = words_of_pieces(pieces)
        # The words the links index: pieces joined at `▁` (sentencepiece's detokenization could
        # merge or split words differently, so it is not used here).
        texts[i] = " ".join(join_words(pieces, tgt_words))
        if hyp.tokens and hyp.attention is not None:
            links[i] = links_of(hyp.attention, encoded[i][1], tgt_words, cfg)
    return texts, links


def _all_links(att: Sequence[Tensor], enc: Encoded, cfg: AlignConfig) -> list[list[Link]]:
    return [links_of(a, sw, tw, cfg) if a.numel() else [] for a, sw, tw in zip(att, enc.src_words, enc.tgt_words)]


SWEEP_SYSTEMS = ("forward", "reverse", "intersection", "union", "grow-diag-final", "grow-diag-final-and")


def sweep(att: Sequence[Tensor], enc: Encoded, gold: Sequence[GoldLine], layers: int, heads: int,
          reverse: tuple[Sequence[Tensor], Encoded] | None = None) -> list[dict]:
    """AER of every layer (and mean) x head (and mean) x shift, as a list of rows.

    With `reverse` (attention and encoding of the target->source model on the swapped pairs),
    also the reverse direction and its symmetrizations with the forward one, same configuration.
    """
    rows = []
    for words, shift in itertools.product(WORDS, (True, False)):
        for layer in [*range(layers), None]:
            for head in [*range(heads), None]:
                cfg = AlignConfig(layer, head, shift, words)
                systems = {"forward": _all_links(att, enc, cfg)}
                if reverse is not None:
                    backward = [invert(x) for x in _all_links(*reverse, cfg)]
                    systems["reverse"] = backward
                    for method in SWEEP_SYSTEMS[2:]:
                        systems[method] = [symmetrize(f, r, method) for f, r in zip(systems["forward"], backward)]
                for system, hyp in systems.items():
                    rows.append({"system": system, "layer": "mean" if layer is None else layer,
                                 "head": "mean" if head is None else head, "shift": shift, "words": words,
                                 **asdict(aer(gold, hyp))})
    return rows


def sweep_table(rows: Sequence[dict], heads: int, system: str = "forward") -> str:
    """AER (%) as a table: one line per (words, shift, layer), one column per head."""
    rows = [r for r in rows if r.get("system", "forward") == system]
    columns = [*range(heads), "mean"]
    lines = ["words    shift  layer  " + "  ".join(f"{'head ' + str(h):>9}" for h in columns)]
    by_key = {(r.get("words", "sum"), r["shift"], r["layer"], r["head"]): r for r in rows}
    for words in dict.fromkeys(r.get("words", "sum") for r in rows):
        for shift in (True, False):
            for layer in sorted({r["layer"] for r in rows}, key=lambda x: (x == "mean", str(x))):
                cells = [f"{100 * by_key[(words, shift, layer, h)]['aer']:9.1f}" for h in columns]
                lines.append(f"{words:<7}  {'yes' if shift else 'no':<5}  {str(layer):<5}  " + "  ".join(cells))
    best = min(rows, key=lambda r: r["aer"])
    lines.append(f"best: layer={best['layer']} head={best['head']} shift={'yes' if best['shift'] else 'no'} "
                 f"words={best.get('words', 'sum')}  AER {100 * best['aer']:.2f} "
                 f"(precision {100 * best['precision']:.2f}, recall {100 * best['recall']:.2f})")
    return "\n".join(lines)


# Command line ----------------------------------------------------------------------------------
def _layer(value: str) -> int | None:
    if value == "mean":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer number or 'mean', got '{value}'") from None


def _show(value: int | None) -> str:
    return "mean" if value is None else str(value)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    defaults = AlignConfig()
    p.add_argument("--layer", type=_layer, default=defaults.layer,
                   help=f"decoder layer (0-based) or 'mean' (default: {_show(defaults.layer)})")
    p.add_argument("--head", type=_layer, default=defaults.head,
                   help=f"attention head or 'mean' (default: {_show(defaults.head)})")
    p.add_argument("--shift", dest="shift", action="store_true", default=defaults.shift,
                   help="read target word j at the step where it is the decoder input")
    p.add_argument("--no-shift", dest="shift", action="store_false",
                   help="read target word j at the step that predicts it")
    p.add_argument("--words", choices=WORDS, default=defaults.words,
                   help="subwords -> words: sum / max over source pieces, or subword-level links "
                        "(default: %(default)s)")


def _add_model_args(p: argparse.ArgumentParser, tgt_required: bool) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint of the source->target model")
    p.add_argument("--src", required=True, help="source file, whitespace-tokenized, one sentence per line")
    p.add_argument("--tgt", required=tgt_required,
                   help="target file (teacher forcing on it); without it, align the model's own translations")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mt.align", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("extract", help="word alignments (default subcommand)")
    _add_model_args(e, tgt_required=False)
    _add_config_args(e)
    e.add_argument("--reverse-checkpoint", help="target->source model, for symmetrization")
    e.add_argument("--symmetrize", default="grow-diag-final", choices=SYMMETRIZE,
                   help="how to combine with --reverse-checkpoint (default: %(default)s)")
    e.add_argument("--translations", help="without --tgt: write the model's translations here")
    e.add_argument("--beam", type=int, default=5, help="beam size when translating")
    e.add_argument("--output", help="write alignments here (default: standard output)")

    s = sub.add_parser("score", help="precision, recall and AER of alignments against gold")
    s.add_argument("--gold", required=True, help="gold links: i-j sure, ipj possible")
    s.add_argument("--hyp", required=True, help="hypothesis links, Pharaoh i-j, 0-based")
    s.add_argument("--gold-one-based", action="store_true", help="gold indices start at 1 (Hansards)")
    s.add_argument("--gold-reversed", action="store_true", help="gold links are target-source")
    s.add_argument("--json", help="also write the scores here")

    w = sub.add_parser("sweep", help="AER for every layer x head x shift")
    _add_model_args(w, tgt_required=True)
    w.add_argument("--gold", required=True, help="gold links: i-j sure, ipj possible")
    w.add_argument("--gold-one-based", action="store_true", help="gold indices start at 1 (Hansards)")
    w.add_argument("--gold-reversed", action="store_true",
                   help="gold links are target-source (e.g. scoring a fr->en model on en-fr gold)")
    w.add_argument("--reverse-checkpoint", help="target->source model: also sweep it and the symmetrizations")
    w.add_argument("--json", help="write the table here as JSON")

    q = sub.add_parser("plot", help="word-level attention heatmaps of chosen sentence pairs")
    _add_model_args(q, tgt_required=True)
    _add_config_args(q)
    q.add_argument("--lines", type=int, nargs="+", required=True, help="line numbers (from 1) to plot")
    q.add_argument("--gold", help="gold links to draw (squares: sure solid, possible dotted)")
    q.add_argument("--gold-one-based", action="store_true", help="gold indices start at 1 (Hansards)")
    q.add_argument("--out", default="align_{n}.png", help="output file, {n} = line number (default: %(default)s)")

    g = sub.add_parser("prepare-gold", help="write the gold sentences as plain text for training / aligning")
    g.add_argument("--gold-dir", default=str(GOLD_DIR), help="directory with hansards.src-tgt and hansards.gold")
    g.add_argument("--out", default="data/align", help="output directory (default: %(default)s)")
    return p


def _write_lines(path: str | None, lines: Iterable[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def run_extract(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    cfg = AlignConfig(args.layer, args.head, args.shift, args.words)
    src_lines, tgt_lines = read_parallel(args.src, args.tgt)
    loaded = _load(args.checkpoint, device)
    if tgt_lines is None:
        if args.reverse_checkpoint:
            raise UserError("--reverse-checkpoint needs --tgt (symmetrization aligns given pairs)")
        if not args.translations:
            raise UserError("without --tgt, give --translations FILE to keep the translations that are aligned")
        if args.beam < 1:
            raise UserError(f"--beam must be at least 1, got {args.beam}")
        texts, links = align_translations(loaded, src_lines, cfg, args.beam, device)
        _write_lines(args.translations, texts)
        _write_lines(args.output, (format_links(x) for x in links))
        return
    links = align_pairs(loaded, src_lines, tgt_lines, cfg, device)
    if args.reverse_checkpoint:
        reverse = _load(args.reverse_checkpoint, device)
        backward = align_pairs(reverse, tgt_lines, src_lines, cfg, device)
        links = [symmetrize(f, invert(b), args.symmetrize) for f, b in zip(links, backward)]
    _write_lines(args.output, (format_links(x) for x in links))


def run_score(args: argparse.Namespace) -> None:
    gold = read_alignment_file(args.gold, args.gold_one_based)
    if args.gold_reversed:
        gold = flip_gold(gold)
    hyp_lines = read_alignment_file(args.hyp)
    if len(gold) != len(hyp_lines):
        raise UserError(f"{args.gold} has {len(gold)} lines but {args.hyp} has {len(hyp_lines)}")
    score = aer(gold, [h.possible for h in hyp_lines])
    print(format_score(score))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(score), indent=2) + "\n", encoding="utf-8")


def run_sweep(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    src_lines, tgt_lines = read_parallel(args.src, args.tgt)
    assert tgt_lines is not None
    gold = read_alignment_file(args.gold, args.gold_one_based)
    if args.gold_reversed:
        gold = flip_gold(gold)
    if len(gold) != len(src_lines):
        raise UserError(f"{args.gold} has {len(gold)} lines but {args.src} has {len(src_lines)}")
    loaded = _load(args.checkpoint, device)
    layers, heads = _dims(loaded)
    enc = encode_pairs(loaded.tokenizer, src_lines, tgt_lines, loaded.model.config.max_positions - 1)
    att = pair_attention(loaded, enc, device)
    reverse = None
    if args.reverse_checkpoint:
        rev = _load(args.reverse_checkpoint, device)
        if _dims(rev) != (layers, heads):
            raise UserError(f"--reverse-checkpoint has {_dims(rev)} decoder layers/heads, the forward model "
                            f"{(layers, heads)}: the sweep pairs them configuration by configuration")
        rev_enc = encode_pairs(rev.tokenizer, tgt_lines, src_lines, rev.model.config.max_positions - 1)
        reverse = (pair_attention(rev, rev_enc, device), rev_enc)
    rows = sweep(att, enc, gold, layers, heads, reverse)
    systems = list(dict.fromkeys(r["system"] for r in rows))
    for system in systems:
        name = {"forward": args.checkpoint, "reverse": args.reverse_checkpoint}.get(system, system)
        print(f"AER (%) of {name} on {args.gold}, {len(gold)} sentence pairs (teacher-forced, argmax per "
              f"target word{'' if system == 'forward' else ', per direction'})")
        print(sweep_table(rows, heads, system) + "\n")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {"checkpoint": args.checkpoint, "reverse_checkpoint": args.reverse_checkpoint, "gold": args.gold,
             "sentences": len(gold), "rows": rows}, indent=2) + "\n", encoding="utf-8")


def run_plot(args: argparse.Namespace) -> None:
    """Word-level attention heatmaps of chosen pairs, gold links (squares) and argmax links (dots)."""
    from matplotlib.patches import Rectangle

    from mt.plot import heatmap, save

    device = pick_device(args.device)
    src_lines, tgt_lines = read_parallel(args.src, args.tgt)
    assert tgt_lines is not None
    gold = read_alignment_file(args.gold, args.gold_one_based) if args.gold else None
    loaded = _load(args.checkpoint, device)
    cfg = AlignConfig(args.layer, args.head, args.shift, args.words)
    check_config(cfg, *_dims(loaded))
    for n in args.lines:
        if not 1 <= n <= len(src_lines):
            raise UserError(f"--lines {n}: {args.src} has {len(src_lines)} lines (numbered from 1)")
        src_words, tgt_words = src_lines[n - 1].split(), tgt_lines[n - 1].split()
        enc = encode_pairs(loaded.tokenizer, [src_lines[n - 1]], [tgt_lines[n - 1]],
                           loaded.model.config.max_positions - 1)
        att = pair_attention(loaded, enc, device)[0]
        if not att.numel():
            raise UserError(f"line {n} has an empty side")
        matrix = word_matrix(att, enc.src_words[0], enc.tgt_words[0], cfg)
        fig = heatmap(matrix, src_words[: matrix.size(1)], tgt_words[: matrix.size(0)],
                      f"line {n}: {cfg.name()}")
        ax = fig.axes[0]
        if gold is not None:
            g = gold[n - 1]
            for links, style in ((g.possible - g.sure, ":"), (g.sure, "-")):
                for i, j in links:
                    ax.add_patch(Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, edgecolor="white",
                                           linestyle=style, linewidth=1.2))
        for i, j in links_of(att, enc.src_words[0], enc.tgt_words[0], cfg):
            ax.plot(i, j, "o", color="red", markersize=3)
        path = Path(args.out.format(n=n))
        path.parent.mkdir(parents=True, exist_ok=True)
        save(fig, str(path))
        print(f"wrote {path}")


def read_gold_pairs(path: Path) -> tuple[list[str], list[str]]:
    """`source ||| target` lines -> whitespace-normalized source and target sentences."""
    from mt.data import read_lines

    if not path.is_file():
        raise UserError(f"gold sentence file not found: {path}")
    src, tgt = [], []
    for n, line in enumerate(read_lines(path), start=1):
        parts = line.split("|||")
        if len(parts) != 2:
            raise UserError(f"{path}:{n}: expected 'source ||| target'")
        src.append(" ".join(parts[0].split()))
        tgt.append(" ".join(parts[1].split()))
    return src, tgt


def run_prepare_gold(args: argparse.Namespace) -> None:
    gold_dir, out = Path(args.gold_dir), Path(args.out)
    en, fr = read_gold_pairs(gold_dir / "hansards.src-tgt")
    _write_lines(str(out / "hansards.en"), en)
    _write_lines(str(out / "hansards.fr"), fr)
    print(f"wrote {len(en)} pairs to {out}/hansards.en and {out}/hansards.fr; "
          f"gold links: {gold_dir / 'hansards.gold'} (one-based)")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "extract")  # `python -m mt.align --checkpoint ...` means extract
    args = build_parser().parse_args(argv)
    with exit_on_user_error("mt.align"):
        if getattr(args, "threads", 0) > 0:
            torch.set_num_threads(args.threads)
        {"extract": run_extract, "score": run_score, "sweep": run_sweep,
         "prepare-gold": run_prepare_gold, "plot": run_plot}[args.command](args)


if __name__ == "__main__":
    main()
