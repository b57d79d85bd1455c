"""The output: stdout or a named file, opened lazily so a failed plan leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from .errors import OutputFailed, UsageError


class Output:
    def __init__(self, name: str) -> None:
        self.name = name
        self.is_stdout = name == "-"

    def check_not_terminal(self) -> None:
        if self.is_stdout and os.isatty(sys.stdout.fileno()):
            raise UsageError(
                "refusing to write a binary archive to a terminal",
                hint="use -o FILE, redirect stdout, or pipe it, e.g. | growisofs -Z /dev/dvd=/dev/stdin",
            )

    @contextlib.contextmanager
    def open(self) -> Iterator[int]:
        """Yield a file descriptor; a named file is removed again if writing fails."""
        if self.is_stdout:
            yield sys.stdout.fileno()
            return
        try:
            fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except OSError as e:
            raise OutputFailed(f"cannot create {self.name}: {e.strerror}") from e
        ok = False
        try:
            yield fd
            ok = True
        finally:
            os.close(fd)
            if not ok:
                with contextlib.suppress(OSError):
                    os.unlink(self.name)
