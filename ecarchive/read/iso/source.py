"""An ISO image read strictly front to back from one file descriptor (a file or a pipe)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat

SKIP_CHUNK = 1 << 20  # a pipe is skipped by reading into a buffer of this size
PIPE_SIZE = 1 << 20  # fewer, larger reads from a pipe (the default pipe-max-size)


class ImageEnded(Exception):
    """The image ends before a byte that was asked for."""


class ImageSource:
    """Reads and skips forward only; `pos` is the byte offset in the image.

    `head` holds the bytes already taken from the descriptor to recognise the image; they are
    served first, so sniffing a pipe loses nothing.
    """

    def __init__(self, fd: int, head: bytes = b"") -> None:
        self._fd = fd
        self._head = memoryview(head)
        self.pos = 0
        st = os.fstat(fd)
        self.seekable = stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)
        # a regular file's real size bounds every extent (a block device's is not in st_size)
        self.real_size: int | None = st.st_size if stat.S_ISREG(st.st_mode) else None
        self._scratch: bytearray | None = None
        if stat.S_ISFIFO(st.st_mode):
            # only an optimisation: refused above pipe-max-size or for an unprivileged user
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)

    def readinto(self, view: memoryview) -> int:
        """Fill `view` from `pos`; fewer bytes only at the end of the image."""
        got = 0
        want = len(view)
        if self._head:
            got = min(len(self._head), want)
            view[:got] = self._head[:got]
            self._head = self._head[got:]
        while got < want:
            try:
                n = os.readv(self._fd, [view[got:]])
            except InterruptedError:
                continue
            if n == 0:
                break
            got += n
        self.pos += got
        return got

    def read_exact(self, size: int) -> bytes:
        buf = bytearray(size)
        if self.readinto(memoryview(buf)) != size:
            raise ImageEnded(f"the image ends before byte {self.pos + 1}")
        return bytes(buf)

    def skip_to(self, offset: int) -> None:
        """Advance to `offset` (never backwards: the caller checks `pos` first)."""
        if offset < self.pos:
            raise ValueError(f"cannot go back from byte {self.pos} to {offset}")
        gap = offset - self.pos
        if gap and self._head:
            step = min(gap, len(self._head))
            self._head = self._head[step:]
            self.pos += step
            gap -= step
        if not gap:
            return
        if self.seekable:
            os.lseek(self._fd, gap, os.SEEK_CUR)
            self.pos += gap
            return
        if self._scratch is None:
            self._scratch = bytearray(SKIP_CHUNK)
        scratch = memoryview(self._scratch)
        while gap:
            n = self.readinto(scratch[: min(gap, SKIP_CHUNK)])
            if n == 0:
                raise ImageEnded(f"the image ends at byte {self.pos}")
            gap -= n

    def peek_at(self, offset: int, size: int) -> bytes | None:
        """`size` bytes at `offset` without moving, or None when the input cannot seek."""
        if not self.seekable:
            return None
        try:
            return os.pread(self._fd, size, offset)
        except OSError:
            return None
