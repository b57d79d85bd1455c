"""The encrypting reader: one plan entry → its lower bytes (header, then extents).

The one hot path. It reads each file once with fixed-size buffers and applies GNU tar's rules
for files that change while read: pad a file that shrank, cut one that grew, flag a changed
mtime. Files larger than one slot are encrypted by a helper process (pipeline.Coprocessor)
while this process reads ahead and the sink writes out; smaller ones are encrypted here, where
a round trip to the helper would cost more than the work.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Iterator

from .ecryptfs.constants import EXTENT_SIZE
from .ecryptfs.extent import encrypt_extents, root_iv
from .ecryptfs.header import build_header
from .errors import Reporter
from .keysource import KeySource
from .model import Entry
from .pipeline import IN_FLIGHT, SLOT_SIZE, SLOTS, Coprocessor

CHUNK = 1 << 20  # bytes of plaintext encrypted per call; a multiple of EXTENT_SIZE
_ZEROS = bytes(max(CHUNK, SLOT_SIZE))
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


class _Plaintext:
    """One open file read chunk by chunk, padded to whole extents, with GNU tar's rules."""

    def __init__(self, fd: int, entry: Entry, reporter: Reporter) -> None:
        self.fd = fd
        self.entry = entry
        self.reporter = reporter
        self.remaining = entry.plain_size
        self.eof = False

    def fill(self, buf: memoryview) -> int:
        """Read the next chunk (at most len(buf) bytes) into buf; returns its length padded
        to whole extents, 0 once the planned size is reached."""
        want = min(len(buf), self.remaining)
        if want <= 0:
            return 0
        got = 0 if self.eof else _read_full(self.fd, buf[:want])
        if got < want and not self.eof:
            self.eof = True
            self.reporter.warn(
                f"{os.fsdecode(self.entry.rel)}: file shrank by {self.remaining - got} bytes; "
                "padding with zeros"
            )
        padded = -(-want // EXTENT_SIZE) * EXTENT_SIZE
        if got < padded:
            buf[got:padded] = _ZEROS[: padded - got]
        self.remaining -= want
        return padded

    def finish(self) -> None:
        # One fstat tells both: a regular file grew iff its size passed what we planned.
        st = os.fstat(self.fd)
        if not self.eof and st.st_size > self.entry.plain_size:
            self.reporter.warn(
                f"{os.fsdecode(self.entry.rel)}: file grew while read; "
                f"cut at {self.entry.plain_size} bytes"
            )
        elif st.st_mtime_ns != self.entry.mtime_ns:
            self.reporter.warn(f"{os.fsdecode(self.entry.rel)}: file changed as we read it")


class EncryptingReader:
    """Yields lower bytes for FILE entries. Chunks are views into reused buffers: consume each
    before asking for the next."""

    def __init__(
        self,
        keys: KeySource,
        *,
        filenames_encrypted: bool,
        reporter: Reporter,
        parallel: bool = True,
    ) -> None:
        self.keys = keys
        self.filenames_encrypted = filenames_encrypted
        self.reporter = reporter
        self.parallel = parallel
        self._buffer = bytearray(CHUNK)
        self._helper: Coprocessor | None = None

    def close(self) -> None:
        """Stop the helper process, if one was started (also done when garbage collected)."""
        if self._helper is not None:
            self._helper.close()
            self._helper = None

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
            source = _Plaintext(fd, entry, self.reporter)
            fek = material.fek
            if self.parallel and entry.plain_size > SLOT_SIZE:
                yield from self._encrypt_in_helper(source, fek)
            else:
                yield from self._encrypt_here(source, fek)
            source.finish()
        finally:
            os.close(fd)

    def _encrypt_here(self, source: _Plaintext, fek: bytes) -> Iterator[Chunk]:
        buf = memoryview(self._buffer)
        iv = root_iv(fek)
        index = 0
        while padded := source.fill(buf):
            view = buf[:padded]
            encrypt_extents(fek, iv, index, view, view)
            yield view
            index += padded // EXTENT_SIZE

    def _encrypt_in_helper(self, source: _Plaintext, fek: bytes) -> Iterator[Chunk]:
        """Share the extents with the helper: it always has work queued, and whenever the
        next chunk due is still at the helper, this process encrypts a later one itself
        instead of waiting. Chunks are yielded in file order."""
        if self._helper is None:
            self._helper = Coprocessor()
        helper = self._helper
        slots = helper.slots
        iv = root_iv(fek)
        free = list(range(SLOTS))
        due: deque[tuple[int, int, bool]] = deque()  # (slot, length, at the helper) in order
        queued = 0  # requests the helper has not answered yet
        index = 0

        def fill() -> tuple[int, int, int]:
            nonlocal index
            slot = free.pop()
            padded = source.fill(slots[slot])
            first = index
            index += padded // EXTENT_SIZE
            return slot, padded, first

        try:
            while True:
                while free and source.remaining > 0 and queued < IN_FLIGHT:
                    slot, padded, first = fill()
                    helper.submit(slot, padded, fek, iv, first)
                    due.append((slot, padded, True))
                    queued += 1
                if not due:
                    return
                slot, padded, remote = due[0]
                if remote and not helper.ready() and free and source.remaining > 0:
                    mine, length, first = fill()
                    view = slots[mine][:length]
                    encrypt_extents(fek, iv, first, view, view)
                    due.append((mine, length, False))
                    continue
                if remote:
                    helper.wait()
                    queued -= 1
                due.popleft()
                yield slots[slot][:padded]
                free.append(slot)
        finally:
            # Abandoned midway (the sink failed): collect the answers still owed, so the
            # next file does not read them as its own.
            for _ in range(queued):
                helper.wait()
