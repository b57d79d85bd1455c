"""Command line: argument parsing, passphrase sources, progress, errors → exit codes.

No format knowledge lives here: it wires the planner, the reader and the sinks together.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from tqdm import tqdm

from . import __version__
from .ecryptfs.constants import AES_CODES
from .ecryptfs.keys import FnekMode, KeySet, derive_keyset
from .ecryptfs.names import encrypt_name
from .errors import EXIT_FATAL, EcarchiveError, PlanRejected, Reporter, UsageError
from .keysource import FreshKeys
from .listing import list_archive
from .model import Entry, Plan
from .output import Output
from .passphrase import ENV_VAR, PassphraseSources, get_passphrase
from .plan import PlanOptions, build_plan, read_exclude_file
from .reader import EncryptingReader
from .restore import restore_archive
from .restoretext import RESTORE_NAME, MountSpec, restore_text
from .sinks.tar import write_tar

PROG = "ecarchive"
USAGE = f"""\
{PROG} create [-o OUT|-] [options] SOURCE    stream SOURCE as a tar of eCryptfs lower files
{PROG} restore ARCHIVE|- DEST                 decrypt an archive (tar, ISO or directory) into DEST
{PROG} list ARCHIVE|-                         list decrypted paths, types and sizes
{PROG} keys                                   print key signatures and the mount command

Passphrase: --passphrase-file F, --passphrase-fd N, ${ENV_VAR},
--wrapped-passphrase FILE (~/.ecryptfs/wrapped-passphrase), else asked on the terminal.

Examples:
  {PROG} create ~/Documents -o docs.tar
  {PROG} create ~ --passphrase-file key.txt | ssh nas 'cat > home.tar'
  {PROG} create ~ --format iso | growisofs -Z /dev/dvd=/dev/stdin
  {PROG} restore docs.tar ~/restored
"""


def _add_passphrase_options(p: argparse.ArgumentParser) -> None:
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


def _add_key_options(p: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, usage=USAGE, add_help=True, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("create", help="stream SOURCE as an archive of eCryptfs lower files")
    c.add_argument("source", metavar="SOURCE")
    c.add_argument(
        "-o", "--output", metavar="OUT", default="-", help="output file, '-' = stdout (default)"
    )
    _add_key_options(c)
    c.add_argument(
        "--lower-name",
        metavar="NAME",
        default="Private",
        help="name of the lower directory in the archive (default Private)",
    )
    c.add_argument(
        "--exclude",
        metavar="PATTERN",
        action="append",
        default=[],
        help="skip paths matching PATTERN (GNU tar globbing, relative to SOURCE)",
    )
    c.add_argument(
        "--exclude-from",
        metavar="FILE",
        action="append",
        default=[],
        help="read exclude patterns from FILE, one per line",
    )
    c.add_argument("--one-file-system", action="store_true", help="stay on SOURCE's file system")
    c.add_argument(
        "--long-names",
        choices=["error", "skip"],
        default="error",
        help="names over 143 bytes: fail before writing (default) or skip them",
    )
    _progress_options(c)
    _add_passphrase_options(c)

    r = sub.add_parser("restore", help="decrypt an archive into DEST")
    r.add_argument("archive", metavar="ARCHIVE")
    r.add_argument("dest", metavar="DEST")
    _progress_options(r)
    _add_passphrase_options(r)

    ls = sub.add_parser("list", help="list an archive's decrypted paths")
    ls.add_argument("archive", metavar="ARCHIVE")
    _add_passphrase_options(ls)

    k = sub.add_parser("keys", help="print key signatures and the exact mount command")
    _add_key_options(k)
    _add_passphrase_options(k)
    return parser


def _progress_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="only errors and warnings on stderr")
    g.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on stderr even if it is not a terminal",
    )


def _sources(args: argparse.Namespace) -> PassphraseSources:
    return PassphraseSources(
        file=args.passphrase_file, fd=args.passphrase_fd, wrapped=args.wrapped_passphrase
    )


def _keyset(args: argparse.Namespace, *, confirm: bool) -> KeySet:
    passphrase = get_passphrase(_sources(args), confirm=confirm)
    return derive_keyset(passphrase, FnekMode(args.fnek))


def _want_progress(args: argparse.Namespace) -> bool:
    return bool(args.progress or (not args.quiet and sys.stderr.isatty()))


def _progress_bar(total: int | None, enabled: bool) -> tqdm[Any]:

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
        leave=False,
    )


def cmd_create(args: argparse.Namespace, reporter: Reporter) -> None:
    output = Output(args.output)
    output.check_not_terminal()
    lower_name = args.lower_name.encode()
    if (
        not lower_name
        or b"/" in lower_name
        or lower_name in (b".", b"..")
        or lower_name == RESTORE_NAME
    ):
        raise UsageError(f"--lower-name {args.lower_name!r} is not a usable directory name")
    excludes = tuple(args.exclude)
    for path in args.exclude_from:
        try:
            excludes += read_exclude_file(path)
        except OSError as e:
            raise UsageError(f"cannot read exclude file {path}: {e.strerror}") from e
    keys = _keyset(args, confirm=True)
    spec = MountSpec(keys=keys, key_bytes=args.key_bytes)
    fnek = keys.fnek

    def encrypt(name: bytes) -> bytes:
        return name if fnek is None else encrypt_name(name, fnek, args.key_bytes)

    plan = build_plan(
        PlanOptions(
            source=os.fsencode(args.source),
            encrypt=encrypt,
            names_encrypted=fnek is not None,
            lower_root=lower_name,
            excludes=excludes,
            one_file_system=args.one_file_system,
            skip_long_names=args.long_names == "skip",
            top_files=((RESTORE_NAME, restore_text(spec, args.lower_name)),),
        ),
        reporter,
    )
    if plan.problems:
        raise PlanRejected(plan.problems, hint="fix or --exclude these paths; nothing was written")
    reader = EncryptingReader(
        FreshKeys(keys.file_key, args.key_bytes),
        filenames_encrypted=fnek is not None,
        reporter=reporter,
    )
    _stream_tar(plan, reader, output, _want_progress(args))


def _stream_tar(plan: Plan, reader: EncryptingReader, output: Output, progress: bool) -> None:
    bar = _progress_bar(plan.data_bytes, progress)

    def open_data(entry: Entry) -> Iterator[bytes | bytearray | memoryview] | None:
        chunks = reader.open(entry)
        if chunks is None:
            bar.update(entry.size)
            return None
        return _counted(chunks, bar)

    with output.open() as fd:
        write_tar(plan.entries, open_data, fd)
    bar.close()


def _counted(
    chunks: Iterator[bytes | bytearray | memoryview], bar: tqdm[Any]
) -> Iterator[bytes | bytearray | memoryview]:
    for chunk in chunks:
        yield chunk
        bar.update(len(chunk))


def cmd_keys(args: argparse.Namespace, reporter: Reporter) -> None:
    keys = _keyset(args, confirm=False)
    spec = MountSpec(keys=keys, key_bytes=args.key_bytes)
    fnek = keys.fnek.sig_hex if keys.fnek else "-"
    print(f"ecryptfs_sig\t{keys.file_key.sig_hex}")
    print(f"ecryptfs_fnek_sig\t{fnek}")
    print(f"add-key\t{spec.add_passphrase_command()}")
    print(f"mount\t{spec.mount_command('LOWER', 'PLAIN')}")


def cmd_restore(args: argparse.Namespace, reporter: Reporter) -> None:
    passphrase = get_passphrase(_sources(args))
    total = os.path.getsize(args.archive) if os.path.isfile(args.archive) else None
    bar = _progress_bar(total, _want_progress(args))

    def advance(n: int) -> None:
        bar.update(n)

    try:
        restore_archive(args.archive, args.dest, passphrase, reporter, progress=advance)
    finally:
        bar.close()


def cmd_list(args: argparse.Namespace, reporter: Reporter) -> None:
    passphrase = get_passphrase(_sources(args))
    list_archive(args.archive, passphrase, reporter)


COMMANDS = {"create": cmd_create, "restore": cmd_restore, "list": cmd_list, "keys": cmd_keys}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EXIT_FATAL
    reporter = Reporter(PROG)
    try:
        COMMANDS[args.command](args, reporter)
    except PlanRejected as e:
        for problem in e.problems:
            print(f"{PROG}: {problem}", file=sys.stderr)
        _fatal(e)
        return e.exit_code
    except EcarchiveError as e:
        _fatal(e)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return reporter.exit_code


def _fatal(e: EcarchiveError) -> None:
    print(f"{PROG}: error: {e}", file=sys.stderr)
    if e.hint:
        print(f"{PROG}: hint: {e.hint}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
