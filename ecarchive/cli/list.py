"""`ecarchive list`: the decrypted table of contents."""

from __future__ import annotations

import argparse
import os

from .. import api
from ..errors import Reporter
from ._options import Subparsers, add_passphrase_options, passphrase
from ._pipe import quiet_on_broken_pipe
from .restore import add_selection_options


def add_parser(sub: Subparsers, prog: str) -> argparse.ArgumentParser:
    ls = sub.add_parser("list", prog=f"{prog} list", help="list an archive's decrypted paths")
    ls.add_argument("archive", metavar="ARCHIVE")
    ls.add_argument("paths", nargs="*", metavar="PATH", help="list only these plaintext paths")
    add_selection_options(ls)
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
        )
    )
