"""`ecarchive list`: the decrypted table of contents."""

from __future__ import annotations

import argparse

from .. import api
from ..errors import Reporter
from ._options import Subparsers, add_passphrase_options, passphrase


def add_parser(sub: Subparsers, prog: str) -> argparse.ArgumentParser:
    ls = sub.add_parser("list", prog=f"{prog} list", help="list an archive's decrypted paths")
    ls.add_argument("archive", metavar="ARCHIVE")
    add_passphrase_options(ls)
    ls.set_defaults(run=run)
    return ls


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    return api.list_archive(args.archive, passphrase=passphrase(args), reporter=reporter)
