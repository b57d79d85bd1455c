"""Command line: argument parsing, passphrase sources, progress, errors → exit codes.

No format knowledge lives here: it wires the planner, the reader and the sinks together.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

from . import __version__
from .create import Destinations, Format, progress_bar, split, write_volumes
from .ecryptfs.constants import AES_CODES
from .ecryptfs.keys import FnekMode, KeySet, derive_keyset
from .ecryptfs.names import encrypt_name
from .errors import EXIT_FATAL, EcarchiveError, PlanRejected, Reporter, UsageError
from .keysource import FreshKeys, KeySource
from .keystore import XATTR_NAME, StableKeys
from .listing import list_archive
from .manifest import MANIFEST_NAME, Facts, ManifestBuilder, append_manifest, tree_time_ns
from .model import Entry
from .output import Output
from .passphrase import ENV_VAR, PassphraseSources, get_passphrase
from .plan import PlanOptions, build_plan, read_exclude_file
from .reader import EncryptingReader
from .restore import restore_archive
from .restoretext import RESTORE_NAME, MountSpec, restore_text
from .sinks.iso import SECTOR_SIZE, volume_identifier
from .verify import verify_archive
from .volumes import parse_media

DEFAULT_LABEL = "ECARCHIVE"

PROG = "ecarchive"
USAGE = f"{PROG} COMMAND [options] ..."
DESCRIPTION = f"""\
commands:
  {PROG} create [-o OUT|-] [options] SOURCE   stream SOURCE as a tar or ISO of eCryptfs lower files
  {PROG} restore ARCHIVE|- DEST                decrypt an archive (tar, ISO or directory) into DEST
  {PROG} list ARCHIVE|-                        list decrypted paths, types and sizes
  {PROG} verify ARCHIVE|DIR                    check hashes (and, with a passphrase, the HMAC)
  {PROG} keys                                  print key signatures and the mount command

'{PROG} COMMAND --help' lists a command's options; 'man ecarchive' has the rest.
"""
EPILOG = f"""\
passphrase: --passphrase-file F, --passphrase-fd N, ${ENV_VAR},
  --wrapped-passphrase FILE (~/.ecryptfs/wrapped-passphrase), else asked on the terminal.

examples:
  {PROG} create ~/Documents -o docs.tar
  {PROG} create ~ --passphrase-file key.txt | ssh nas 'cat > home.tar'
  {PROG} create ~ --format iso | growisofs -Z /dev/dvd=/dev/stdin
  {PROG} create ~ --media dvd --volume-command 'growisofs -Z /dev/dvd=/dev/stdin'
  ssh nas 'cat home.tar' | {PROG} restore - ~/restored
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
        prog=PROG,
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS)

    c = sub.add_parser(
        "create",
        help="stream SOURCE as an archive of eCryptfs lower files",
        epilog=EPILOG,
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
        default=DEFAULT_LABEL,
        help=f"ISO volume identifier (default {DEFAULT_LABEL})",
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
    _add_key_options(c)
    c.add_argument(
        "--lower-name",
        metavar="NAME",
        default="Private",
        help="name of the lower directory in the archive (default Private)",
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

    v = sub.add_parser("verify", help="check an archive, directory or disc against its manifest")
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
    _add_passphrase_options(v)

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


def _format_of(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    return "iso" if args.output.lower().endswith(".iso") else "tar"


def _excludes(args: argparse.Namespace) -> tuple[str, ...]:
    excludes = tuple(args.exclude)
    for path in args.exclude_from:
        try:
            excludes += read_exclude_file(path)
        except OSError as e:
            raise UsageError(f"cannot read exclude file {path}: {e.strerror}") from e
    return excludes


def _key_store_excludes(args: argparse.Namespace) -> tuple[str, ...]:
    """Never archive the key store itself: it changes while the archive is written."""
    if not args.key_store:
        return ()
    store = os.path.realpath(args.key_store)
    rel = os.path.relpath(store, os.path.realpath(args.source))
    if rel.startswith(os.pardir):
        return ()
    pattern = "/" + glob.escape(rel)
    return (pattern, pattern + "-journal")


def _check_create_args(args: argparse.Namespace, fmt: str) -> None:
    lower = args.lower_name.encode()
    if not lower or b"/" in lower or lower in (b".", b"..", RESTORE_NAME, MANIFEST_NAME):
        raise UsageError(f"--lower-name {args.lower_name!r} is not a usable directory name")
    if args.print_size and fmt != "iso":
        raise UsageError("--print-size is exact for ISO images only", hint="add --format iso")
    if (args.volume is not None or args.volume_command) and not args.media:
        raise UsageError("--volume and --volume-command need --media")
    if args.volume_command and args.volume is not None:
        raise UsageError("--volume-command writes every volume; drop --volume")
    if (args.key_store or args.rotate_keys_on_change) and not args.stable_keys:
        raise UsageError("--key-store and --rotate-keys-on-change need --stable-keys")


def cmd_create(args: argparse.Namespace, reporter: Reporter) -> None:
    fmt_name = _format_of(args)
    _check_create_args(args, fmt_name)
    capacity = parse_media(args.media) if args.media else None
    if fmt_name == "iso":
        volume_identifier(args.volume_label)  # a bad label fails before anything else
    excludes = _excludes(args) + _key_store_excludes(args)
    if not args.print_size and not args.media:
        Output(args.output).check_not_terminal()
    if args.print_size:
        # Sizes do not depend on the key (signatures and names have fixed lengths): no prompt.
        keys = derive_keyset(b"sizes only", FnekMode(args.fnek))
    else:
        keys = _keyset(args, confirm=True)
    spec = MountSpec(keys=keys, key_bytes=args.key_bytes)
    fnek = keys.fnek

    def encrypt(name: bytes) -> bytes:
        return name if fnek is None else encrypt_name(name, fnek, args.key_bytes)

    text = restore_text(spec, args.lower_name, iso=fmt_name == "iso")
    plan = build_plan(
        PlanOptions(
            source=os.fsencode(args.source),
            encrypt=encrypt,
            names_encrypted=fnek is not None,
            lower_root=args.lower_name.encode(),
            excludes=excludes,
            one_file_system=args.one_file_system,
            skip_long_names=args.long_names == "skip",
            top_files=((RESTORE_NAME, text),),
        ),
        reporter,
    )
    if plan.problems:
        raise PlanRejected(plan.problems, hint="fix or --exclude these paths; nothing was written")
    tree_time = tree_time_ns(plan.entries)
    fmt = Format(fmt_name, args.volume_label, tree_time)
    facts = Facts(
        cipher=args.cipher,
        key_bytes=args.key_bytes,
        file_sig=keys.file_key.sig_hex,
        fnek_sig=fnek.sig_hex if fnek else None,
        lower_root=plan.lower_root,
        created_ns=tree_time,
    )
    # The manifest's size goes into the split, so every volume is measured with its own.
    volumes = split(append_manifest(plan.entries, facts), fmt, capacity)
    if len(volumes) > 1:
        volumes = [
            append_manifest(v, replace(facts, volume=n, volumes=len(volumes)))
            for n, v in enumerate(volumes, 1)
        ]
    if args.print_size:
        for n, entries in enumerate(volumes, 1):
            size = fmt.size(entries)
            label = f"volume {n}: " if len(volumes) > 1 else ""
            print(f"{label}{size} bytes, {size // SECTOR_SIZE} sectors of {SECTOR_SIZE} bytes")
        return
    dest = Destinations(
        args.output, volume_count=len(volumes), command=args.volume_command, only=args.volume
    )
    dest.check()
    keysource: KeySource
    if args.stable_keys:
        keysource = StableKeys(
            keys.file_key,
            args.key_bytes,
            reporter,
            store_path=args.key_store,
            rotate_on_change=args.rotate_keys_on_change,
        )
    else:
        keysource = FreshKeys(keys.file_key, args.key_bytes)
    reader = EncryptingReader(keysource, filenames_encrypted=fnek is not None, reporter=reporter)
    if len(volumes) > 1:
        reporter.note(f"{len(volumes)} volumes of at most {capacity} bytes")

    def manifest(number: int, entries: tuple[Entry, ...]) -> ManifestBuilder:
        return ManifestBuilder(
            entries, replace(facts, volume=number, volumes=len(volumes)), keys.file_key
        )

    try:
        write_volumes(
            volumes, fmt, reader, dest, args.volume, _want_progress(args), reporter, manifest
        )
    finally:
        if isinstance(keysource, StableKeys):
            keysource.close()


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
    bar = progress_bar(total, _want_progress(args))

    def advance(n: int) -> None:
        bar.update(n)

    try:
        restore_archive(args.archive, args.dest, passphrase, reporter, progress=advance)
    finally:
        bar.close()


def cmd_verify(args: argparse.Namespace, reporter: Reporter) -> int:
    given = args.passphrase_file or args.passphrase_fd is not None or args.wrapped_passphrase
    passphrase = None
    if given or args.ask_passphrase or args.against or ENV_VAR in os.environ:
        sources = replace(_sources(args), prompt_allowed=bool(args.ask_passphrase or args.against))
        passphrase = get_passphrase(sources)
    return verify_archive(
        args.archive, passphrase=passphrase, against=args.against, reporter=reporter, out=sys.stdout
    )


def cmd_list(args: argparse.Namespace, reporter: Reporter) -> None:
    passphrase = get_passphrase(_sources(args))
    list_archive(args.archive, passphrase, reporter)


COMMANDS = {
    "create": cmd_create,
    "restore": cmd_restore,
    "list": cmd_list,
    "verify": cmd_verify,
    "keys": cmd_keys,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EXIT_FATAL
    reporter = Reporter(PROG)
    try:
        code = COMMANDS[args.command](args, reporter)
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
    return max(reporter.exit_code, code or 0)


def _fatal(e: EcarchiveError) -> None:
    print(f"{PROG}: error: {e}", file=sys.stderr)
    if e.hint:
        print(f"{PROG}: hint: {e.hint}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
