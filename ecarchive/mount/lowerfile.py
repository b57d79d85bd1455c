"""The lower bytes of one open plaintext file, at any offset: header, then encrypted extents.

An extent depends only on its own plaintext, the file key and the root IV
(fs/ecryptfs/crypto.c: crypt_extent, ecryptfs_derive_iv), so any byte range is the header's
bytes and the encryption of the extents it touches. The size is fixed when the file is opened,
as `create` fixes it in the plan: a file that shrinks reads as zeros up to that size, one that
grows is cut there.

Sequential readers (rsync, cp, tar) ask for 128 KiB at a time; encrypting a 1 MiB window
instead lets `encrypt_extents` run its interleaved path and serves the next reads from it.
"""

from __future__ import annotations

import os
import threading

from ..ecryptfs.constants import EXTENT_SIZE, HEADER_SIZE
from ..ecryptfs.extent import encrypt_extents, root_iv
from ..ecryptfs.header import build_header
from ..ecryptfs.sizes import extent_count, lower_size
from ..errors import Reporter
from ..keysource import KeyMaterial

WINDOW = 1 << 20  # bytes encrypted ahead for a sequential reader; a multiple of EXTENT_SIZE
_WINDOW_EXTENTS = WINDOW // EXTENT_SIZE
_ZEROS = bytes(WINDOW)


class LowerFile:
    """An open plaintext file (its descriptor is owned and closed here) seen as its lower file."""

    def __init__(
        self,
        fd: int,
        st: os.stat_result,
        material: KeyMaterial,
        *,
        filenames_encrypted: bool,
        rel: bytes,
        reporter: Reporter,
    ) -> None:
        self.fd = fd
        self.rel = rel
        self.reporter = reporter
        self.plain_size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.size = lower_size(st.st_size)
        self.header = build_header(
            st.st_size, material.marker, material.packets, filenames_encrypted=filenames_encrypted
        )
        self._fek = material.fek
        self._iv = root_iv(material.fek)
        self._extents = extent_count(st.st_size)
        self._lock = threading.Lock()  # FUSE may read one handle from several threads
        self._buffer = bytearray()
        self._first = 0  # extent index of the window's first extent
        self._count = 0  # extents held in the window
        self._next = -1  # where the previous read ended: a read starting there is sequential
        self._short = False

    def read(self, offset: int, size: int) -> bytes:
        out = bytearray(max(0, min(size, self.size - offset)))
        return bytes(memoryview(out)[: self.read_into(offset, out)])

    def read_into(self, offset: int, out: bytearray | memoryview) -> int:
        """Copy the lower bytes from `offset` into `out` (FUSE's own reply buffer), at most
        len(out) of them; returns how many (0 at or past the end)."""
        view = memoryview(out).cast("B")
        end = min(offset + len(view), self.size)
        if offset < 0 or offset >= end:
            return 0
        with self._lock:
            done = 0
            if offset < HEADER_SIZE:
                done = min(end, HEADER_SIZE) - offset
                view[:done] = self.header[offset : offset + done]
            if end > HEADER_SIZE:
                lo = max(offset, HEADER_SIZE) - HEADER_SIZE
                view[done : end - offset] = self._data(
                    lo, end - HEADER_SIZE, sequential=offset == self._next
                )
            self._next = end
        return end - offset

    def _data(self, lo: int, hi: int, *, sequential: bool) -> memoryview:
        """Plaintext offsets lo..hi of the lower data, encrypted: a view into the window, valid
        while the lock is held."""
        first = lo // EXTENT_SIZE
        last = -(-hi // EXTENT_SIZE)
        if not (self._first <= first and last <= self._first + self._count):
            count = last - first
            if sequential:
                count = min(max(count, _WINDOW_EXTENTS), self._extents - first)
            self._fill(first, count)
        base = self._first * EXTENT_SIZE
        return memoryview(self._buffer)[lo - base : hi - base]

    def _fill(self, first: int, count: int) -> None:
        """Read and encrypt extents first .. first+count-1 into the window."""
        length = count * EXTENT_SIZE
        if len(self._buffer) < length:
            self._buffer = bytearray(length)
        view = memoryview(self._buffer)[:length]
        start = first * EXTENT_SIZE
        want = max(0, min(length, self.plain_size - start))
        got = 0
        while got < want:
            n = os.preadv(self.fd, [view[got:want]], start + got)
            if n == 0:
                break
            got += n
        if got < want and not self._short:
            self._short = True
            self.reporter.warn(
                f"{os.fsdecode(self.rel)}: file shrank while read; padding with zeros"
            )
        _zero(view[got:])
        encrypt_extents(self._fek, self._iv, first, view, view)
        self._first, self._count = first, count

    def close(self) -> None:
        """Close the plaintext; name a file that changed while it was read (GNU tar's rule)."""
        try:
            if self._next < 0:
                return  # opened, never read: nothing was served that could be inconsistent
            st = os.fstat(self.fd)
            if not self._short and st.st_size > self.plain_size:
                self.reporter.warn(
                    f"{os.fsdecode(self.rel)}: file grew while read; cut at {self.plain_size} bytes"
                )
            elif st.st_mtime_ns != self.mtime_ns:
                self.reporter.warn(f"{os.fsdecode(self.rel)}: file changed as we read it")
        finally:
            os.close(self.fd)


def _zero(view: memoryview) -> None:
    for start in range(0, len(view), WINDOW):
        chunk = view[start : start + WINDOW]
        chunk[:] = _ZEROS[: len(chunk)]
