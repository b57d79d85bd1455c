"""`ecarchive keys`: key signatures and the exact commands to mount by hand."""

from __future__ import annotations

import argparse

from .. import api
from ..errors import Reporter
from ..restoretext import MountSpec
from ._options import Subparsers, add_key_options, add_passphrase_options, passphrase


def add_parser(sub: Subparsers, prog: str) -> argparse.ArgumentParser:
    k = sub.add_parser(
        "keys", prog=f"{prog} keys", help="print key signatures and the exact mount command"
    )
    add_key_options(k)
    add_passphrase_options(k)
    k.set_defaults(run=run)
    return k


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    keys = api.keyset(passphrase(args), args.fnek)
    spec = MountSpec(keys=keys, key_bytes=args.key_bytes)
    fnek = keys.fnek.sig_hex if keys.fnek else "-"
    print(f"ecryptfs_sig\t{keys.file_key.sig_hex}")
    print(f"ecryptfs_fnek_sig\t{fnek}")
    print(f"add-key\t{spec.add_passphrase_command()}")
    print(f"mount\t{spec.mount_command('LOWER', 'PLAIN')}")
    return 0
