"""`ecarchive list`: the decrypted table of contents."""

from __future__ import annotations

import argparse
import os

from .. import api
from ..errors import Reporter
from ..read.listing import Style
from ._options import Subparsers, add_passphrase_options, passphrase
from ._pipe import quiet_on_broken_pipe
from .restore import add_selection_options


def add_parser(sub: Subparsers, prog: str) -> argparse.ArgumentParser:
    ls = sub.add_parser("list", prog=f"{prog} list", help="list an archive's decrypted paths")
    ls.add_argument("archive", metavar="ARCHIVE")
    ls.add_argument("paths", nargs="*", metavar="PATH", help="list only these plaintext paths")
    add_selection_options(ls)
    style = ls.add_mutually_exclusive_group()
    style.add_argument(
        "-l",
        "--long",
        dest="style",
        action="store_const",
        const=Style.LONG,
        help="mode, owner/group, size, date and path, like tar tvf",
    )
    style.add_argument(
        "--json",
        dest="style",
        action="store_const",
        const=Style.JSON,
        help="one JSON object per entry and line, for scripts",
    )
    ls.set_defaults(style=Style.SHORT)
    add_passphrase_options(ls)
    ls.set_defaults(run=run)
    return ls


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    secret = passphrase(args)
    return quiet_on_broken_pipe(
        lambda: api.list_archive(
            args.archive,
            passphrase=secret,
            reporter=reporter,
            paths=[os.fsencode(p) for p in args.paths],
            include=args.include,
            exclude=args.exclude,
            style=args.style,
        )
    )
