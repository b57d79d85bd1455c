"""`ecarchive create`: parse options, get the passphrase, hand over to `api.create`."""

from __future__ import annotations

import argparse
from typing import Any

from .. import api
from ..errors import Reporter, UsageError
from ..iso import SECTOR_SIZE
from ..keystore import XATTR_NAME
from ..output import Output
from ..plan import read_exclude_file
from ._options import (
    EXAMPLES,
    Subparsers,
    add_key_options,
    add_passphrase_options,
    add_progress_options,
    passphrase,
    want_progress,
)


def add_parser(sub: Subparsers, prog: str) -> argparse.ArgumentParser:
    c = sub.add_parser(
        "create",
        prog=f"{prog} create",
        help="stream SOURCE as an archive of eCryptfs lower files",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("source", metavar="SOURCE")
    out = c.add_argument_group("output")
    out.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        default="-",
        help="output file, '-' = stdout (default); with volumes e.g. backup-%%02d.iso",
    )
    out.add_argument(
        "--format",
        choices=["tar", "iso"],
        help="archive format (default: from OUT's extension, else tar)",
    )
    out.add_argument(
        "--volume-label",
        metavar="LABEL",
        default=api.DEFAULT_LABEL,
        help=f"ISO volume identifier (default {api.DEFAULT_LABEL})",
    )
    out.add_argument(
        "--print-size",
        action="store_true",
        help="print the exact ISO image size after the pre-scan and exit",
    )
    out.add_argument(
        "--media",
        metavar="MEDIA",
        help="split into volumes: cd, dvd, dvd-dl, bd, bd-dl or a size in bytes",
    )
    out.add_argument("--volume", metavar="N", type=int, help="write only volume N")
    out.add_argument(
        "--volume-command",
        metavar="CMD",
        help="pipe each volume into the shell command CMD, waiting for Enter between",
    )
    add_key_options(c)
    c.add_argument(
        "--lower-name",
        metavar="NAME",
        default=api.DEFAULT_LOWER_NAME,
        help=f"name of the lower directory in the archive (default {api.DEFAULT_LOWER_NAME})",
    )
    sel = c.add_argument_group("selecting files")
    sel.add_argument(
        "--exclude",
        metavar="PATTERN",
        action="append",
        default=[],
        help="skip paths matching PATTERN (GNU tar globbing, relative to SOURCE)",
    )
    sel.add_argument(
        "--exclude-from",
        metavar="FILE",
        action="append",
        default=[],
        help="read exclude patterns from FILE, one per line",
    )
    sel.add_argument("--one-file-system", action="store_true", help="stay on SOURCE's file system")
    sel.add_argument(
        "--long-names",
        choices=["error", "skip"],
        default="error",
        help="names over 143 bytes: fail before writing (default) or skip them",
    )
    st = c.add_argument_group("stable keys")
    st.add_argument(
        "--stable-keys",
        action="store_true",
        help=f"keep each file's key in the xattr {XATTR_NAME} so unchanged files "
        "encrypt to the same bytes (writes to SOURCE)",
    )
    st.add_argument(
        "--key-store", metavar="PATH", help="keep keys here where xattrs cannot be written"
    )
    st.add_argument(
        "--rotate-keys-on-change",
        action="store_true",
        help="new key for a file whose size or mtime changed",
    )
    add_progress_options(c)
    add_passphrase_options(c)
    c.set_defaults(run=run)
    return c


def _excludes(args: argparse.Namespace) -> tuple[str, ...]:
    excludes = tuple(args.exclude)
    for path in args.exclude_from:
        try:
            excludes += read_exclude_file(path)
        except OSError as e:
            raise UsageError(f"cannot read exclude file {path}: {e.strerror}") from e
    return excludes


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    fmt = api.format_for(args.output, args.format)
    common: dict[str, Any] = dict(
        key_bytes=args.key_bytes,
        fnek=args.fnek,
        lower_name=args.lower_name,
        excludes=_excludes(args),
        one_file_system=args.one_file_system,
        skip_long_names=args.long_names == "skip",
        volume_label=args.volume_label,
        media=args.media,
        reporter=reporter,
    )
    if args.print_size:
        if fmt != "iso":
            raise UsageError("--print-size is exact for ISO images only", hint="add --format iso")
        sizes = api.image_sizes(args.source, format=fmt, **common)
        for n, size in enumerate(sizes, 1):
            label = f"volume {n}: " if len(sizes) > 1 else ""
            print(f"{label}{size} bytes, {size // SECTOR_SIZE} sectors of {SECTOR_SIZE} bytes")
        return 0
    if not args.media:
        Output(args.output).check_not_terminal()  # before the passphrase prompt
    return api.create(
        args.source,
        args.output,
        passphrase=passphrase(args, confirm=True),
        format=fmt,
        cipher=args.cipher,
        volume=args.volume,
        volume_command=args.volume_command,
        stable_keys=args.stable_keys,
        key_store=args.key_store,
        rotate_keys_on_change=args.rotate_keys_on_change,
        progress=want_progress(args),
        **common,
    )
