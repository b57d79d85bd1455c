"""`ecarchive umount`: unmount what `ecarchive mount` mounted (as fusermount3 -u does)."""

from __future__ import annotations

import argparse

from .. import api
from ..errors import Reporter
from ._options import Subparsers


def add_parser(sub: Subparsers, prog: str) -> argparse.ArgumentParser:
    u = sub.add_parser(
        "umount", prog=f"{prog} umount", help="unmount a view made by 'ecarchive mount'"
    )
    u.add_argument("mountpoint", metavar="MOUNTPOINT")
    u.set_defaults(run=run)
    return u


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    return api.umount(args.mountpoint)
