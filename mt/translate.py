"""Translate text with a trained checkpoint: each argument, each line of a file or of standard
input, or each sentence typed at the prompt becomes one line of output (or one JSON object).
--show-attention adds the word-level cross-attention and its alignment (from the aligning heads
the checkpoint records, else the mean of all; --layer/--head choose others); --plot draws every head.

    python -m mt.translate "I like eating ice cream" "Two dogs play in the snow."
    python -m mt.translate --show-attention --plot attn.png "A dog runs in the park."
    cat sentences.en | python -m mt.translate --beam 5 > sentences.de
    python -m mt.translate --interactive
    python -m mt.translate --engine ct2 --model exports/m "A dog runs."   # a CTranslate2 export (mt.export)

Without --checkpoint: best.pt of the newest finished run under outputs/ (said on stderr).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mt.cli import (
    add_decode_args,
    add_device_args,
    add_engine_args,
    add_heads_args,
    align_options,
    command_parser,
    decode_config,
    engine_model,
    progress_bar,
    setup_device,
    threads_option,
)
from mt.config import DecodeConfig
from mt.errors import UserError, exit_on_user_error
from mt.fileio import atomic_output, refuse_output_over_input
from mt.rundir import checkpoint_to_use


def clean(line: str) -> str:
    """Control characters (NUL, escape codes...) and byte-order marks (a file saved "with BOM")
    become spaces; whitespace is collapsed."""
    return " ".join("".join(" " if unicodedata.category(ch) == "Cc" or ch == "\ufeff" else ch for ch in line).split())


def read_stream(stream, name: str) -> Iterator[str]:
    """Lines of a byte stream; invalid UTF-8 is a user error naming the line."""
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            raise UserError(f"{name} line {number} is not valid UTF-8 (byte {err.start}: {err.reason})") from None


def chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class Source:
    """One input line as the model reads it: its whitespace words, piece ids (cut to the model's
    limit), and its word units (mt.align.extract.encode_units: words encoded word by word, the
    punctuation at a word's ends a unit of its own) with the unit of each piece."""

    words: list[str]
    ids: list[int]
    unit_ids: list[int]
    units: list[str]


class Translator:
    def __init__(
        self,
        checkpoint: Path,
        device,
        decode: DecodeConfig,
        attention: bool,
        align_options: Mapping[str, Any] | None = None,
    ):
        """`align_options`: AlignConfig fields set by the user over the checkpoint's own (its
        recorded aligning heads, else the default; mt.align.extract.align_config_for)."""
        from mt.align.extract import align_config_for, check_config, model_dims
        from mt.checkpoint import load

        self.loaded = load(checkpoint, device)
        self.tokenizer = self.loaded.tokenizer
        self.src_lang, self.tgt_lang = self.loaded.src_lang, self.loaded.tgt_lang
        self.device = device
        self.cfg = decode
        self.attention = attention
        self.limit = self.loaded.model.config.max_positions - 1
        self.align = align_config_for(self.loaded.ckpt, **(align_options or {}))
        check_config(self.align, *model_dims(self.loaded))

    def decode_ids(self, src_ids: list[list[int]], decode: DecodeConfig, attention: bool) -> list[list]:
        """n-best Hypothesis lists of these sources (with attention if asked)."""
        from mt.decode import translate_ids

        return translate_ids(self.loaded.model, src_ids, decode, self.device, attention)

    def translate(self, lines: list[str], decode: DecodeConfig | None = None) -> tuple[list[Source], list[list]]:
        """Sources and hypotheses (n-best) per line, with `decode` or the translator's settings;
        lines with nothing to read (empty, or only characters the tokenizer drops) give none.
        With attention, the best hypothesis carries the attention its alignment is read from
        (for a full-context AlignConfig, a teacher-forced pass over it: `reread_best`)."""
        from mt.align.extract import encode_units, reread_best

        words = [clean(line).split() for line in lines]
        sources = []
        for number, (ws, units) in enumerate(zip(words, encode_units(self.tokenizer, words)), start=1):
            if len(units.ids) > self.limit:
                print(
                    f"mt.translate: warning: input {number} has {len(units.ids)} tokens; translating its first "
                    f"{self.limit} (the model's limit)",
                    file=sys.stderr,
                )
            sources.append(Source(ws, units.ids[: self.limit], units.unit_ids[: self.limit], units.words))
        todo = [i for i, source in enumerate(sources) if source.ids]
        src_ids = [sources[i].ids for i in todo]
        decoded_attention = self.attention and not self.align.full_context
        hyps = self.decode_ids(src_ids, decode or self.cfg, decoded_attention)
        if self.attention:
            hyps = reread_best(self.loaded.model, src_ids, hyps, self.align, self.device)
        out: list[list] = [[] for _ in lines]
        for i, h in zip(todo, hyps):
            out[i] = h
        return sources, out

    def detok(self, tokens: list[int]) -> str:
        return self.tokenizer.decode_tgt([tokens])[0]


class CT2Translator(Translator):
    """--engine ct2: the same sources and output through a CTranslate2 export (mt.ct2); no attention."""

    def __init__(self, model: Path, device: str, threads: int, decode: DecodeConfig):
        from mt.ct2 import load_ct2

        self.ct2 = load_ct2(model, device, threads)
        self.tokenizer = self.ct2.tokenizer
        self.src_lang, self.tgt_lang = self.ct2.src_lang, self.ct2.tgt_lang
        self.cfg = decode
        self.attention = False
        self.limit = self.ct2.max_positions - 1

    def decode_ids(self, src_ids: list[list[int]], decode: DecodeConfig, attention: bool) -> list[list]:
        from mt.ct2 import translate_ids

        return translate_ids(self.ct2, src_ids, decode)


def write_results(
    translator: Translator, lines: list[str], out: TextIO, args: argparse.Namespace, offset: int = 0
) -> None:
    sources, results = translator.translate(lines)
    for k, (source, hyps) in enumerate(zip(sources, results)):
        if args.format == "json":
            write_json(translator, source, hyps, args, out, offset + k + 1)
            continue
        if not hyps:
            out.write("\n")
            continue
        if args.n_best > 1:
            for h in hyps:
                out.write(f"{offset + k} ||| {translator.detok(h.tokens)} ||| {h.score:.4f}\n")
        else:
            out.write(translator.detok(hyps[0].tokens) + "\n")
        if args.show_attention or args.plot:
            show_attention(translator, source, hyps[0], args, out, offset + k + 1)
    if args.plot:
        for k, hyps in enumerate(results):
            if not hyps:
                print(f"mt.translate: line {offset + k + 1} is empty: no plot", file=sys.stderr)
    out.flush()


def write_json(
    translator: Translator, source: Source, hyps: list, args: argparse.Namespace, out: TextIO, number: int
) -> None:
    """--format json: one object per input line, built as mt.serve builds its answers (with the
    word attention matrices under --show-attention)."""
    import json

    from mt.serve.results import translation_result

    tok = translator.loaded.tokenizer
    result = translation_result(tok, source, hyps, translator.align, attention=args.show_attention)
    out.write(json.dumps(result, ensure_ascii=False) + "\n")
    if args.plot and hyps:
        show_attention(translator, source, hyps[0], args, out, number)


def show_attention(
    translator: Translator, source: Source, hyp, args: argparse.Namespace, out: TextIO, number: int
) -> None:
    """--show-attention: the word matrix and links of mt.align's one path (`align_hypothesis`,
    the checkpoint's AlignConfig), exactly what `python -m mt.align --translations` gives for this
    line; --plot: the same words' attention for every layer and head, in one figure (input line
    `number` is the file name's {n})."""
    from mt.align.extract import align_hypothesis, attention_grid_text

    aligned = align_hypothesis(translator.loaded.tokenizer, source.units, source.unit_ids, hyp, translator.align)
    if args.show_attention and args.format == "text":  # json: the matrices are in the object
        src_words, tgt_words = aligned.src_words, aligned.tgt_words
        out.write(f"cross-attention of {translator.align.describe()}, % of each row, * = link\n")
        out.write(attention_grid_text(aligned.matrix, src_words, tgt_words, aligned.links) + "\n")
        out.write("alignment: " + "  ".join(f"{src_words[i]}->{tgt_words[j]}" for i, j in aligned.links) + "\n")
    if args.plot:
        from mt.plot import save

        path = args.plot.replace("{n}", str(number))
        save(plot_words(translator, source, hyp, aligned), path)
        print(f"mt.translate: attention heatmap written to {path}", file=sys.stderr)


def plot_words(translator: Translator, source: Source, hyp, aligned):
    """--plot: word-level attention of every layer (rows) and head, each layer's head mean, and
    the matrix the links are read from (first row); the translation is the title."""
    from dataclasses import replace

    from mt.align.extract import align_hypothesis, model_dims
    from mt.plot import attention_grid

    layers, heads = model_dims(translator.loaded)
    tok, cfg = translator.loaded.tokenizer, translator.align

    def words(layer: int, head: int | None):
        return align_hypothesis(tok, source.units, source.unit_ids, hyp, replace(cfg, layer=layer, head=head)).matrix

    panels = [[(f"links: {cfg.describe()}", aligned.matrix)]]
    for layer in range(layers):
        row = [(f"layer {layer} head {head}", words(layer, head)) for head in range(heads)]
        panels.append([*row, (f"layer {layer} mean", words(layer, None))])
    return attention_grid(panels, aligned.src_words, aligned.tgt_words, translator.detok(hyp.tokens))


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m mt.translate", __doc__)
    p.add_argument(
        "text", nargs="*", help="texts to translate, one output line each (quote each sentence); none: standard input"
    )
    p.add_argument(
        "--checkpoint",
        help="a .pt file, a run folder or an exported model folder (default: the newest finished run under outputs/)",
    )
    add_engine_args(p)
    p.add_argument("--input", help="file to translate, one sentence per line (default: standard input)")
    p.add_argument("--output", help="write translations here (default: standard output)")
    p.add_argument("--interactive", action="store_true", help="prompt for sentences, with line editing and history")
    add_decode_args(p, n_best=True)
    p.add_argument("--batch-lines", type=int, default=256, help="lines read from the input per batch")
    p.add_argument("--show-attention", action="store_true", help="print the word-level cross-attention and alignment")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="save the word-level cross-attention heatmaps (layers x heads); for several sentences put {n}, "
        "the sentence's number, in the name (attn-{n}.png)",
    )
    add_heads_args(p)  # which heads --show-attention, --plot and the JSON links read
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: one object per line with n-best, words, alignment links (as mt.serve answers)",
    )
    add_device_args(p)
    return p


def check_files(args: argparse.Namespace) -> None:
    """Mistakes in where text comes from and goes to, before a model is loaded."""
    if args.text and (args.input or args.interactive):
        raise UserError(f"sentences given as arguments and {'--input' if args.input else '--interactive'}: choose one")
    if args.input and args.interactive:
        raise UserError("--input and --interactive: choose one")
    refuse_output_over_input(args.output, [args.input], "--output")
    if args.plot:
        check_plot_name(args.plot, several=len(args.text) != 1)


def check_plot_name(pattern: str, several: bool) -> None:
    """--plot, before any work: an image format matplotlib writes (png for a bare name), not a
    directory, and {n} where several sentences could be plotted (one file each)."""
    from mt.plot import image_format

    image_format(pattern)
    if Path(pattern).is_dir():
        raise UserError(f"cannot write {pattern}: it is a directory")
    if several and "{n}" not in pattern:
        raise UserError(
            f"--plot {pattern} holds one sentence's plot: give one sentence as an argument, or put {{n}} (the "
            "sentence's number) in the name, e.g. attn-{n}.png"
        )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_user_error("mt.translate"):
        check_files(args)
        decode = decode_config(args)
        attention = args.show_attention or bool(args.plot) or args.format == "json"
        model = engine_model(args)
        if model is not None:
            refuse_attention_options(args)
            translator: Translator = CT2Translator(model, args.device, threads_option(args), decode)
        else:
            device = setup_device(args)
            path = checkpoint_to_use(args.checkpoint, "mt.translate")
            translator = Translator(path, device, decode, attention, align_options=align_options(args))
        # --output appears only when everything is translated (a failed run leaves the old file as it
        # was), except in a session at the terminal, whose every answer should be kept at once
        typed = args.interactive or (not args.text and not args.input and sys.stdin.isatty())
        with atomic_output(args.output, in_place=typed) if args.output else nullcontext(sys.stdout) as out:
            if args.text:
                write_results(translator, list(args.text), out, args)
            elif args.interactive:
                interactive(translator, out, args)
            else:
                translate_stream(translator, out, args)


def refuse_attention_options(args: argparse.Namespace) -> None:
    """CTranslate2 returns no cross-attention to read alignments from: say so for the options that need it."""
    asked = [
        option
        for option, given in (
            ("--show-attention", args.show_attention),
            ("--plot", bool(args.plot)),
            ("--format json", args.format == "json"),
            ("--layer", hasattr(args, "layer")),
            ("--head", hasattr(args, "head")),
        )
        if given
    ]
    if asked:
        raise UserError(f"{', '.join(asked)} need the attention of mt's own engine: leave out --engine ct2")


def translate_stream(translator: Translator, out: TextIO, args: argparse.Namespace) -> None:
    """--input FILE or standard input, batch by batch; a progress bar when writing to a file."""
    if args.input:
        if not Path(args.input).is_file():
            raise UserError(f"input file not found: {args.input}")
        stream, name = open(args.input, "rb"), args.input
    else:
        stream, name = sys.stdin.buffer, "stdin"
        if sys.stdin.isatty():
            print("mt.translate: reading sentences from the terminal, one per line; Ctrl-D ends", file=sys.stderr)
    with progress_bar(None, "line", "translating") as bar:
        if out is sys.stdout and sys.stdout.isatty():
            bar.disable = True  # the translations themselves show the progress
        offset = 0
        for chunk in chunks(read_stream(stream, name), args.batch_lines):
            write_results(translator, chunk, out, args, offset)
            offset += len(chunk)
            bar.update(len(chunk))


def interactive(translator: Translator, out: TextIO, args: argparse.Namespace) -> None:
    try:
        import readline  # noqa: F401 (input() gets line editing and a history of this session)
    except ImportError:  # not on every platform
        pass
    print(
        f"mt ({translator.src_lang}->{translator.tgt_lang}); empty line or Ctrl-D to quit",
        file=sys.stderr,
    )
    for number in itertools.count():
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        start = time.perf_counter()
        write_results(translator, [line], out, args, offset=number)
        print(f"  ({(time.perf_counter() - start) * 1000:.0f} ms)", file=sys.stderr)


if __name__ == "__main__":
    main()
