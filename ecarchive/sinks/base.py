"""One interface for the archive formats: a sink writes one volume's entries to a descriptor.

Both sinks take the same input (the volume's entries, an opener giving each FILE's lower
bytes, a file descriptor) and raise the same error (`OutputFailed`) when the output fails, so
the code above them never asks which format it holds.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterator, Sequence

from ..model import Entry, Kind

Chunk = bytes | bytearray | memoryview
Opener = Callable[[Entry], Iterator[Chunk] | None]


class ArchiveFormat(enum.Enum):
    TAR = "tar"
    ISO = "iso"


class Sink(abc.ABC):
    """Writes one volume. `entries` are in plan order, the manifest last."""

    # Whether the layout is fixed before the first byte (ISO): a FILE that cannot be read
    # must then still fill its planned extent; otherwise (tar) it is left out.
    fixed_layout: bool = False

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = tuple(entries)

    def read_order(self) -> list[Entry]:
        """The FILE entries in the order `write` asks the opener for them."""
        return [e for e in self.entries if e.kind is Kind.FILE]

    @property
    def warnings(self) -> tuple[str, ...]:
        """Notes about the layout (e.g. times the format cannot store), given before writing."""
        return ()

    @abc.abstractmethod
    def size(self) -> int:
        """Bytes `write` produces: exact, or an upper bound where the library decides (tar)."""

    @abc.abstractmethod
    def write(self, open_data: Opener, fd: int) -> int:
        """Stream the volume to `fd`; returns the bytes written. Raises OutputFailed when the
        output fails."""
