"""Packing of SUSP continuation (CE) areas into the CE blocks.

Linux and libarchive reject a continuation area that crosses a block, so each area lies in
one block. A record's continuation goes into the current CE block when it fits, otherwise
into a fresh block; only continuations larger than a block (long symlink targets) chain to
further fresh blocks, each area ending with one CE entry. The same packing runs when the
layout is planned and when the image is written, so both agree on every offset.
"""

from __future__ import annotations

from collections.abc import Callable

from .encode import SECTOR
from .rrip import CE_LEN, ce

# Linux stops after 31 continuation hops (RR_MAX_CE_ENTRIES).
MAX_HOPS = 31


class ContinuationTooLong(ValueError):
    pass


class CeAllocator:
    """Places continuation areas; blocks are numbered from 0 relative to `base_lba`.

    `emit(block, data)` receives each CE block once it is complete (write pass only).
    """

    def __init__(self, base_lba: int, emit: Callable[[bytes], None] | None = None) -> None:
        self.base_lba = base_lba
        self._emit = emit
        self._block = -1  # no block opened yet
        self._used = SECTOR
        self._buffer = bytearray()

    @property
    def blocks(self) -> int:
        return self._block + 1

    def _next_block(self) -> None:
        self._flush()
        self._block += 1
        self._used = 0

    def _flush(self) -> None:
        if self._emit is not None and self._block >= 0:
            self._emit(bytes(self._buffer) + bytes(SECTOR - len(self._buffer)))
        self._buffer = bytearray()

    def finish(self) -> None:
        self._flush()

    def place(self, entries: list[bytes]) -> bytes:
        """Store `entries` as a continuation and return the CE entry that points at it."""
        sizes = [len(e) for e in entries]
        counts = self._open_areas(sizes)
        lengths = _area_lengths(sizes, counts)
        first = ce(self.base_lba + self._block, self._used, lengths[0])
        position = 0
        for index, count in enumerate(counts):
            if index > 0:
                self._next_block()
            data = b"".join(entries[position : position + count])
            position += count
            if index < len(counts) - 1:
                data += ce(self.base_lba + self._block + 1, 0, lengths[index + 1])
            self._buffer += data
            self._used += len(data)
        return first

    def reserve(self, sizes: list[int]) -> None:
        """Advance exactly as `place` would for entries of these sizes (planning only)."""
        counts = self._open_areas(sizes)
        for index, length in enumerate(_area_lengths(sizes, counts)):
            if index > 0:
                self._next_block()
            self._used += length

    def _open_areas(self, sizes: list[int]) -> list[int]:
        """Start a fresh block if the continuation does not fit; entries per area."""
        if self._used + sum(sizes) > SECTOR:
            self._next_block()
        counts = self._partition(sizes)
        if len(counts) > MAX_HOPS:
            raise ContinuationTooLong(f"needs {len(counts)} continuation areas (max {MAX_HOPS})")
        return counts

    def _partition(self, sizes: list[int]) -> list[int]:
        """Entries per area: the first area starts at the current offset, later ones at 0."""
        counts = [0]
        used = self._used
        remaining = sum(sizes)
        for size in sizes:
            if used + remaining > SECTOR and used + size + CE_LEN > SECTOR:
                counts.append(0)
                used = 0
            counts[-1] += 1
            used += size
            remaining -= size
        return counts


def _area_lengths(sizes: list[int], counts: list[int]) -> list[int]:
    """Bytes of each area, including the CE entry that ends every area but the last."""
    lengths = []
    position = 0
    for index, count in enumerate(counts):
        length = sum(sizes[position : position + count])
        position += count
        lengths.append(length + CE_LEN if index < len(counts) - 1 else length)
    return lengths
