"""`ecarchive mount`: a read-only FUSE view of SOURCE as an eCryptfs lower directory."""

from __future__ import annotations

import argparse

from .. import api
from ..errors import Reporter
from ._options import (
    Subparsers,
    add_exclude_options,
    add_key_options,
    add_passphrase_options,
    add_stable_key_options,
    excludes,
    passphrase,
)

EPILOG = """\
examples:
  ecarchive mount --stable-keys ~/Documents /mnt/docs-enc
  rsync -a --delete /mnt/docs-enc/ nas:backup/docs/     # unchanged files are not sent
  ecarchive umount /mnt/docs-enc
restore a copy: ecarchive restore COPY DEST, or mount -t ecryptfs (see 'ecarchive keys')
"""


def add_parser(sub: Subparsers, prog: str) -> argparse.ArgumentParser:
    m = sub.add_parser(
        "mount",
        prog=f"{prog} mount",
        help="mount a read-only view of SOURCE as an eCryptfs lower directory",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("source", metavar="SOURCE")
    m.add_argument("mountpoint", metavar="MOUNTPOINT")
    add_key_options(m)
    sel = m.add_argument_group("selecting files")
    add_exclude_options(sel, "hide")
    add_stable_key_options(
        m.add_argument_group("stable keys (without them, keys change at every mount)"),
        "as create does, so an unchanged file reads the same after a remount",
    )
    fuse = m.add_argument_group("mount")
    fuse.add_argument(
        "-f",
        "--foreground",
        action="store_true",
        help="stay in the foreground until unmounted (Ctrl-C unmounts)",
    )
    fuse.add_argument(
        "--allow-other",
        action="store_true",
        help="let other users see the mount (non-root: user_allow_other in /etc/fuse.conf)",
    )
    add_passphrase_options(m)
    m.set_defaults(run=run)
    return m


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    return api.mount(
        args.source,
        args.mountpoint,
        passphrase=passphrase(args, confirm=True),
        key_bytes=args.key_bytes,
        fnek=args.fnek,
        excludes=excludes(args),
        stable_keys=args.stable_keys,
        key_store=args.key_store,
        rotate_keys_on_change=args.rotate_keys_on_change,
        foreground=args.foreground,
        allow_other=args.allow_other,
        reporter=reporter,
    )
