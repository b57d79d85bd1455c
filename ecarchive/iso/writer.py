"""Write a planned ISO image strictly front to back: no seek, no temporary file.

Memory holds the layout (one node per entry) and one sector or one body chunk at a time;
file data flows from the body to `out` unchanged.
"""

from __future__ import annotations

from typing import BinaryIO, Literal

from .. import __version__
from ..model import Body
from .continuation import CeAllocator
from .encode import DATE17_UNSPECIFIED, SECTOR, both16, both32, date17, padded
from .errors import IsoBodySizeError, IsoInternalError
from .layout import PATH_TABLE_LBA, PVD_LBA, SYSTEM_AREA_BLOCKS, IsoLayout
from .records import DOT, FLAG_DIRECTORY, directory_records, pack_directory, record

SYSTEM_IDENTIFIER = b"LINUX"
APPLICATION_IDENTIFIER = f"ECARCHIVE {__version__}".encode("ascii")
STANDARD_IDENTIFIER = b"CD001"
DESCRIPTOR_VERSION = 1
FILE_STRUCTURE_VERSION = 1
TYPE_PRIMARY = 1
TYPE_TERMINATOR = 255
ZERO_SECTOR = bytes(SECTOR)
PATH_TABLE_FLUSH = 64 * 1024


class _Counter:
    """Forwards writes to `out` and counts them, so the layout can be checked as we go."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        done = self.out.write(data)
        # Unbuffered files (FileIO on a pipe) may accept only part of a large write.
        if done is not None and done < size:
            view = memoryview(data)[done:]
            while view:
                step = self.out.write(view)
                if not step:
                    raise OSError(f"the output accepted no bytes at offset {self.written}")
                view = view[step:]
        self.written += size

    def expect(self, lba: int, region: str) -> None:
        if self.written != lba * SECTOR:
            raise IsoInternalError(
                f"{region} starts at byte {self.written}, the layout put it at sector {lba}"
            )


def _primary_descriptor(layout: IsoLayout) -> bytes:
    root = layout.directories[0]
    root_record = record(root.lba, root.size, root.entry.mtime_ns, FLAG_DIRECTORY, DOT, b"")
    when = date17(layout.volume_time_ns)
    pvd = b"".join(
        (
            bytes((TYPE_PRIMARY,)),
            STANDARD_IDENTIFIER,
            bytes((DESCRIPTOR_VERSION, 0)),
            padded(SYSTEM_IDENTIFIER, 32),
            padded(layout.volume_label, 32),
            bytes(8),
            both32(layout.total_blocks),
            bytes(32),
            both16(1),  # volume set size
            both16(1),  # volume sequence number
            both16(SECTOR),
            both32(layout.path_table_size),
            PATH_TABLE_LBA.to_bytes(4, "little"),
            bytes(4),
            layout.m_path_table_lba.to_bytes(4, "big"),
            bytes(4),
            root_record,
            padded(b"", 128),  # volume set
            padded(b"", 128),  # publisher
            padded(b"", 128),  # data preparer
            padded(APPLICATION_IDENTIFIER, 128),
            padded(b"", 37) * 3,  # copyright, abstract, bibliographic files
            when,  # creation
            when,  # modification
            DATE17_UNSPECIFIED,  # expiration
            when,  # effective
            bytes((FILE_STRUCTURE_VERSION, 0)),
        )
    )
    return padded(pvd, SECTOR, b"\x00")


def _terminator() -> bytes:
    head = bytes((TYPE_TERMINATOR,)) + STANDARD_IDENTIFIER + bytes((DESCRIPTOR_VERSION,))
    return padded(head, SECTOR, b"\x00")


def _write_path_table(
    layout: IsoLayout, out: _Counter, order: Literal["little", "big"]
) -> None:
    buffer = bytearray()
    for d in layout.directories:
        ident = d.iso_id or b"\x00"
        buffer += bytes((len(ident), 0))
        buffer += d.lba.to_bytes(4, order)
        buffer += d.parent.number.to_bytes(2, order)
        buffer += ident + (b"\x00" if len(ident) % 2 else b"")
        if len(buffer) >= PATH_TABLE_FLUSH:
            out.write(buffer)
            buffer = bytearray()
    out.write(buffer)
    tail = layout.path_table_size % SECTOR
    if tail:
        out.write(bytes(SECTOR - tail))


def _write_directories(layout: IsoLayout, out: _Counter) -> None:
    for d in layout.directories:
        out.expect(d.lba, "directory")
        ce_lba = d.lba + d.size // SECTOR
        # The records are generated twice, once to write them and once to write their
        # continuation areas after them, so no directory is ever held in memory; the second
        # time only when the first placed a continuation (most directories have none).
        counted = CeAllocator(ce_lba)
        size = pack_directory(directory_records(d, counted, layout.zero_lba), out.write)
        if size != d.size:
            raise IsoInternalError(f"directory {d.entry.path!r}: {size} bytes, planned {d.size}")
        ce = counted
        if counted.blocks:
            ce = CeAllocator(ce_lba, emit=out.write)
            for _ in directory_records(d, ce, layout.zero_lba):
                pass
            ce.finish()
        if ce.blocks != d.ce_blocks:
            raise IsoInternalError(
                f"directory {d.entry.path!r}: {ce.blocks} continuation blocks, "
                f"planned {d.ce_blocks}"
            )


def _write_data(layout: IsoLayout, body: Body, out: _Counter) -> None:
    for node in layout.files:
        out.expect(node.lba, "file data")
        entry = node.entry
        got = 0
        for chunk in body(entry):
            got += len(chunk)
            if got > entry.size:
                raise IsoBodySizeError(entry.path, entry.size, got)
            out.write(chunk)
        if got != entry.size:
            raise IsoBodySizeError(entry.path, entry.size, got)
        tail = entry.size % SECTOR
        if tail:
            out.write(ZERO_SECTOR[tail:])


def write_iso(layout: IsoLayout, body: Body, out: BinaryIO) -> None:
    """Stream the image of `layout` to `out`; `body(entry)` yields each file's bytes.

    Writes exactly `layout.size` bytes in order, never seeks and never buffers file data.
    Raises IsoBodySizeError if a body yields more or fewer bytes than its entry's size.
    """
    counter = _Counter(out)
    for _ in range(SYSTEM_AREA_BLOCKS):
        counter.write(ZERO_SECTOR)
    counter.expect(PVD_LBA, "primary volume descriptor")
    counter.write(_primary_descriptor(layout))
    counter.write(_terminator())
    _write_path_table(layout, counter, "little")
    _write_path_table(layout, counter, "big")
    _write_directories(layout, counter)
    _write_data(layout, body, counter)
    counter.expect(layout.total_blocks, "end of image")
