"""`python -m mt.compare`: the command line."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from mt.cli import command_parser
from mt.compare.report import compare, csv_text, markdown_report, plot_png
from mt.compare.runs import latest_sweep
from mt.errors import UserError, exit_on_user_error
from mt.fileio import atomic_write_bytes, atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m mt.compare", __doc__)
    p.add_argument(
        "folders",
        nargs="*",
        type=Path,
        metavar="DIR",
        help="sweep or run folders (default: the latest sweep under multirun/)",
    )
    p.add_argument("--out", type=Path, help="where comparison.{md,csv,png} go (default: the first DIR)")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="paired bootstrap resamples (default: %(default)s; 0 skips the test)",
    )
    p.add_argument("--no-files", action="store_true", help="print the table only")
    return p


def check_out(out: Path) -> None:
    """Refuse an --out the three files cannot go into before the comparison's work (the bootstrap
    takes a while, and its table would come before the error): a file, a path under a file, a place
    that cannot be written. The nearest existing folder is tried with a temp file, since permission
    bits do not tell (root, read-only mounts, /proc)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise UserError(f"cannot write {out}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(f"cannot write {out}: {err.strerror or err}") from None


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_user_error("mt.compare"):
        if args.bootstrap < 0:
            raise UserError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
        if args.out and not args.no_files:
            check_out(args.out)
        folders = args.folders or [latest_sweep()]
        result = compare(folders, n_samples=args.bootstrap, significance=args.bootstrap > 0)
        print(result.table, end="")
        if result.ranked_by != "test BLEU":
            print(f"ranked by {result.ranked_by}", file=sys.stderr)
        if args.no_files:
            return
        out = args.out or folders[0]
        command = "python -m mt.compare " + " ".join(str(a) for a in (argv if argv is not None else sys.argv[1:]))
        if not args.folders:
            command += f"  # {folders[0]}"
        atomic_write_text(out / "comparison.md", markdown_report(result, folders, command.strip()))
        atomic_write_text(out / "comparison.csv", csv_text(result.runs, result.params))
        atomic_write_bytes(out / "comparison.png", plot_png(result.runs, result.params))
        print(f"wrote {out / 'comparison.md'}, comparison.csv, comparison.png", file=sys.stderr)
