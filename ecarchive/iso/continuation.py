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
        total = sum(len(e) for e in entries)
        if self._used + total > SECTOR:
            self._next_block()
        areas = self._partition(entries)
        if len(areas) > MAX_HOPS:
            raise ContinuationTooLong(f"needs {len(areas)} continuation areas (max {MAX_HOPS})")
        lengths = [sum(len(e) for e in area) for area in areas]
        lengths = [n + CE_LEN if i < len(areas) - 1 else n for i, n in enumerate(lengths)]
        first = ce(self.base_lba + self._block, self._used, lengths[0])
        for index, area in enumerate(areas):
            if index > 0:
                self._next_block()
            data = b"".join(area)
            if index < len(areas) - 1:
                data += ce(self.base_lba + self._block + 1, 0, lengths[index + 1])
            self._buffer += data
            self._used += len(data)
        return first

    def _partition(self, entries: list[bytes]) -> list[list[bytes]]:
        """Split entries into areas: the first starts at the current offset, later ones at 0."""
        areas: list[list[bytes]] = [[]]
        used = self._used
        remaining = sum(len(e) for e in entries)
        for entry in entries:
            if used + remaining > SECTOR and used + len(entry) + CE_LEN > SECTOR:
                areas.append([])
                used = 0
            areas[-1].append(entry)
            used += len(entry)
            remaining -= len(entry)
        return areas
