"""A member kept until the end of the archive, compressed in memory.

A tar's manifest is its last member, but a directory or an ISO image may show it before the
members it describes, so it is kept until every member was seen, then read again as a stream.
Kept compressed (zlib, fastest level) rather than as bytes: a crafted manifest of millions of
repeated lines then costs a fraction of what it cost the archive (a 64 MiB manifest fits in a
93 KB .tar.gz), and nothing is written to disk.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

_LEVEL = 1
PIECE = 1 << 20  # bytes handed out per piece when read back


class Spool:
    """Bytes written once, read back in pieces of at most PIECE bytes."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(_LEVEL)
        self._parts: list[bytes] = []
        self.size = 0  # uncompressed bytes written

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self.size += len(chunk)
        if part := self._z.compress(chunk):
            self._parts.append(part)

    def close(self) -> None:
        self._parts.append(self._z.flush())

    def chunks(self) -> Iterator[bytes]:
        unz = zlib.decompressobj()
        for part in self._parts:
            pending = part
            while pending:
                yield unz.decompress(pending, PIECE)
                pending = unz.unconsumed_tail
        if tail := unz.flush():
            yield tail
