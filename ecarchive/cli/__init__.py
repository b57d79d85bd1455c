"""Command line: one module per verb (parsing only); the work is done by `ecarchive.api`.

Every verb module has `add_parser(sub, prog)`, which registers its options and sets `run`, and
`run(args, reporter) -> exit status`. Errors become one line on stderr and their exit code.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import EXIT_FATAL, EcarchiveError, Interrupted, PlanRejected, Reporter
from . import create, keys, mount, restore, umount, verify
from . import list as list_
from ._options import EXAMPLES, PROG

EXIT_INTERRUPTED = 130
VERBS = (create, restore, list_, verify, keys, mount, umount)
USAGE = f"{PROG} COMMAND [options] ..."
DESCRIPTION = f"""\
commands:
  {PROG} create [-o OUT|-] [options] SOURCE   stream SOURCE as a tar or ISO of eCryptfs lower files
  {PROG} restore ARCHIVE|- DEST                decrypt an archive (tar, ISO or directory) into DEST
  {PROG} list ARCHIVE|-                        list decrypted paths, types and sizes
  {PROG} verify ARCHIVE|DIR                    check hashes (and, with a passphrase, the HMAC)
  {PROG} keys                                  print key signatures and the mount command
  {PROG} mount [options] SOURCE MOUNTPOINT     read-only FUSE view of SOURCE as a lower directory
  {PROG} umount MOUNTPOINT                     unmount it

'{PROG} COMMAND --help' lists a command's options; 'man ecarchive' has the rest.
"""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS)
    verbs = {}
    for verb in VERBS:
        p = verb.add_parser(sub, PROG)
        verbs[p.prog.split()[-1]] = p
    return parser, verbs


def main(argv: Sequence[str] | None = None) -> int:
    parser, verbs = build_parser()
    # argparse reports an unknown option with the top-level usage; the verb's is the useful one
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EXIT_FATAL
    if unknown:
        verbs[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    reporter = Reporter(PROG)
    try:
        code = args.run(args, reporter)
    except PlanRejected as e:
        for problem in e.problems:
            print(f"{PROG}: {problem}", file=sys.stderr)
        _fatal(e)
        return e.exit_code
    except EcarchiveError as e:
        _fatal(e)
        return e.exit_code
    except Interrupted as e:
        print(f"{PROG}: interrupted by {signal.Signals(e.signum).name}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return max(reporter.exit_code, code or 0)


def _fatal(e: EcarchiveError) -> None:
    print(f"{PROG}: error: {e}", file=sys.stderr)
    if e.hint:
        print(f"{PROG}: hint: {e.hint}", file=sys.stderr)
