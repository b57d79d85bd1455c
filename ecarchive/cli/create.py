"""`ecarchive create`: parse options, get the passphrase, hand over to `api.create`."""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from .. import api
from ..errors import Interrupted, Reporter, UsageError
from ..iso import SECTOR_SIZE
from ..output import Output
from ..sinks.base import ArchiveFormat
from ._options import (
    EXAMPLES,
    Subparsers,
    add_exclude_options,
    add_key_options,
    add_passphrase_options,
    add_progress_options,
    add_stable_key_options,
    excludes,
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
        choices=[f.value for f in ArchiveFormat],
        help="archive format (default: from OUT's extension, else iso with --media, else tar)",
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
        "--unit",
        choices=["bytes", "sectors"],
        help="with --print-size: print only the number, in bytes or 2048-byte sectors "
        "(growisofs tracksize:), one line per volume",
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
        help="pipe each volume into the shell command CMD, waiting for Enter between; "
        "CMD sees $ECARCHIVE_VOLUME (1, 2, ...), $ECARCHIVE_VOLUMES (the count) and, for ISO, "
        "the volume's size in $ECARCHIVE_VOLUME_BYTES and $ECARCHIVE_VOLUME_SECTORS",
    )
    add_key_options(c)
    c.add_argument(
        "--lower-name",
        metavar="NAME",
        default=api.DEFAULT_LOWER_NAME,
        help=f"name of the lower directory in the archive (default {api.DEFAULT_LOWER_NAME})",
    )
    sel = c.add_argument_group("selecting files")
    add_exclude_options(sel, "skip")
    sel.add_argument("--one-file-system", action="store_true", help="stay on SOURCE's file system")
    sel.add_argument(
        "--long-names",
        choices=["error", "skip"],
        default="error",
        help="names over 143 bytes: fail before writing (default) or skip them",
    )
    inc = c.add_argument_group("incremental (GNU tar's -g)")
    inc.add_argument(
        "-g",
        "--listed-incremental",
        metavar="SNAPSHOT",
        help="archive only what changed since SNAPSHOT (level 0 when it does not exist), "
        "then replace SNAPSHOT",
    )
    inc.add_argument(
        "--level",
        type=int,
        choices=[0],
        help="0: a full archive starting a new chain, whatever SNAPSHOT holds",
    )
    add_stable_key_options(
        c.add_argument_group("stable keys"), "so unchanged files encrypt to the same bytes"
    )
    c.add_argument(
        "-j",
        "--jobs",
        metavar="N",
        type=int,
        help="threads reading and encrypting (default: one per CPU)",
    )
    add_progress_options(c)
    add_passphrase_options(c)
    c.set_defaults(run=run)
    return c


@contextlib.contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run as Ctrl-C does: the output is cleaned up and the run
    ends with a message, instead of the process dying with a truncated archive."""

    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_sizes(sizes: list[int], unit: str | None, volume: int | None) -> None:
    numbered = list(enumerate(sizes, 1))
    if volume is not None:
        if not 1 <= volume <= len(sizes):
            raise UsageError(f"--volume {volume}: the archive has {len(sizes)} volume(s)")
        numbered = [numbered[volume - 1]]
    for n, size in numbered:
        if unit is not None:  # a bare number, for $(...) in a burning command
            print(size if unit == "bytes" else size // SECTOR_SIZE)
            continue
        label = f"volume {n}: " if len(sizes) > 1 else ""
        print(f"{label}{size} bytes, {size // SECTOR_SIZE} sectors of {SECTOR_SIZE} bytes")


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    api.check_output_name(args.output)  # before the passphrase prompt
    fmt = api.format_for(args.output, args.format, args.media)
    common: dict[str, Any] = dict(
        key_bytes=args.key_bytes,
        fnek=args.fnek,
        lower_name=args.lower_name,
        excludes=excludes(args),
        one_file_system=args.one_file_system,
        skip_long_names=args.long_names == "skip",
        volume_label=args.volume_label,
        media=args.media,
        listed_incremental=args.listed_incremental,
        level=args.level,
        reporter=reporter,
    )
    if args.print_size:
        if fmt is not ArchiveFormat.ISO:
            raise UsageError("--print-size is exact for ISO images only", hint="add --format iso")
        _print_sizes(api.image_sizes(args.source, format=fmt, **common), args.unit, args.volume)
        return 0
    if args.unit:
        raise UsageError("--unit goes with --print-size")
    if not args.media:
        Output(args.output).check_not_terminal()  # before the passphrase prompt
    with interrupted_by_signals():
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
            jobs=args.jobs,
            progress=want_progress(args),
            summary=not args.quiet,
            **common,
        )
