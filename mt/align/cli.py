"""Word alignments from a model's cross-attention, and alignment error rate (AER) against gold.

    python -m mt.align --checkpoint CKPT --src FILE --tgt FILE [--layer N|mean] [--head N|mean]
                       [--no-shift] [--links argmax|mutual]
                       [--reverse-checkpoint CKPT2 --symmetrize grow-diag-final|mutual-of-mean] > out.align
    python -m mt.align --checkpoint CKPT --src FILE --translations OUT      # align own translations
    python -m mt.align score --gold G --hyp H [--gold-one-based]
    python -m mt.align sweep --checkpoint CKPT --src FILE --tgt FILE --gold G [--gold-one-based] [--json F] [--save]
    python -m mt.align prepare-gold --out data/align
    python -m mt.align plot --checkpoint CKPT --src FILE --tgt FILE --lines 5 9 --gold G --out 'img/{n}.png'

Alignments are Pharaoh `i-j` (0-based, source word - target word), one line per sentence pair.
Source and target files are whitespace-tokenized: every whitespace token is one word, and
subword pieces are mapped back to those words (pieces of a word are encoded word by word).
The model's own translations (--translations) are split into word units instead, punctuation
at a word's ends being a word of its own, on both sides (--source-words writes the source's).
Without --layer/--head/--shift, a checkpoint is read with the aligning heads it records
(trained with train.align_weight, or saved by `sweep --save`), else the mean of all of them.
`--links argmax` links every target word; `--links mutual` only words whose row and column
maxima agree (unclear words stay unaligned: higher precision, docs/alignment.md measures both).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from mt.align.experiment import best_recordable, heads_record, pair_figures, sweep, sweep_table
from mt.align.extract import (
    LINKS,
    WORDS,
    AlignConfig,
    align_config_for,
    align_translations,
    all_alignments,
    check_config,
    config_of_record,
    encode_pairs,
    encode_units,
    format_links,
    model_dims,
    pair_attention,
    pairs_attention,
    source_limit,
)
from mt.align.gold import (
    GoldLine,
    aer,
    check_gold_ranges,
    flip_gold,
    format_score,
    read_alignment_file,
    read_gold_pairs,
    require_gold_links,
)
from mt.align.symmetrize import MUTUAL_OF_MEAN, SYMMETRIZE, invert, mutual_of_mean, symmetrize
from mt.cli import (
    CommandParser,
    HelpFormatter,
    add_decode_args,
    add_device_args,
    add_heads_args,
    align_options,
    command_parser,
    decode_config,
    progress_bar,
    setup_device,
)
from mt.errors import UserError, exit_on_user_error
from mt.fileio import (
    atomic_output,
    atomic_torch_save,
    check_writable,
    json_text,
    read_lines,
    refuse_output_over_input,
)
from mt.model_folder import is_model_folder
from mt.paths import ALIGNMENT_GOLD
from mt.rundir import model_file


def _add_config_args(p: argparse.ArgumentParser) -> None:
    add_heads_args(p)
    p.add_argument(
        "--shift",
        dest="shift",
        action="store_true",
        default=argparse.SUPPRESS,
        help="read target word j at the step where it is the decoder input",
    )
    p.add_argument(
        "--no-shift",
        dest="shift",
        action="store_false",
        default=argparse.SUPPRESS,
        help="read target word j at the step that predicts it (default: as recorded, else no shift)",
    )
    p.add_argument(
        "--words",
        choices=WORDS,
        default=argparse.SUPPRESS,
        help="subwords -> words: sum / max over source pieces, or subword-level links "
        f"(default: {AlignConfig().words})",
    )
    p.add_argument(
        "--links",
        choices=LINKS,
        default=argparse.SUPPRESS,
        help="argmax: link every target word to its row maximum; mutual: only cells that are the maximum of "
        f"their row and column, so unclear words stay unaligned (default: {AlignConfig().links})",
    )


def _config(args: argparse.Namespace, loaded) -> AlignConfig:
    """The options given over the checkpoint's own default (align_config_for), checked against the model."""
    cfg = align_config_for(loaded.ckpt, **align_options(args))
    check_config(cfg, *model_dims(loaded))
    return cfg


def _say_config(name: str, cfg: AlignConfig) -> None:
    print(f"mt.align: {name}: links from {cfg.describe()}, words {cfg.words}, link rule {cfg.links}", file=sys.stderr)


def _add_model_args(p: argparse.ArgumentParser, tgt_required: bool) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint of the source->target model")
    p.add_argument("--src", required=True, help="source file, whitespace-tokenized, one sentence per line")
    p.add_argument(
        "--tgt",
        required=tgt_required,
        help="target file (teacher forcing on it); without it, align the model's own translations",
    )
    add_device_args(p)


class _SubParser(CommandParser):
    def __init__(self, **kwargs) -> None:  # subcommands state their defaults like the main parser
        super().__init__(**{**kwargs, "formatter_class": HelpFormatter})


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m mt.align", __doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_SubParser)

    e = sub.add_parser("extract", help="word alignments (default subcommand)")
    _add_model_args(e, tgt_required=False)
    _add_config_args(e)
    e.add_argument("--reverse-checkpoint", help="target->source model, for symmetrization")
    e.add_argument(
        "--symmetrize",
        default="grow-diag-final",
        choices=(*SYMMETRIZE, MUTUAL_OF_MEAN),
        help=f"how to combine with --reverse-checkpoint: the links of both ({', '.join(SYMMETRIZE)}), or "
        f"{MUTUAL_OF_MEAN}: the mutual links of both word matrices averaged, whatever --links says "
        "(default: %(default)s)",
    )
    e.add_argument(
        "--translations", help="without --tgt: write the model's translations here (word units: `Eiscreme .`)"
    )
    e.add_argument(
        "--source-words",
        help="with --translations: also write the source word units the links index (punctuation at a word's "
        "ends split off; the same as the whitespace tokens of tokenized text)",
    )
    add_decode_args(e)  # --beam, --alpha, --max-tokens: decoding the translations (without --tgt)
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
    w.add_argument(
        "--gold-reversed",
        action="store_true",
        help="gold links are target-source (e.g. scoring a fr->en model on en-fr gold)",
    )
    w.add_argument("--reverse-checkpoint", help="target->source model: also sweep it and the symmetrizations")
    w.add_argument("--json", help="write the table here as JSON")
    w.add_argument(
        "--save",
        action="store_true",
        help="write the best single-layer cell (lowest AER, --words max) into --checkpoint as the heads "
        "mt.align, mt.translate and mt.serve read by default",
    )
    w.add_argument("--force", action="store_true", help="with --save: replace supervised (trained) aligning heads")

    q = sub.add_parser("plot", help="word-level attention heatmaps of chosen sentence pairs")
    _add_model_args(q, tgt_required=True)
    _add_config_args(q)
    q.add_argument("--lines", type=int, nargs="+", required=True, help="line numbers (from 1) to plot")
    q.add_argument("--gold", help="gold links to draw (squares: sure solid, possible dotted)")
    q.add_argument("--gold-one-based", action="store_true", help="gold indices start at 1 (Hansards)")
    q.add_argument(
        "--out",
        default="align_{n}.png",
        help="output file, {n} = line number (needed with several --lines; default: %(default)s)",
    )

    g = sub.add_parser(
        "prepare-gold",
        formatter_class=HelpFormatter,
        help="write the gold sentences as plain text for training / aligning",
    )
    g.add_argument("--gold-dir", default=str(ALIGNMENT_GOLD), help="directory with hansards.src-tgt and hansards.gold")
    g.add_argument("--out", default="data/align", help="output directory (default: %(default)s)")
    return p


def read_parallel(src: str, tgt: str | None) -> tuple[list[str], list[str] | None]:
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


def _read_gold(args: argparse.Namespace, pairs: tuple[Sequence[str], Sequence[str]] | None = None) -> list[GoldLine]:
    """--gold as source-target links; given the sentence pairs (src, tgt), one gold line per pair
    and every link inside its pair's words (a link outside could never be matched)."""
    reversed_ = getattr(args, "gold_reversed", False)
    gold = read_alignment_file(args.gold, args.gold_one_based)
    gold = flip_gold(gold) if reversed_ else gold
    if pairs is not None:
        _same_length(gold, args, args.src, len(pairs[0]))
        check_gold_ranges(gold, args.gold, *pairs, args.gold_one_based, reversed_)
    return gold


def _same_length(gold: list[GoldLine], args: argparse.Namespace, other: str, lines: int) -> None:
    if len(gold) != lines:
        raise UserError(f"{args.gold} has {len(gold)} lines but {other} has {lines}")


def _load(path: str, device):
    from mt.checkpoint import load

    return load(path, device)


def _refuse_clashes(outputs: Iterable[tuple[str, str | Path | None]], inputs: Iterable[str | Path | None]) -> None:
    """No output may replace one of the command's inputs, nor another output (the last would win)."""
    inputs = list(inputs)
    seen: dict[Path, str] = {}
    for option, path in outputs:
        if not path:
            continue
        refuse_output_over_input(path, inputs, option)
        key = Path(path).resolve()
        if key in seen:
            raise UserError(f"{option} {path} is also {seen[key]}: give each output a file of its own")
        seen[key] = option


@contextmanager
def _output(path: str | Path | None) -> Iterator[TextIO | None]:
    """`path` opened (atomic_output) before the work that fills it, so that an unwritable path is
    refused at once rather than after the model has run; None (no such option given) stays None."""
    if not path:
        yield None
        return
    with atomic_output(path) as handle:
        yield handle


def _write_lines(handle: TextIO | None, lines: Iterable[str]) -> None:
    """Lines to an opened output, or to standard output without one."""
    text = "".join(line + "\n" for line in lines)
    out = sys.stdout if handle is None else handle
    out.write(text)
    out.flush()


def _write_json(handle: TextIO, obj: Any) -> None:
    handle.write(json_text(obj))


def run_extract(args: argparse.Namespace) -> None:
    device = setup_device(args)
    src_lines, tgt_lines = read_parallel(args.src, args.tgt)
    inputs = (args.src, args.tgt, args.checkpoint, args.reverse_checkpoint)
    if tgt_lines is None:
        if args.reverse_checkpoint:
            raise UserError("--reverse-checkpoint needs --tgt (symmetrization aligns given pairs)")
        if not args.translations:
            raise UserError("without --tgt, give --translations FILE to keep the translations that are aligned")
        decode = decode_config(args)
        outputs = {"--translations": args.translations, "--source-words": args.source_words, "--output": args.output}
        _refuse_clashes(outputs.items(), inputs)
        with ExitStack() as stack:
            texts_out, words_out, links_out = (stack.enter_context(_output(path)) for path in outputs.values())
            _extract_translations(args, src_lines, decode, device, texts_out, words_out, links_out)
        return
    if args.source_words:
        raise UserError("--source-words goes with --translations (given pairs keep their own words)")
    if args.translations:
        raise UserError("--translations goes without --tgt (with --tgt, the given target is aligned)")
    _refuse_clashes([("--output", args.output)], inputs)
    with _output(args.output) as links_out:
        _extract_pairs(args, src_lines, tgt_lines, device, links_out)


def _extract_translations(
    args: argparse.Namespace,
    src_lines: list[str],
    decode,
    device,
    texts_out: TextIO | None,
    words_out: TextIO | None,
    links_out: TextIO | None,
) -> None:
    """Translate, align the translations, write them, the source words (--source-words) and the links."""
    loaded = _load(args.checkpoint, device)
    cfg = _config(args, loaded)
    _say_config(args.checkpoint, cfg)
    with progress_bar(len(src_lines), "sent", "translating and aligning") as bar:
        texts, links = align_translations(loaded, src_lines, cfg, decode, device, on_batch=bar.update)
    _write_lines(texts_out, texts)
    if words_out is not None:
        units = encode_units(loaded.tokenizer, [line.split() for line in src_lines])
        _write_lines(words_out, (" ".join(u.words) for u in units))
    _write_lines(links_out, (format_links(x) for x in links))


def _extract_pairs(
    args: argparse.Namespace, src_lines: list[str], tgt_lines: list[str], device, links_out: TextIO | None
) -> None:
    """Align the given pairs (symmetrized with --reverse-checkpoint) and write the links."""
    loaded = _load(args.checkpoint, device)
    cfg = _config(args, loaded)
    if args.reverse_checkpoint and args.symmetrize == MUTUAL_OF_MEAN and cfg.words == "subword":
        raise UserError(f"--symmetrize {MUTUAL_OF_MEAN} links word matrices: use --words sum or max with it")
    _say_config(args.checkpoint, cfg)
    with progress_bar(len(src_lines), "pair", "aligning") as bar:
        forward = all_alignments(*pairs_attention(loaded, src_lines, tgt_lines, cfg, device, bar.update), cfg)
    links = [w.links for w in forward]
    if args.reverse_checkpoint:
        reverse = _load(args.reverse_checkpoint, device)
        rev_cfg = _config(args, reverse)
        _say_config(args.reverse_checkpoint, rev_cfg)
        with progress_bar(len(src_lines), "pair", "aligning the reverse direction") as bar:
            backward = all_alignments(
                *pairs_attention(reverse, tgt_lines, src_lines, rev_cfg, device, bar.update), rev_cfg
            )
        if args.symmetrize == MUTUAL_OF_MEAN:
            links = [mutual_of_mean(f.matrix, b.matrix) for f, b in zip(forward, backward)]
        else:
            links = [symmetrize(f, invert(b.links), args.symmetrize) for f, b in zip(links, backward)]
    _write_lines(links_out, (format_links(x) for x in links))


def run_score(args: argparse.Namespace) -> None:
    gold = _read_gold(args)
    hyp_lines = read_alignment_file(args.hyp)
    _same_length(gold, args, args.hyp, len(hyp_lines))
    require_gold_links(gold, args.gold)
    _refuse_clashes([("--json", args.json)], (args.gold, args.hyp))
    with _output(args.json) as json_out:
        score = aer(gold, [h.possible for h in hyp_lines])
        print(format_score(score))
        if json_out is not None:
            _write_json(json_out, asdict(score))


def run_sweep(args: argparse.Namespace) -> None:
    device = setup_device(args)
    src_lines, tgt_lines = read_parallel(args.src, args.tgt)
    assert tgt_lines is not None
    gold = _read_gold(args, (src_lines, tgt_lines))
    require_gold_links(gold, args.gold)
    if args.force and not args.save:
        raise UserError("--force goes with --save")
    given = Path(args.checkpoint)
    if args.save and is_model_folder(given):
        raise UserError(
            f"--save records the heads in a .pt model file; {given} is an exported model folder: sweep the "
            "checkpoint it was exported from, then export it again"
        )
    inputs = (args.src, args.tgt, args.gold, args.checkpoint, args.reverse_checkpoint)
    _refuse_clashes([("--json", args.json)], inputs)
    stamp = file_stamp(model_file(given)) if given.exists() else (0, 0)  # --save: was it rewritten meanwhile?
    with _output(args.json) as json_out:  # opened now: an unwritable --json is refused before the sweep
        loaded = _load(args.checkpoint, device)
        path = model_file(given)
        if args.save:
            refuse_to_replace(loaded.ckpt, path, args.force)
        heads = model_dims(loaded)[1]
        # The attention is read as the checkpoint says (a full-context model without its causal mask).
        full_context = align_config_for(loaded.ckpt).full_context
        rows = _sweep_rows(args, loaded, src_lines, tgt_lines, gold, device, full_context)
        for system in dict.fromkeys(r["system"] for r in rows):
            name = {"forward": args.checkpoint, "reverse": args.reverse_checkpoint}.get(system, system)
            context = ", full context" if full_context and system == "forward" else ""
            print(
                f"AER (%) of {name} on {args.gold}, {len(gold)} sentence pairs (teacher-forced{context}, argmax per "
                f"target word{'' if system == 'forward' else ', per direction'})"
            )
            print(sweep_table(rows, heads, system) + "\n")
        if json_out is not None:
            runs = {"checkpoint": args.checkpoint, "reverse_checkpoint": args.reverse_checkpoint, "gold": args.gold}
            _write_json(json_out, {**runs, "sentences": len(gold), "rows": rows})
    if args.save:
        save_best(rows, heads, full_context, loaded.ckpt, path, stamp)


def _sweep_rows(
    args: argparse.Namespace,
    loaded,
    src_lines: list[str],
    tgt_lines: list[str],
    gold: list[GoldLine],
    device,
    full_context: bool,
) -> list[dict]:
    """The attention of every pair (and of the reverse model on the swapped pairs), then the sweep's rows."""
    layers, heads = model_dims(loaded)
    enc = encode_pairs(loaded.tokenizer, src_lines, tgt_lines, source_limit(loaded))
    with progress_bar(len(src_lines), "pair", "attention") as bar:
        att = pair_attention(loaded, enc, device, bar.update, full_context)
    reverse = None
    if args.reverse_checkpoint:
        rev = _load(args.reverse_checkpoint, device)
        if model_dims(rev) != (layers, heads):
            raise UserError(
                f"--reverse-checkpoint has {model_dims(rev)} decoder layers/heads, the forward model "
                f"{(layers, heads)}: the sweep pairs them configuration by configuration"
            )
        rev_enc = encode_pairs(rev.tokenizer, tgt_lines, src_lines, source_limit(rev))
        reverse = (pair_attention(rev, rev_enc, device, full_context=align_config_for(rev.ckpt).full_context), rev_enc)
    return sweep(att, enc, gold, layers, heads, reverse)


def refuse_to_replace(ckpt, path: Path, force: bool) -> None:
    """--save keeps trained aligning heads unless --force: a sweep measures them, it does not retrain them."""
    record = ckpt.get("alignment")
    if record and record.get("source") == "supervised" and not force:
        raise UserError(
            f"{path} records the aligning heads it was trained with, {config_of_record(record).describe()}; "
            "--save would replace them with the sweep's best cell: add --force to do so"
        )


def save_best(rows: list[dict], heads: int, full_context: bool, ckpt, path: Path, stamp: tuple[int, int]) -> None:
    """Write the best recordable cell into the checkpoint's "alignment" record (atomically), and
    say what was written and whether an unrecordable cell (mean of layers, other pooling) was better."""
    words = AlignConfig().words
    best = best_recordable(rows, words)
    if best is None:
        raise UserError("the sweep has no single-layer cell to save")
    record = heads_record(best, heads, full_context)
    if file_stamp(path) != stamp:
        raise UserError(f"{path} changed while the sweep ran (a training run saving it?); nothing saved, sweep again")
    atomic_torch_save(path, {**ckpt, "alignment": record})
    print(f"saved to {path}: links from {config_of_record(record).describe()}, AER {100 * best['aer']:.1f} %")
    overall = min((r for r in rows if r["system"] == "forward"), key=lambda r: r["aer"])
    if overall["aer"] < best["aer"]:
        print(
            f"(the best cell overall, layer={overall['layer']} head={overall['head']} words={overall['words']}, "
            f"AER {100 * overall['aer']:.1f} %, cannot be recorded: a record names one layer and is read with "
            f"--words {words}; pass its options to mt.align to use it)"
        )


def file_stamp(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    return info.st_mtime_ns, info.st_size


def run_plot(args: argparse.Namespace) -> None:
    """Word-level attention heatmaps of chosen pairs, gold links (squares) and links (dots)."""
    from mt.plot import image_format, save

    device = setup_device(args)
    src_lines, tgt_lines = read_parallel(args.src, args.tgt)
    assert tgt_lines is not None
    numbers = list(dict.fromkeys(args.lines))  # a line asked for twice is plotted once
    for n in numbers:
        if not 1 <= n <= len(src_lines):
            raise UserError(f"--lines {n}: {args.src} has {len(src_lines)} lines (numbered from 1)")
    paths = _plot_paths(args.out, numbers)
    for path in paths.values():
        image_format(path)  # an unknown extension is refused before any work
    gold = _read_gold(args, (src_lines, tgt_lines)) if args.gold else None
    _refuse_clashes((("--out", path) for path in paths.values()), (args.src, args.tgt, args.gold, args.checkpoint))
    for path in paths.values():  # before the model runs; each image is then written as it is drawn
        check_writable(path)
    loaded = _load(args.checkpoint, device)
    cfg = _config(args, loaded)
    for n, fig in pair_figures(loaded, src_lines, tgt_lines, numbers, cfg, gold, device):
        save(fig, paths[n])
        print(f"wrote {paths[n]}")


def _plot_paths(out: str, numbers: Sequence[int]) -> dict[int, str]:
    """--out for each line number, {n} being the number: one file per line, never one for several."""
    try:
        paths = {n: out.format(n=n) for n in numbers}
    except (KeyError, IndexError, ValueError, AttributeError):
        raise UserError(f"--out {out}: the only field it may have in braces is {{n}}, the line number") from None
    if len(set(paths.values())) < len(paths):
        raise UserError(
            f"--out {out} names one file for {len(paths)} lines: put {{n}} (the line number) in it, "
            "e.g. 'img/align_{n}.png'"
        )
    return paths


def run_prepare_gold(args: argparse.Namespace) -> None:
    gold_dir, out = Path(args.gold_dir), Path(args.out)
    sentences = gold_dir / "hansards.src-tgt"
    en, fr = read_gold_pairs(sentences)
    if out.exists() and not out.is_dir():
        raise UserError(f"cannot write {out}: it is a file, and --out names a directory")
    en_path, fr_path = out / "hansards.en", out / "hansards.fr"
    _refuse_clashes([("--out", en_path), ("--out", fr_path)], (sentences, gold_dir / "hansards.gold"))
    with atomic_output(en_path) as en_out, atomic_output(fr_path) as fr_out:
        _write_lines(en_out, en)
        _write_lines(fr_out, fr)
    print(f"wrote {len(en)} pairs to {en_path} and {fr_path}; gold links: {gold_dir / 'hansards.gold'} (one-based)")


COMMANDS = {
    "extract": run_extract,
    "score": run_score,
    "sweep": run_sweep,
    "prepare-gold": run_prepare_gold,
    "plot": run_plot,
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "extract")  # `python -m mt.align --checkpoint ...` means extract
    args = build_parser().parse_args(argv)
    with exit_on_user_error("mt.align"):
        COMMANDS[args.command](args)
