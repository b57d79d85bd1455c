"""Errors and warnings: each class carries its message and GNU-tar-like exit code.

Exit status: 0 success, 1 some files changed, vanished or were skipped (warnings), 2 fatal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

EXIT_OK = 0
EXIT_WARNINGS = 1
EXIT_FATAL = 2


class EcarchiveError(Exception):
    """Base of every fatal error; str(e) is the one-line message shown to the user."""

    exit_code = EXIT_FATAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(EcarchiveError):
    """Bad command line or option combination."""


class PassphraseUnavailable(EcarchiveError):
    """No passphrase source applies, or the passphrase is unacceptable."""


class WrongPassphrase(EcarchiveError):
    """The archive was made with other keys than the passphrase gives."""


class PlanRejected(EcarchiveError):
    """Problems found by the pre-scan; nothing was written."""

    def __init__(self, problems: Iterable[str], hint: str | None = None) -> None:
        self.problems = tuple(problems)
        n = len(self.problems)
        super().__init__(
            f"{n} problem{'s' if n != 1 else ''} found before writing; nothing was written", hint
        )


class OutputFailed(EcarchiveError):
    """The output (pipe, file, disk) failed while streaming."""


class ArchiveUnreadable(EcarchiveError):
    """The input archive cannot be read at all."""


class NoArchiveFound(ArchiveUnreadable):
    """The input holds no ecarchive archive: empty, blank, or something else entirely."""


class Interrupted(KeyboardInterrupt):
    """A signal that ends the run as Ctrl-C does (SIGTERM, SIGHUP); exit status 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Reporter:
    """Collects warnings while work goes on and prints each once, on stderr."""

    def __init__(self, prog: str = "ecarchive", stream: TextIO | None = None) -> None:
        self.prog = prog
        self.warnings: list[str] = []
        self.exit_code = EXIT_OK
        self._stream = stream

    def warn(self, message: str, *, affects_exit: bool = True) -> None:
        self.warnings.append(message)
        if affects_exit:
            self.exit_code = max(self.exit_code, EXIT_WARNINGS)
        print(f"{self.prog}: warning: {message}", file=self._stream or sys.stderr, flush=True)

    def note(self, message: str) -> None:
        print(f"{self.prog}: {message}", file=self._stream or sys.stderr, flush=True)
