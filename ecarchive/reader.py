"""The encrypting reader: one plan entry → its lower bytes (header, then extents).

The one hot path. It reads each file once with fixed-size buffers and applies GNU tar's rules
for files that change while read: pad a file that shrank, cut one that grew, flag a changed
mtime. A helper process (pipeline.Coprocessor) takes work off this one, which also hashes and
writes:

* files larger than one slot: the helper encrypts their extents while this process reads
  ahead (and encrypts a later chunk itself rather than wait);
* small files, once the sink has said in which order it will ask for them (`expect`): the
  helper reads and encrypts them in batches ahead of time.

Smaller files without `expect` are encrypted here, where a round trip would cost more than
the work.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .ecryptfs.constants import EXTENT_SIZE
from .ecryptfs.extent import encrypt_extents, root_iv
from .ecryptfs.header import build_header
from .errors import Reporter
from .keysource import FreshKeys, KeyMaterial, KeySource
from .model import Entry, Kind
from .pipeline import (
    BATCH_FILES,
    BATCH_SLOTS,
    CHANGED,
    GREW,
    IN_FLIGHT,
    SLOT_SIZE,
    SLOTS,
    Coprocessor,
    SmallFile,
    SmallResult,
    Status,
    open_plain,
    padded,
    read_full,
)

CHUNK = 1 << 20  # bytes of plaintext encrypted per call; a multiple of EXTENT_SIZE
# Files up to this size are batched for the helper; a batch slot holds at least four.
SMALL_FILE = SLOT_SIZE // 4
_ZEROS = bytes(max(CHUNK, SLOT_SIZE))
Chunk = bytes | bytearray | memoryview


def _shrank(entry: Entry, missing: int) -> str:
    return f"{os.fsdecode(entry.rel)}: file shrank by {missing} bytes; padding with zeros"


def _grew(entry: Entry) -> str:
    return f"{os.fsdecode(entry.rel)}: file grew while read; cut at {entry.plain_size} bytes"


def _changed(entry: Entry) -> str:
    return f"{os.fsdecode(entry.rel)}: file changed as we read it"


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
        got = 0 if self.eof else read_full(self.fd, buf[:want])
        if got < want and not self.eof:
            self.eof = True
            self.reporter.warn(_shrank(self.entry, self.remaining - got))
        size = padded(want)
        if got < size:
            buf[got:size] = _ZEROS[: size - got]
        self.remaining -= want
        return size

    def finish(self) -> None:
        # One fstat tells both: a regular file grew iff its size passed what we planned.
        st = os.fstat(self.fd)
        if not self.eof and st.st_size > self.entry.plain_size:
            self.reporter.warn(_grew(self.entry))
        elif st.st_mtime_ns != self.entry.mtime_ns:
            self.reporter.warn(_changed(self.entry))


@dataclass(slots=True)
class _Batch:
    """Small files the helper reads into one batch slot, in the order they will be asked for."""

    slot: int
    entries: list[Entry] = field(default_factory=list)
    materials: list[KeyMaterial] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    ticket: int = 0
    results: list[SmallResult] | None = None
    served: int = 0


class _Ahead:
    """The expected order of FILE entries, cut into batches of small files and single
    larger files (handled when asked for)."""

    def __init__(self, entries: Iterator[Entry]) -> None:
        self.upcoming = entries
        self.pushed_back: Entry | None = None
        self.queue: deque[_Batch | Entry] = deque()
        self.free = list(range(BATCH_SLOTS))

    def next_entry(self) -> Entry | None:
        if self.pushed_back is not None:
            entry, self.pushed_back = self.pushed_back, None
            return entry
        return next(self.upcoming, None)


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
        self._ahead: _Ahead | None = None

    def close(self) -> None:
        """Stop the helper process, if one was started (also done when garbage collected)."""
        self._drop_ahead()
        if self._helper is not None:
            self._helper.close()
            self._helper = None

    def expect(self, entries: Iterable[Entry]) -> None:
        """Declare the order in which `open` will be asked for FILE entries (other kinds are
        ignored), so small files can be read and encrypted ahead. Asking in another order
        stays correct: the reader then drops what it prepared and reads as usual.

        Only fresh keys are drawn ahead; other key sources keep their per-open behaviour."""
        self._drop_ahead()
        if self.parallel and isinstance(self.keys, FreshKeys):
            self._ahead = _Ahead(
                e for e in entries if e.kind is Kind.FILE and e.data is None and e.source
            )

    def _helper_process(self) -> Coprocessor:
        if self._helper is None:
            self._helper = Coprocessor()
        return self._helper

    def open(self, entry: Entry) -> Iterator[Chunk] | None:
        """The entry's lower bytes, or None when its file vanished (warned; the sink skips it)."""
        if entry.data is not None:
            return iter((entry.data,))
        if self._ahead is not None:
            batch = self._prepared(entry)
            if batch is not None:
                return self._from_batch(batch)
        assert entry.source is not None
        try:
            fd = open_plain(entry.source)
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

    def zero_filled(self, entry: Entry) -> Iterator[Chunk]:
        """A valid lower file of the planned size holding zeros: what an image whose layout is
        fixed stores for a file that could not be read after the plan (the opener warned)."""
        material = self.keys.material(entry)
        yield self._header(entry, material)
        nothing = _Plaintext(-1, entry, self.reporter)
        nothing.eof = True  # fill() then pads every chunk with zeros, without a second warning
        yield from self._encrypt_here(nothing, material.fek)

    # -- small files read ahead -----------------------------------------------------------

    def _prepared(self, entry: Entry) -> _Batch | None:
        """The batch holding `entry` next, or None when `entry` is to be read here (a larger
        file, or the order was not the one expected: then nothing more is read ahead)."""
        ahead = self._ahead
        assert ahead is not None
        queue = ahead.queue
        # The caller has consumed the previous entry's chunks, so a batch served to its end
        # can take new files.
        while queue and isinstance(queue[0], _Batch) and queue[0].served == len(queue[0].entries):
            ahead.free.append(queue.popleft().slot)  # type: ignore[union-attr]
        self._read_ahead(ahead)
        head = queue[0] if queue else None
        if isinstance(head, _Batch):
            expected = head.entries[head.served]
            if expected is entry or expected == entry:
                return head
        elif head is not None and (head is entry or head == entry):
            queue.popleft()
            return None
        self._drop_ahead()
        return None

    def _read_ahead(self, ahead: _Ahead) -> None:
        """Send batches to the helper until every batch slot is in use."""
        helper = self._helper_process()
        while ahead.free:
            batch = _Batch(slot=ahead.free[-1])
            offset = 0
            while len(batch.entries) < BATCH_FILES:
                entry = ahead.next_entry()
                if entry is None:
                    break
                if entry.plain_size > SMALL_FILE:
                    if batch.entries:
                        ahead.pushed_back = entry
                        break
                    ahead.queue.append(entry)  # read when asked for; keep filling behind it
                    continue
                if offset + padded(entry.plain_size) > SLOT_SIZE:
                    ahead.pushed_back = entry
                    break
                batch.entries.append(entry)
                batch.materials.append(self.keys.material(entry))
                batch.offsets.append(offset)
                offset += padded(entry.plain_size)
            if not batch.entries:
                return
            ahead.free.pop()
            batch.ticket = helper.submit_batch(
                batch.slot,
                [
                    SmallFile(e.source or b"", e.plain_size, e.mtime_ns, m.fek, root_iv(m.fek), o)
                    for e, m, o in zip(batch.entries, batch.materials, batch.offsets, strict=True)
                ],
            )
            ahead.queue.append(batch)

    def _drop_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is None or self._helper is None:
            return
        for item in ahead.queue:
            if isinstance(item, _Batch) and item.results is None:
                self._helper.results(item.ticket)  # collect the answer owed

    def _from_batch(self, batch: _Batch) -> Iterator[Chunk] | None:
        helper = self._helper_process()
        if batch.results is None:
            batch.results = helper.results(batch.ticket)
        i = batch.served
        batch.served += 1
        entry, result = batch.entries[i], batch.results[i]
        name = os.fsdecode(entry.rel)
        if result.status is Status.VANISHED:
            self.reporter.warn(f"{name}: file removed before we read it")
            return None
        if result.status is Status.OPEN_FAILED:
            self.reporter.warn(f"{name}: cannot open: {os.strerror(result.error)}; skipped")
            return None
        if result.status is Status.NOT_REGULAR:
            self.reporter.warn(f"{name}: no longer a regular file; skipped")
            return None
        start = batch.offsets[i]
        data = helper.batch_slots[batch.slot][start : start + padded(entry.plain_size)]
        return self._batched(entry, batch.materials[i], data, result)

    def _batched(
        self, entry: Entry, material: KeyMaterial, data: memoryview, result: SmallResult
    ) -> Iterator[Chunk]:
        yield self._header(entry, material)
        if result.read < entry.plain_size:
            self.reporter.warn(_shrank(entry, entry.plain_size - result.read))
        if data:
            yield data
        if result.flags & GREW:
            self.reporter.warn(_grew(entry))
        elif result.flags & CHANGED:
            self.reporter.warn(_changed(entry))

    # -- files read here ------------------------------------------------------------------

    def _header(self, entry: Entry, material: KeyMaterial) -> bytes:
        return build_header(
            entry.plain_size,
            material.marker,
            material.packets,
            filenames_encrypted=self.filenames_encrypted,
        )

    def _stream(self, entry: Entry, fd: int) -> Iterator[Chunk]:
        try:
            material = self.keys.material(entry)
            yield self._header(entry, material)
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
        while size := source.fill(buf):
            view = buf[:size]
            encrypt_extents(fek, iv, index, view, view)
            yield view
            index += size // EXTENT_SIZE

    def _encrypt_in_helper(self, source: _Plaintext, fek: bytes) -> Iterator[Chunk]:
        """Share the extents with the helper: it always has work queued, and whenever the
        next chunk due is still at the helper, this process encrypts a later one itself
        instead of waiting. Chunks are yielded in file order."""
        helper = self._helper_process()
        slots = helper.slots
        iv = root_iv(fek)
        free = list(range(SLOTS))
        due: deque[tuple[int, int, int]] = deque()  # (slot, length, ticket or 0 if done here)
        queued = 0  # requests the helper has not answered yet
        index = 0

        def fill() -> tuple[int, int, int]:
            nonlocal index
            slot = free.pop()
            size = source.fill(slots[slot])
            first = index
            index += size // EXTENT_SIZE
            return slot, size, first

        try:
            while True:
                while free and source.remaining > 0 and queued < IN_FLIGHT:
                    slot, size, first = fill()
                    due.append((slot, size, helper.submit(slot, size, fek, iv, first)))
                    queued += 1
                if not due:
                    return
                slot, size, ticket = due[0]
                if ticket and not helper.ready(ticket) and free and source.remaining > 0:
                    mine, length, first = fill()
                    view = slots[mine][:length]
                    encrypt_extents(fek, iv, first, view, view)
                    due.append((mine, length, 0))
                    continue
                if ticket:
                    helper.wait(ticket)
                    queued -= 1
                due.popleft()
                yield slots[slot][:size]
                free.append(slot)
        finally:
            # Abandoned midway (the sink failed): collect the answers still owed, so they
            # are not mistaken for later ones.
            for _, _, ticket in due:
                if ticket:
                    helper.wait(ticket)
