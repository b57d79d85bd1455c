"""The output: stdout, a device or FIFO, or a named file; never destroys what it did not make.

A regular file is written under a temporary name in its directory and renamed over the final
name only once complete, so a failed or interrupted run leaves the previous archive (or
nothing) under that name, never a truncated one. Anything else that already exists (a FIFO,
a tape or disc device, /dev/stdout) is opened and written as it is, and never removed.
The output is opened lazily, after the plan, so a rejected plan leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import sys
import tempfile
from collections.abc import Iterator

from .errors import OutputFailed, UsageError

_TEMP_SUFFIX = ".part"
# A pipe holds 64 KiB by default, so every 1 MiB block the tar sink writes woke the reader and
# put the writer to sleep 16 times; 1 MiB is what an unprivileged process may ask for by
# default (/proc/sys/fs/pipe-max-size).
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def widen_pipe(fd: int) -> None:
    """Give a pipe we write to room for a whole block, where the kernel allows it."""
    with contextlib.suppress(OSError):
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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

    def identity(self) -> tuple[int, int] | None:
        """(st_dev, st_ino) of the regular file the output already is, so the plan can leave
        it out (a device such as /dev/null is not the archive, as in GNU tar)."""
        try:
            st = os.fstat(sys.stdout.fileno()) if self.is_stdout else os.stat(self.name)
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None

    @contextlib.contextmanager
    def open(self) -> Iterator[int]:
        """Yield a file descriptor to write the archive to."""
        if self.is_stdout:
            widen_pipe(sys.stdout.fileno())
            yield sys.stdout.fileno()
            return
        try:
            st: os.stat_result | None = os.stat(self.name)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise OutputFailed(f"cannot create {self.name}: {e.strerror}") from e
        if st is not None and not stat.S_ISREG(st.st_mode):
            yield from self._existing_node()
        else:
            yield from self._replaced_file()

    def _existing_node(self) -> Iterator[int]:
        # A device, FIFO or socket path: written as it is, never truncated or removed.
        try:
            fd = os.open(self.name, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise OutputFailed(f"cannot open {self.name}: {e.strerror}") from e
        widen_pipe(fd)
        try:
            yield fd
        finally:
            os.close(fd)

    def _replaced_file(self) -> Iterator[int]:
        final = os.path.realpath(self.name)  # a symlink to the archive stays a symlink
        directory, base = os.path.split(final)
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{base}.", suffix=_TEMP_SUFFIX, dir=directory)
        except OSError as e:
            raise OutputFailed(f"cannot create {self.name}: {e.strerror}") from e
        done = False
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # what open(O_CREAT, 0666) would have made
            yield fd
            try:
                os.rename(temp, final)
            except OSError as e:
                raise OutputFailed(f"cannot rename {temp} to {self.name}: {e.strerror}") from e
            done = True
        finally:
            os.close(fd)
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(temp)  # ours: made by mkstemp above
