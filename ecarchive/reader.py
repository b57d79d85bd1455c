"""The encrypting reader: one plan entry → its lower bytes (header, then extents).

The one hot path. It reads each file once with a fixed-size buffer and applies GNU tar's rules
for files that change while read: pad a file that shrank, cut one that grew, flag a changed mtime.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from .ecryptfs.constants import EXTENT_SIZE
from .ecryptfs.extent import encrypt_extents, root_iv
from .ecryptfs.header import build_header
from .errors import Reporter
from .keysource import KeySource
from .model import Entry

CHUNK = 1 << 20  # bytes of plaintext encrypted per call; a multiple of EXTENT_SIZE
_ZEROS = bytes(CHUNK)
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0)
Chunk = bytes | bytearray | memoryview


def _open(path: bytes) -> int:
    try:
        return os.open(path, _OPEN_FLAGS)
    except PermissionError:
        # O_NOATIME is refused on files we do not own unless we are root
        return os.open(path, _OPEN_FLAGS & ~getattr(os, "O_NOATIME", 0))


def _read_full(fd: int, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return got


class EncryptingReader:
    """Yields lower bytes for FILE entries. Chunks are views into reused buffers: consume each
    before asking for the next."""

    def __init__(self, keys: KeySource, *, filenames_encrypted: bool, reporter: Reporter) -> None:
        self.keys = keys
        self.filenames_encrypted = filenames_encrypted
        self.reporter = reporter
        self._in = bytearray(CHUNK)
        self._out = bytearray(CHUNK)

    def open(self, entry: Entry) -> Iterator[Chunk] | None:
        """The entry's lower bytes, or None when its file vanished (warned; the sink skips it)."""
        if entry.data is not None:
            return iter((entry.data,))
        assert entry.source is not None
        try:
            fd = _open(entry.source)
        except FileNotFoundError:
            self.reporter.warn(f"{os.fsdecode(entry.rel)}: file removed before we read it")
            return None
        except OSError as e:
            self.reporter.warn(f"{os.fsdecode(entry.rel)}: cannot open: {e.strerror}; skipped")
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            self.reporter.warn(f"{os.fsdecode(entry.rel)}: no longer a regular file; skipped")
            return None
        return self._stream(entry, fd)

    def _stream(self, entry: Entry, fd: int) -> Iterator[Chunk]:
        try:
            material = self.keys.material(entry)
            yield build_header(
                entry.plain_size,
                material.marker,
                material.packets,
                filenames_encrypted=self.filenames_encrypted,
            )
            fek, iv = material.fek, root_iv(material.fek)
            src, dst = memoryview(self._in), memoryview(self._out)
            remaining, index, eof = entry.plain_size, 0, False
            while remaining > 0:
                want = min(CHUNK, remaining)
                got = 0 if eof else _read_full(fd, src[:want])
                if got < want and not eof:
                    eof = True
                    self.reporter.warn(
                        f"{os.fsdecode(entry.rel)}: file shrank by {remaining - got} bytes; "
                        "padding with zeros"
                    )
                padded = -(-want // EXTENT_SIZE) * EXTENT_SIZE
                if got < padded:
                    src[got:padded] = _ZEROS[: padded - got]
                encrypt_extents(fek, iv, index, src[:padded], dst[:padded])
                yield dst[:padded]
                index += padded // EXTENT_SIZE
                remaining -= want
            if not eof and os.read(fd, 1):
                self.reporter.warn(
                    f"{os.fsdecode(entry.rel)}: file grew while read; cut at {entry.plain_size} bytes"
                )
            elif os.fstat(fd).st_mtime_ns != entry.mtime_ns:
                self.reporter.warn(f"{os.fsdecode(entry.rel)}: file changed as we read it")
        finally:
            os.close(fd)
