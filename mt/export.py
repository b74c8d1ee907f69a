"""Export a checkpoint as a portable model folder, with a CTranslate2 model for fast CPU decoding.

    python -m mt.export ct2 --checkpoint CKPT --out DIR [--quantization float32|int8|int8_float32]
    python -m mt.export folder --checkpoint CKPT --out DIR      # the folder alone (no CTranslate2)

DIR gets config.json + model.safetensors + the sentencepiece model(s) (mt.model_folder: every
--checkpoint option reads it as the checkpoint itself), a model card README.md (mt.model_card)
and, with `ct2`, ct2/: the CTranslate2 model (mt.ct2) that `--engine ct2 --model DIR` decodes with.
An existing DIR is replaced only with --force, and only if it is an earlier export.

Without --checkpoint: best.pt of the newest finished run under outputs/ (said on stderr).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mt.cli import HelpFormatter, command_parser
from mt.errors import UserError, exit_on_user_error
from mt.model_folder import CONFIG, FOLDER_FORMAT

if TYPE_CHECKING:
    from mt.checkpoint import Loaded

CT2_DEFAULT_QUANTIZATION = "float32"  # the one that decodes exactly as our engine (docs/benchmarks.md)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m mt.export", __doc__)
    kinds = p.add_subparsers(dest="kind", required=True, metavar="{ct2,folder}")
    for kind, text in (("ct2", "the model folder with a CTranslate2 model in ct2/"), ("folder", "the model folder")):
        sub = kinds.add_parser(kind, help=text, description=text, formatter_class=HelpFormatter)
        sub.add_argument("--checkpoint", help="a .pt file, a run folder or a model folder (default: the newest run)")
        sub.add_argument("--out", required=True, help="the folder to write")
        sub.add_argument("--force", action="store_true", help="replace --out if it holds an earlier export")
        if kind == "ct2":
            from mt.ct2 import QUANTIZATIONS

            sub.add_argument(
                "--quantization",
                choices=QUANTIZATIONS,
                default=CT2_DEFAULT_QUANTIZATION,
                help="weights of the CTranslate2 model: float32 decodes as mt does; int8 is about 4x smaller "
                "and faster, and may change some translations (docs/benchmarks.md)",
            )
    return p


def is_export(path: Path) -> bool:
    """A folder this command wrote (what --force may replace)."""
    import json

    try:
        return json.loads((path / CONFIG).read_text(encoding="utf-8")).get("format") == FOLDER_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_out(out: Path, force: bool) -> None:
    """Refuse to overwrite anything but an earlier export, and that only with --force."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    if not force:
        raise UserError(f"--out {out} already exists: add --force to replace it")
    if any(out.iterdir()) and not is_export(out):
        raise UserError(f"--out {out} is not an earlier export (no mt config.json): --force replaces exports only")


def folder_beside(out: Path) -> Path:
    """The empty folder the export is built in, next to `out`: made before any work, so that an
    --out that cannot be written (no parent, read-only, /proc) is one line at once."""
    from mt.fileio import new_directory_beside

    try:
        return new_directory_beside(out)
    except (FileExistsError, NotADirectoryError):  # mkdir's word for a file where a parent folder should be
        raise UserError(f"cannot write {out}: a folder on its path is a file") from None
    except OSError as err:
        raise UserError(f"cannot write {out}: {err.strerror or err}") from None


def write_export(built: Path, loaded: Loaded, checkpoint: Path, out: Path, quantization: str | None) -> None:
    """Write the export's files into `built`, then put it at `out`; a write that fails is one line."""
    from mt.fileio import atomic_write_text, replace_directory
    from mt.model_card import model_card
    from mt.model_folder import write_model_folder

    try:
        write_model_folder(loaded.ckpt, built)
        if quantization:
            from mt.ct2 import write_ct2

            info = {"src_lang": loaded.src_lang, "tgt_lang": loaded.tgt_lang, "source": str(checkpoint)}
            for key in ("data_name", "data_config"):
                if key in loaded.ckpt:
                    info[key] = loaded.ckpt[key]  # type: ignore[literal-required]
            write_ct2(loaded.model, loaded.tokenizer, built / "ct2", quantization, info)
        atomic_write_text(built / "README.md", model_card(loaded, checkpoint, str(out), quantization))
        replace_directory(built, out)
    except OSError as err:
        raise UserError(f"cannot write {out}: {err.strerror or err}") from None


def export(checkpoint: Path, out: Path, quantization: str | None, force: bool) -> None:
    """Write the folder (and with `quantization`, its ct2/) beside `out`, then put it in place."""
    from mt.checkpoint import load

    check_out(out, force)
    if quantization:
        from mt.ct2 import import_ctranslate2

        import_ctranslate2()  # refuse before any work if it is missing
    built = folder_beside(out)
    try:
        write_export(built, load(checkpoint), checkpoint, out, quantization)
    finally:
        shutil.rmtree(built, ignore_errors=True)  # gone already when it was put in place


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_user_error("mt.export"):
        from mt.rundir import checkpoint_to_use

        checkpoint = checkpoint_to_use(args.checkpoint, "mt.export")
        out = Path(args.out)
        quantization = args.quantization if args.kind == "ct2" else None
        export(checkpoint, out, quantization, args.force)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
        print(f"mt.export: wrote {out}/ ({size:.1f} MB): model card {out / 'README.md'}", file=sys.stderr)
        print(f'  python -m mt.translate --checkpoint {out} "A dog runs."', file=sys.stderr)
        if quantization:
            print(f'  python -m mt.translate --engine ct2 --model {out} "A dog runs."', file=sys.stderr)


if __name__ == "__main__":
    main()
