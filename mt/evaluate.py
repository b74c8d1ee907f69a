"""BLEU/chrF with sacreBLEU, and `python -m mt.evaluate` to score a checkpoint on a split or files.

python -m mt.evaluate                              # latest run's best checkpoint, its test split
python -m mt.evaluate --split valid --beam 1
python -m mt.evaluate --src my.en --ref my.de --checkpoint outputs/.../best.pt
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from sacrebleu.metrics import BLEU, CHRF

from mt.cli import add_decode_args, add_device_args, command_parser, decode_config, progress_bar, setup_device
from mt.errors import UserError, exit_on_user_error
from mt.fileio import atomic_write_json, atomic_write_text


def score_translations(hyps: list[str], refs: list[str]) -> dict[str, Any]:
    """Corpus BLEU (13a, cased) and chrF on detokenized text, with their signatures."""
    if len(hyps) != len(refs):
        raise UserError(f"{len(hyps)} translations but {len(refs)} references")
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return {
        "bleu": b.score,
        "chrf": c.score,
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
    data_name: str, split: str, src_lang: str, tgt_lang: str, overrides: list[str]
) -> tuple[list[str], list[str]]:
    """Source and reference text of a configured corpus split."""
    from mt.cli import compose_config
    from mt.data import load_split

    cfg = compose_config([f"data={data_name}", f"data.src_lang={src_lang}", f"data.tgt_lang={tgt_lang}", *overrides])
    raw = load_split(cfg.data, split)
    return raw["src"], raw["tgt"]


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m mt.evaluate", __doc__)
    p.add_argument("--checkpoint", help="a .pt file or a run folder (default: the newest finished run under outputs/)")
    p.add_argument(
        "--split", default="test", choices=["train", "valid", "test"], help="corpus split to score (default: test)"
    )
    p.add_argument("--data", help="corpus config name (default: the one the checkpoint was trained on)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra data overrides, e.g. data.dir=...")
    p.add_argument("--src", help="source file to translate instead of a corpus split")
    p.add_argument("--ref", help="reference file for --src")
    add_decode_args(p)
    p.add_argument("--out", help="directory for hypotheses and metrics (default: next to the checkpoint)")
    add_device_args(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_user_error("mt.evaluate"):
        from mt.checkpoint import load
        from mt.decode import translate_ids
        from mt.rundir import checkpoint_to_use

        cfg = decode_config(args)
        path = checkpoint_to_use(args.checkpoint, "mt.evaluate")
        device = setup_device(args)
        loaded = load(path, device)
        if args.src or args.ref:
            if not (args.src and args.ref):
                raise UserError("--src and --ref go together")
            src, ref = _read_text(args.src), _read_text(args.ref)
            if len(src) != len(ref):
                raise UserError(f"line counts differ: {args.src} has {len(src)}, {args.ref} has {len(ref)}")
            name = Path(args.src).name
        else:
            data_name = args.data or loaded.ckpt.get("data_name") or "multi30k"
            src, ref = _split_texts(data_name, args.split, loaded.src_lang, loaded.tgt_lang, args.set)
            name = f"{data_name}.{args.split}"
        start = time.perf_counter()
        with progress_bar(len(src), "sent", f"translating {name}") as bar:
            hyps = translate_ids(loaded.model, loaded.tokenizer.encode_src(src), cfg, device, on_batch=bar.update)
        seconds = time.perf_counter() - start
        text = loaded.tokenizer.decode_tgt([h[0].tokens for h in hyps])
        scores = score_translations(text, ref)
        out = Path(args.out) if args.out else path.parent.parent / "eval"
        stem = f"{name}.beam{args.beam}"
        metrics = {
            "checkpoint": str(path),
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
        print(f"BLEU = {scores['bleu']:.2f}  {scores['bleu_signature']}")
        print(f"chrF = {scores['chrf']:.2f}  {scores['chrf_signature']}")
        print(f"{len(src)} sentences in {seconds:.1f}s; hypotheses and metrics in {out}/{stem}.*", file=sys.stderr)


if __name__ == "__main__":
    main()
