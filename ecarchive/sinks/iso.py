"""The ISO 9660 sink: lay out a volume as an ISO image, then stream it.

The writer itself lives in `ecarchive.iso`:

    layout = plan_iso(plan.entries, volume_label="ECARCHIVE", volume_time_ns=t)
    layout.size                      # exact bytes, for --print-size (no file is read)
    write_iso(layout, body, out)     # strictly sequential writes to a file or pipe
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from functools import cached_property

from ..errors import OutputFailed
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
from .base import Chunk, Opener, Sink

_ZEROS = bytes(1 << 20)
WRITE_BUFFER = 1 << 20


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


class IsoSink(Sink):
    """An ISO 9660 + Rock Ridge image; its layout, and so its size, is fixed before writing."""

    fixed_layout = True

    def __init__(self, entries: Sequence[Entry], *, volume_label: str, volume_time_ns: int) -> None:
        super().__init__(entries)
        self.volume_label = volume_label
        self.volume_time_ns = volume_time_ns

    @cached_property
    def layout(self) -> IsoLayout:
        return plan_iso(
            list(self.entries), volume_label=self.volume_label, volume_time_ns=self.volume_time_ns
        )

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self.layout.warnings)

    def read_order(self) -> list[Entry]:
        return [node.entry for node in self.layout.files]

    def size(self) -> int:
        return image_size(self.entries, volume_label=self.volume_label)

    def write(self, open_data: Opener, fd: int) -> int:
        try:
            with (
                io.FileIO(fd, "wb", closefd=False) as raw,
                io.BufferedWriter(raw, WRITE_BUFFER) as out,
            ):
                write_iso(self.layout, body_from_opener(open_data), out)
        except OSError as e:
            raise OutputFailed(f"writing the image failed: {e.strerror or e}") from e
        return self.layout.size


__all__ = [
    "SECTOR_SIZE",
    "IsoBodySizeError",
    "IsoError",
    "IsoInternalError",
    "IsoLabelError",
    "IsoLayout",
    "IsoPlanError",
    "IsoSink",
    "Opener",
    "body_from_opener",
    "image_size",
    "plan_iso",
    "volume_identifier",
    "write_iso",
]
