"""BLEU/chrF with sacreBLEU, and `python -m mt.evaluate` to score a checkpoint on a split or files.

python -m mt.evaluate                              # latest run's best checkpoint, its test split
python -m mt.evaluate --split valid --beam 1
python -m mt.evaluate --corpus tatoeba             # one corpus of a run on several (data.corpora); default: each
python -m mt.evaluate --src my.en --ref my.de --checkpoint outputs/.../best.pt
python -m mt.evaluate --engine ct2 --model exports/m    # a CTranslate2 export (python -m mt.export ct2)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sacrebleu.metrics import BLEU, CHRF

from mt.cli import (
    add_decode_args,
    add_device_args,
    add_engine_args,
    command_parser,
    decode_config,
    engine_model,
    progress_bar,
    setup_device,
    threads_option,
)
from mt.config import DecodeConfig
from mt.errors import UserError, exit_on_user_error
from mt.fileio import atomic_write_json, atomic_write_text
from mt.model_folder import is_model_folder
from mt.tokenizer import Tokenizer

if TYPE_CHECKING:
    from mt.decode import Hypothesis


def score_translations(hyps: list[str], refs: list[str], sources: list[str] | None = None) -> dict[str, Any]:
    """Corpus BLEU (13a, cased) and chrF on detokenized text, with their signatures. Given the
    `sources`, a set where a source sentence repeats with other references (Tatoeba: one line per
    translation) is also scored once per distinct source against all its references
    (`multi_reference`), so a correct translation is not penalised for matching another one."""
    if len(hyps) != len(refs):
        raise UserError(f"{len(hyps)} translations but {len(refs)} references")
    scores = _bleu_chrf(hyps, [refs])
    if sources is not None and len(set(sources)) < len(sources):
        scores["multi_reference"] = multi_reference_scores(*group_by_source(hyps, refs, sources))
    return scores


def group_by_source(hyps: list[str], refs: list[str], sources: list[str]) -> tuple[list[str], list[list[str | None]]]:
    """One line per distinct source, in order of first appearance: the hypothesis of its first line
    and sacreBLEU reference streams holding all its references (None where it has fewer)."""
    if len(sources) != len(hyps):
        raise UserError(f"{len(hyps)} translations but {len(sources)} source sentences")
    first_hyp: dict[str, str] = {}
    refs_of: dict[str, list[str]] = {}
    for src, hyp, ref in zip(sources, hyps, refs, strict=True):
        first_hyp.setdefault(src, hyp)
        refs_of.setdefault(src, []).append(ref)
    streams = max(len(r) for r in refs_of.values())
    ref_streams = [[r[k] if k < len(r) else None for r in refs_of.values()] for k in range(streams)]
    return list(first_hyp.values()), ref_streams


def multi_reference_scores(hyps: list[str], ref_streams: list[list[str | None]]) -> dict[str, Any]:
    """BLEU and chrF of one hypothesis per source against several reference streams."""
    return {**_bleu_chrf(hyps, ref_streams), "sources": len(hyps), "max_references": len(ref_streams)}


def _bleu_chrf(hyps: list[str], ref_streams: list[list[str]] | list[list[str | None]]) -> dict[str, Any]:
    bleu, chrf = BLEU(), CHRF()
    return {
        "bleu": bleu.corpus_score(hyps, ref_streams).score,
        "chrf": chrf.corpus_score(hyps, ref_streams).score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def _read_text(path: str) -> list[str]:
    from mt.fileio import read_lines

    p = Path(path)
    if not p.is_file():
        raise UserError(f"file not found: {path}")
    return read_lines(p)


def _split_texts(
    data_name: str,
    split: str,
    src_lang: str,
    tgt_lang: str,
    overrides: list[str],
    corpus: str = "",
    recorded: dict[str, Any] | None = None,
) -> list[tuple[str, list[str], list[str]]]:
    """(name, source, reference) of a configured corpus split: of `corpus`, or of each corpus of a
    data config that lists several (data.corpora). `recorded`: the data config a run was trained
    with (DataConfig.as_record), rebuilt as it was (its corpora, held-out seeds and sizes) instead
    of composing configs/data/`data_name`.yaml."""
    from mt.cli import compose_config
    from mt.config import data_config_from_record
    from mt.data import load_split, pick_corpus

    if recorded is not None:
        data = data_config_from_record(recorded, overrides)
        data_name = data.name
    else:
        langs = [f"data.src_lang={src_lang}", f"data.tgt_lang={tgt_lang}"]
        data = compose_config([f"data={data_name}", *langs, *overrides]).data
    names = [pick_corpus(data, corpus).name] if corpus else [c.name for c in data.corpus_list()]
    found = []
    for name in names:
        raw = load_split(data, split, name)
        label = f"{data_name}.{name}.{split}" if data.corpora else f"{data_name}.{split}"
        found.append((label, list(raw["src"]), list(raw["tgt"])))
    return found


def recorded_data_config(engine: EvalModel) -> dict[str, Any] | None:
    """The data config the model was trained with: recorded in the checkpoint, else (a checkpoint
    written before it was) in its run folder's metrics.json, if that names the same corpus config."""
    if engine.data_config is not None:
        return engine.data_config
    import json

    metrics = engine.eval_dir.parent / "metrics.json"
    try:
        data = json.loads(metrics.read_text())["config"]["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    same = isinstance(data, dict) and data.get("name") == engine.data_name
    return data if same and (data.get("src_lang"), data.get("tgt_lang")) == (engine.src_lang, engine.tgt_lang) else None


@dataclass
class EvalModel:
    """What scoring needs of a model, whichever engine decodes: its tokenizer, languages, corpus,
    where results go by default, and the decoding itself (ids -> n-best Hypothesis lists)."""

    name: str  # mt | ct2
    model: Path  # the checkpoint file or export folder
    tokenizer: Tokenizer
    src_lang: str
    tgt_lang: str
    data_name: str | None
    data_config: dict[str, Any] | None  # DataConfig.as_record() of its training run, if recorded
    eval_dir: Path  # default --out
    translate: Callable[[list[list[int]], Callable[[int], object]], list[list[Hypothesis]]]
    details: dict[str, Any]  # recorded in the metrics JSON


def open_engine(args: argparse.Namespace, cfg: DecodeConfig) -> EvalModel:
    """Our model (--checkpoint) or, with --engine ct2, a CTranslate2 export (--model)."""
    model = engine_model(args)
    if model is not None:
        from mt import ct2

        found = ct2.load_ct2(model, args.device, threads_option(args))
        root = found.path.parent if found.path.name == "ct2" and is_model_folder(found.path.parent) else found.path
        return EvalModel(
            "ct2",
            found.path,
            found.tokenizer,
            found.src_lang,
            found.tgt_lang,
            found.info.get("data_name"),
            found.info.get("data_config"),
            root / "eval",
            lambda ids, on_batch: ct2.translate_ids(found, ids, cfg, on_batch),
            {"quantization": found.info.get("quantization"), "compute_type": found.translator.compute_type},
        )
    from mt.checkpoint import load
    from mt.decode import translate_ids
    from mt.rundir import checkpoint_to_use

    path = checkpoint_to_use(args.checkpoint, "mt.evaluate")
    device = setup_device(args)
    loaded = load(path, device)
    return EvalModel(
        "mt",
        path,
        loaded.tokenizer,
        loaded.src_lang,
        loaded.tgt_lang,
        loaded.ckpt.get("data_name"),
        loaded.ckpt.get("data_config"),
        path / "eval" if path.is_dir() else path.parent.parent / "eval",  # a model folder, or beside checkpoints/
        lambda ids, on_batch: translate_ids(loaded.model, ids, cfg, device, on_batch=on_batch),
        {},
    )


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m mt.evaluate", __doc__)
    p.add_argument(
        "--checkpoint",
        help="a .pt file, a run folder or an exported model folder (default: the newest finished run under outputs/)",
    )
    add_engine_args(p)
    p.add_argument(
        "--split", default="test", choices=["train", "valid", "test"], help="corpus split to score (default: test)"
    )
    p.add_argument(
        "--data",
        help="corpus config name (default: the data settings the checkpoint was trained with, as recorded)",
    )
    p.add_argument("--corpus", default="", help="with several corpora (data.corpora): score this one (default: each)")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="data overrides, e.g. data.dir=... (data.KEY=VALUE)"
    )
    p.add_argument("--src", help="source file to translate instead of a corpus split")
    p.add_argument("--ref", help="reference file for --src")
    add_decode_args(p)
    p.add_argument("--out", help="directory for hypotheses and metrics (default: next to the checkpoint)")
    add_device_args(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_user_error("mt.evaluate"):
        cfg = decode_config(args)
        given = _given_texts(args)  # before the model loads: a mistake in the files is found at once
        engine = open_engine(args, cfg)
        if given is not None:
            sets = [given]
        else:
            data_name = args.data or engine.data_name or "multi30k"
            recorded = None if args.data else recorded_data_config(engine)  # the run's own splits
            sets = _split_texts(
                data_name, args.split, engine.src_lang, engine.tgt_lang, args.set, args.corpus, recorded
            )
        out = Path(args.out) if args.out else engine.eval_dir
        for name, src, ref in sets:
            scores = _score_set(engine, args, name, src, ref, out)
            label = f"{name}: " if len(sets) > 1 else ""
            print(f"{label}BLEU = {scores['bleu']:.2f}  {scores['bleu_signature']}")
            print(f"{label}chrF = {scores['chrf']:.2f}  {scores['chrf_signature']}")
            if multi := scores.get("multi_reference"):
                print(
                    f"{label}{multi['sources']} distinct sources, each against all its references: "
                    f"BLEU = {multi['bleu']:.2f}  chrF = {multi['chrf']:.2f}  {multi['bleu_signature']}"
                )


def _given_texts(args: argparse.Namespace) -> tuple[str, list[str], list[str]] | None:
    """--src/--ref as (name, sources, references), checked; None without them."""
    if not (args.src or args.ref):
        return None
    if not (args.src and args.ref):
        raise UserError("--src and --ref go together")
    src, ref = _read_text(args.src), _read_text(args.ref)
    if len(src) != len(ref):
        raise UserError(f"line counts differ: {args.src} has {len(src)}, {args.ref} has {len(ref)}")
    if not src:
        raise UserError(f"{args.src} and {args.ref} are empty: no sentences to score")
    return Path(args.src).name, src, ref


def _score_set(
    engine: EvalModel, args: argparse.Namespace, name: str, src: list[str], ref: list[str], out: Path
) -> dict[str, Any]:
    """Translate one set, score it, write its hypotheses and metrics under `out`; its scores."""
    start = time.perf_counter()
    with progress_bar(len(src), "sent", f"translating {name}") as bar:
        hyps = engine.translate(engine.tokenizer.encode_src(src), bar.update)
    seconds = time.perf_counter() - start
    text = engine.tokenizer.decode_tgt([h[0].tokens for h in hyps])
    scores = score_translations(text, ref, src)
    stem = f"{name}.beam{args.beam}" + (".ct2" if engine.name == "ct2" else "")
    metrics = {
        "checkpoint": str(engine.model),
        "engine": engine.name,
        **engine.details,
        "source": name,
        "sentences": len(src),
        "beam": args.beam,
        "length_penalty": args.alpha,
        "seconds": seconds,
        **scores,
    }
    try:
        atomic_write_text(out / f"{stem}.hyp.txt", "".join(t + "\n" for t in text))
        atomic_write_json(out / f"{stem}.json", metrics)
    except OSError as err:
        raise UserError(f"cannot write results to {out}: {err.strerror}") from None
    print(f"{len(src)} sentences in {seconds:.1f}s; hypotheses and metrics in {out}/{stem}.*", file=sys.stderr)
    return scores


if __name__ == "__main__":
    main()
