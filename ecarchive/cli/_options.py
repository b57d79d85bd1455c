"""Options shared by several verbs, and the passphrase and progress decisions made from them."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from typing import TypeAlias

from ..ecryptfs.constants import AES_CODES
from ..ecryptfs.keys import FnekMode
from ..errors import UsageError
from ..keystore import XATTR_NAME
from ..passphrase import ENV_VAR, PassphraseSources, get_passphrase
from ..plan import read_exclude_file

PROG = "ecarchive"
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
EXAMPLES = f"""\
passphrase: --passphrase-file F, --passphrase-fd N, ${ENV_VAR},
  --wrapped-passphrase FILE (~/.ecryptfs/wrapped-passphrase), else asked on the terminal.

examples:
  {PROG} create ~/Documents -o docs.tar
  {PROG} create ~ --passphrase-file key.txt | ssh nas 'cat > home.tar'
  {PROG} create ~ --format iso | growisofs -Z /dev/dvd=/dev/stdin
  {PROG} create ~ --media dvd --volume-command 'growisofs -Z /dev/dvd=/dev/stdin'
  ssh nas 'cat home.tar' | {PROG} restore - ~/restored
"""


def add_passphrase_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("passphrase (never on the command line)")
    g.add_argument(
        "--passphrase-file", metavar="F", help="read the passphrase from the first line of F"
    )
    g.add_argument(
        "--passphrase-fd", metavar="N", type=int, help="read the passphrase from file descriptor N"
    )
    g.add_argument(
        "--wrapped-passphrase",
        metavar="FILE",
        help="an ecryptfs-utils wrapped-passphrase file; the login passphrase comes from the sources above",
    )


def add_key_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cipher", choices=["aes"], default="aes", help="file cipher (default aes)")
    p.add_argument(
        "--key-bytes",
        type=int,
        choices=sorted(AES_CODES),
        default=16,
        help="AES key size in bytes (default 16)",
    )
    p.add_argument(
        "--fnek",
        choices=[m.value for m in FnekMode],
        default=FnekMode.SEPARATE.value,
        help="filename key: separate (ecryptfs-add-passphrase --fnek, default), "
        "same (the file key, as mount.ecryptfs), off (names in clear)",
    )


def add_progress_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="only errors and warnings on stderr")
    g.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on stderr even if it is not a terminal",
    )


def sources(args: argparse.Namespace) -> PassphraseSources:
    return PassphraseSources(
        file=args.passphrase_file, fd=args.passphrase_fd, wrapped=args.wrapped_passphrase
    )


def passphrase(args: argparse.Namespace, *, confirm: bool = False) -> bytes:
    return get_passphrase(sources(args), confirm=confirm)


def optional_passphrase(args: argparse.Namespace, *, prompt: bool) -> bytes | None:
    """A passphrase only when a source was named, the environment has one, or `prompt`."""
    given = args.passphrase_file or args.passphrase_fd is not None or args.wrapped_passphrase
    if not (given or prompt or ENV_VAR in os.environ):
        return None
    return get_passphrase(replace(sources(args), prompt_allowed=prompt))


def want_progress(args: argparse.Namespace) -> bool:
    return bool(args.progress or (not args.quiet and sys.stderr.isatty()))


def add_exclude_options(group: argparse._ArgumentGroup, verb: str) -> None:
    """--exclude/--exclude-from; `verb` says what a match does ("skip", "hide")."""
    group.add_argument(
        "--exclude",
        metavar="PATTERN",
        action="append",
        default=[],
        help=f"{verb} paths matching PATTERN (GNU tar globbing, relative to SOURCE)",
    )
    group.add_argument(
        "--exclude-from",
        metavar="FILE",
        action="append",
        default=[],
        help="read exclude patterns from FILE, one per line",
    )


def excludes(args: argparse.Namespace) -> tuple[str, ...]:
    patterns = tuple(args.exclude)
    for path in args.exclude_from:
        try:
            patterns += read_exclude_file(path)
        except OSError as e:
            raise UsageError(f"cannot read exclude file {path}: {e.strerror}") from e
    return patterns


def add_stable_key_options(group: argparse._ArgumentGroup, effect: str) -> None:
    group.add_argument(
        "--stable-keys",
        action="store_true",
        help=f"keep each file's key in the xattr {XATTR_NAME} {effect} (writes to SOURCE)",
    )
    group.add_argument(
        "--key-store", metavar="PATH", help="keep keys here where xattrs cannot be written"
    )
    group.add_argument(
        "--rotate-keys-on-change",
        action="store_true",
        help="new key for a file whose size or mtime changed",
    )
