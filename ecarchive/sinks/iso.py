"""The ISO 9660 sink: lay out a plan as an ISO image, then stream it.

This is the entry point the CLI uses; the writer itself lives in `ecarchive.iso`.

    layout = plan_iso(plan.entries, volume_label="ECARCHIVE", volume_time_ns=t)
    layout.size                      # exact bytes, for --print-size (no file is read)
    write_iso(layout, body, out)     # strictly sequential writes to a file or pipe
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..iso import (
    SECTOR_SIZE,
    IsoBodySizeError,
    IsoError,
    IsoInternalError,
    IsoLabelError,
    IsoLayout,
    IsoPlanError,
    image_size,
    plan_iso,
    volume_identifier,
    write_iso,
)
from ..model import Body, Entry

Chunk = bytes | bytearray | memoryview
Opener = Callable[[Entry], Iterator[Chunk] | None]
_ZEROS = bytes(1 << 20)


def _zeros(size: int) -> Iterator[bytes]:
    while size > 0:
        step = min(size, len(_ZEROS))
        yield _ZEROS[:step]
        size -= step


def body_from_opener(open_data: Opener) -> Body:
    """A Body from the tar sink's opener (`EncryptingReader.open`).

    The tar sink leaves out a file that vanished after the pre-scan; an ISO cannot, since its
    directory records were laid out already. Its extent is filled with zeros instead (the
    opener has warned), which keeps every other file intact.
    """

    def body(entry: Entry) -> Iterator[Chunk]:
        chunks = open_data(entry)
        if chunks is None:
            return _zeros(entry.size)
        return chunks

    return body


__all__ = [
    "SECTOR_SIZE",
    "IsoBodySizeError",
    "IsoError",
    "IsoInternalError",
    "IsoLabelError",
    "IsoLayout",
    "IsoPlanError",
    "Opener",
    "body_from_opener",
    "image_size",
    "plan_iso",
    "volume_identifier",
    "write_iso",
]
