"""Directory records (ECMA-119 9.1) and volume descriptors (8.4) as read, every field checked
against the bytes it lies in."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ...iso.encode import SECTOR
from ...iso.layout import PVD_LBA
from ...iso.records import DOT, DOTDOT, RECORD_FIXED
from ...iso.rrip import SIG_SP, SP_CHECK, SP_LEN
from ...iso.writer import STANDARD_IDENTIFIER, TYPE_PRIMARY, TYPE_TERMINATOR
from .dates import DATE7_LEN, date7_ns
from .susp import Damage

# Directory record fields (9.1): offsets in the record
REC_LENGTH = 0
REC_EXTENT = 2  # both-endian; Linux reads the little-endian half, so do we
REC_SIZE = 10
REC_DATE = 18
REC_FLAGS = 25
REC_IDENT_LEN = 32
REC_IDENT = RECORD_FIXED
ROOT_RECORD_LEN = 34
FLAG_ASSOCIATED = 0x04  # file flags (9.1.6): an associated file (e.g. a resource fork)

# Volume descriptor fields (8.4)
VD_TYPE = 0
VD_ID = slice(1, 6)
VD_VOLUME_BLOCKS = 80
VD_BLOCK_SIZE = 128
VD_ROOT_RECORD = 156
DESCRIPTORS_MAX = 64  # a boot record and supplementary descriptors may precede the terminator

_U32 = struct.Struct("<I").unpack_from
_U16 = struct.Struct("<H").unpack_from


@dataclass(slots=True)
class Record:
    """The fixed fields of one directory record and where its system use area starts."""

    extent: int
    size: int
    flags: int
    date_ns: int
    ident: bytes
    system_use: memoryview

    @property
    def is_dot(self) -> bool:
        return self.ident in (DOT, DOTDOT)


def parse_record(rec: memoryview, skip: int) -> Record:
    """`rec` is exactly one record (its length byte already checked against its sector);
    `skip` is the SP LEN_SKP of the image."""
    ident_len = rec[REC_IDENT_LEN]
    if REC_IDENT + ident_len > len(rec):
        raise Damage(
            f"identifier of {ident_len} bytes does not fit in its record of {len(rec)} bytes"
        )
    ident = bytes(rec[REC_IDENT : REC_IDENT + ident_len])
    # an even identifier length leaves a pad byte so the system use area starts even
    su_start = REC_IDENT + ident_len + (1 - ident_len % 2) + skip
    return Record(
        extent=_U32(rec, REC_EXTENT)[0],
        size=_U32(rec, REC_SIZE)[0],
        flags=rec[REC_FLAGS],
        date_ns=date7_ns(bytes(rec[REC_DATE : REC_DATE + DATE7_LEN])),
        ident=ident,
        system_use=rec[su_start:] if su_start < len(rec) else memoryview(b""),
    )


def sp_skip(system_use: memoryview) -> int | None:
    """LEN_SKP when the root's '.' record starts with SP (Rock Ridge in use), else None."""
    if (
        len(system_use) >= SP_LEN
        and bytes(system_use[:2]) == SIG_SP
        and system_use[2] == SP_LEN
        and bytes(system_use[4:6]) == SP_CHECK
    ):
        return system_use[6]
    return None


def iso_name(ident: bytes) -> bytes:
    """A plain ISO 9660 identifier as a name: without ';version' and a trailing '.'."""
    name = ident.split(b";", 1)[0]
    return name[:-1] if name.endswith(b".") and len(name) > 1 else name


@dataclass(slots=True)
class Volume:
    blocks: int
    root: Record


def is_descriptor(sector: bytes) -> bool:
    return bytes(sector[VD_ID]) == STANDARD_IDENTIFIER


def primary_volume(sectors: list[bytes]) -> Volume | None:
    """The primary volume descriptor among the descriptors read so far, if any."""
    for sector in sectors:
        if sector[VD_TYPE] == TYPE_PRIMARY and is_descriptor(sector):
            if _U16(sector, VD_BLOCK_SIZE)[0] != SECTOR:
                raise Damage(f"logical block size {_U16(sector, VD_BLOCK_SIZE)[0]}, not {SECTOR}")
            view = memoryview(sector)[VD_ROOT_RECORD : VD_ROOT_RECORD + ROOT_RECORD_LEN]
            if view[REC_LENGTH] != ROOT_RECORD_LEN:
                raise Damage("root directory record of bad length")
            return Volume(_U32(sector, VD_VOLUME_BLOCKS)[0], parse_record(view, 0))
    return None


FIRST_DESCRIPTOR = PVD_LBA * SECTOR
__all__ = [
    "DESCRIPTORS_MAX",
    "DOT",
    "DOTDOT",
    "FIRST_DESCRIPTOR",
    "FLAG_ASSOCIATED",
    "RECORD_FIXED",
    "TYPE_TERMINATOR",
    "Record",
    "Volume",
    "is_descriptor",
    "iso_name",
    "parse_record",
    "primary_volume",
    "sp_skip",
]
