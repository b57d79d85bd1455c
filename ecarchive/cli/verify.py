"""`ecarchive verify`: check an archive, directory or disc against its manifest."""

from __future__ import annotations

import argparse

from .. import api
from ..errors import Reporter
from ._options import Subparsers, add_passphrase_options, optional_passphrase


def add_parser(sub: Subparsers, prog: str) -> argparse.ArgumentParser:
    v = sub.add_parser(
        "verify",
        prog=f"{prog} verify",
        help="check an archive, directory or disc against its manifest",
    )
    v.add_argument("archive", metavar="ARCHIVE")
    v.add_argument(
        "--against",
        metavar="SOURCE",
        help="also decrypt everything and compare with the plaintext tree SOURCE",
    )
    v.add_argument(
        "--ask-passphrase",
        action="store_true",
        help="ask for the passphrase on the terminal (verify never asks otherwise)",
    )
    add_passphrase_options(v)
    v.set_defaults(run=run)
    return v


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    prompt = bool(args.ask_passphrase or args.against)
    return api.verify(
        args.archive,
        passphrase=optional_passphrase(args, prompt=prompt),
        against=args.against,
        reporter=reporter,
    )
