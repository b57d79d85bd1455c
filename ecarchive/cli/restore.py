"""`ecarchive restore`: decrypt an archive into DEST."""

from __future__ import annotations

import argparse

from .. import api
from ..errors import Reporter
from ._options import (
    Subparsers,
    add_passphrase_options,
    add_progress_options,
    passphrase,
    want_progress,
)


def add_parser(sub: Subparsers, prog: str) -> argparse.ArgumentParser:
    r = sub.add_parser("restore", prog=f"{prog} restore", help="decrypt an archive into DEST")
    r.add_argument("archive", metavar="ARCHIVE")
    r.add_argument("dest", metavar="DEST")
    add_progress_options(r)
    add_passphrase_options(r)
    r.set_defaults(run=run)
    return r


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    return api.restore(
        args.archive,
        args.dest,
        passphrase=passphrase(args),
        progress=want_progress(args),
        reporter=reporter,
    )
