"""`ecarchive restore`: decrypt an archive into DEST."""

from __future__ import annotations

import argparse
import os

from .. import api
from ..errors import Reporter, UsageError
from ..read.restore import Existing
from ._options import (
    Subparsers,
    add_passphrase_options,
    add_progress_options,
    passphrase,
    want_progress,
)


def add_parser(sub: Subparsers, prog: str) -> argparse.ArgumentParser:
    r = sub.add_parser(
        "restore",
        prog=f"{prog} restore",
        usage=f"{prog} restore [-h] [options] ARCHIVE [ARCHIVE...] DEST [PATH...]",
        help="decrypt an archive (or an incremental chain, in order) into DEST",
        description="Decrypt ARCHIVE into DEST. Several ARCHIVE files (the volumes of a set, "
        "in any order; or the levels of an incremental chain, in the order they were made) "
        "are restored in one run; DEST is the first argument after the first that is not an "
        "existing file. PATHs restore only those plaintext paths.",
    )
    r.add_argument("operands", nargs="+", metavar="ARGS", help=argparse.SUPPRESS)
    old = r.add_mutually_exclusive_group()
    old.add_argument(
        "--keep-old-files",
        dest="existing",
        action="store_const",
        const=Existing.KEEP,
        help="do not replace files already in DEST; each one is an error (exit 1)",
    )
    old.add_argument(
        "--skip-old-files",
        dest="existing",
        action="store_const",
        const=Existing.SKIP,
        help="do not replace files already in DEST, silently",
    )
    r.set_defaults(existing=Existing.REPLACE)
    add_selection_options(r)
    add_progress_options(r)
    add_passphrase_options(r)
    r.set_defaults(run=run)
    return r


def add_selection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--include",
        metavar="GLOB",
        action="append",
        default=[],
        help="only plaintext paths matching GLOB (and what is below them); repeatable",
    )
    p.add_argument(
        "--exclude",
        metavar="GLOB",
        action="append",
        default=[],
        help="leave out plaintext paths matching GLOB (and what is below them); repeatable",
    )


def split_operands(operands: list[str]) -> tuple[list[str], str, list[str]]:
    """ARCHIVE [ARCHIVE...] DEST [PATH...]: archives are the first operand and every existing
    non-directory after it ('-' only first); DEST follows them, PATHs follow DEST."""
    if len(operands) < 2:
        raise UsageError("restore needs ARCHIVE and DEST")
    end = 1
    while end < len(operands) - 1 and _is_archive_file(operands[end]):
        end += 1
    return operands[:end], operands[end], operands[end + 1 :]


def _is_archive_file(path: str) -> bool:
    return os.path.exists(path) and not os.path.isdir(path)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    archives, dest, paths = split_operands(args.operands)
    return api.restore(
        archives,
        dest,
        passphrase=passphrase(args),
        progress=want_progress(args),
        summary=not args.quiet,
        reporter=reporter,
        existing=args.existing,
        paths=[os.fsencode(p) for p in paths],
        include=args.include,
        exclude=args.exclude,
    )
