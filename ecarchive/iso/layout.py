"""Plan the whole image from the entries alone: every sector is assigned before writing.

Region order (see the module docstring of `ecarchive.iso`): system area, PVD, terminator,
L and M path tables, then for each directory in path table order its records followed by
the continuation blocks of those records, then file data in plan order.

Every pointer then points forward, as libarchive's streaming reader requires: it completes
a record's name from the continuation area only when the stream reaches that area, so the
area of a subdirectory's record must come before the subdirectory's own extent (one shared
continuation region after all directories truncates long directory names in bsdtar).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..model import Entry, Kind
from .continuation import CeAllocator, ContinuationTooLong
from .encode import D_CHARACTERS, NS_PER_SECOND, SECTOR, Y2038_SECONDS, date7_in_range
from .errors import IsoLabelError, IsoPlanError
from .records import SECTIONS_MAX, ShapeCache, measure_directory, sections
from .tree import Node, build_tree

SYSTEM_AREA_BLOCKS = 16
PVD_LBA = 16
TERMINATOR_LBA = 17
PATH_TABLE_LBA = 18
LABEL_MAX = 32
VOLUME_BLOCKS_MAX = 2**32 - 1
ROOT_MODE = 0o755


@dataclass(frozen=True, slots=True)
class IsoLayout:
    """Where every part of the image goes; `size` is the exact image size in bytes."""

    volume_label: bytes
    volume_time_ns: int
    directories: tuple[Node, ...]  # path table order; directories[0] is the root
    files: tuple[Node, ...]  # regular files in plan order, each with its data LBA
    path_table_size: int
    path_table_blocks: int
    directory_lba: int
    continuation_blocks: int  # in all directories
    data_lba: int
    zero_lba: int  # extent of every empty file, symlink, fifo and device
    total_blocks: int
    warnings: tuple[str, ...]

    @property
    def size(self) -> int:
        return self.total_blocks * SECTOR

    @property
    def m_path_table_lba(self) -> int:
        return PATH_TABLE_LBA + self.path_table_blocks


def blocks(n: int) -> int:
    return -(-n // SECTOR)


def volume_identifier(label: str) -> bytes:
    """The label as ECMA-119 d-characters: upper-cased, at most 32, no other characters."""
    ident = label.upper().encode("ascii", errors="replace")
    bad = sorted({chr(c) for c in ident if c not in D_CHARACTERS})
    if bad or not ident or len(ident) > LABEL_MAX:
        raise IsoLabelError(
            f"volume label {label!r}: use 1 to {LABEL_MAX} characters from A-Z, 0-9 and _"
            + (f" (not {''.join(bad)!r})" if bad else "")
        )
    return ident


def _path_table_size(directories: list[Node]) -> int:
    size = 0
    for d in directories:
        ident_len = len(d.iso_id) or 1  # the root's identifier is one 00 byte
        size += 8 + ident_len + (ident_len & 1)
    return size


def _time_warnings(entries: list[Entry]) -> list[str]:
    late = [e for e in entries if e.mtime_ns >= Y2038_SECONDS * NS_PER_SECOND]
    clamped = [e for e in entries if not date7_in_range(e.mtime_ns)]
    out = []
    if clamped:
        out.append(
            f"{len(clamped)} modification time(s) outside 1900..2155 stored clamped, e.g. "
            f"{clamped[0].path.decode(errors='replace')}"
        )
    if late:
        out.append(
            f"{len(late)} modification time(s) in 2038 or later; Linux before 6.16 shows them "
            f"negative, e.g. {late[0].path.decode(errors='replace')}"
        )
    return out


def _root_entry(volume_time_ns: int) -> Entry:
    return Entry(Kind.DIR, b"", ROOT_MODE, 0, 0, "root", "root", volume_time_ns)


def plan_iso(entries: Iterable[Entry], *, volume_label: str, volume_time_ns: int) -> IsoLayout:
    """Lay out an ISO 9660 + Rock Ridge image of `entries` without reading any file.

    Raises IsoPlanError listing every entry the image cannot represent, and IsoLabelError.
    """
    label = volume_identifier(volume_label)
    entry_list = list(entries)
    problems: list[str] = []
    directories, files = build_tree(entry_list, _root_entry(volume_time_ns), problems)
    for node in files:
        if len(sections(node.entry.size)) > SECTIONS_MAX:
            problems.append(
                f"{node.entry.path.decode(errors='replace')}: {node.entry.size} bytes need more "
                f"than the {SECTIONS_MAX} extent sections Linux reads"
            )
    if problems:
        raise IsoPlanError(problems)

    pt_size = _path_table_size(directories)
    pt_blocks = blocks(pt_size)
    directory_lba = PATH_TABLE_LBA + 2 * pt_blocks

    # Record lengths do not depend on block numbers, so placeholder numbers measure them.
    lba = directory_lba
    continuation_blocks = 0
    shapes: ShapeCache = {}
    try:
        for d in directories:
            ce = CeAllocator(base_lba=0)
            d.size = measure_directory(d, ce, shapes)
            d.ce_blocks = ce.blocks
            d.lba = lba
            lba += d.size // SECTOR + d.ce_blocks
            continuation_blocks += d.ce_blocks
    except ContinuationTooLong as exc:
        raise IsoPlanError([f"Rock Ridge data of one record {exc}"]) from exc
    data_lba = lba
    for node in files:
        node.lba = lba
        lba += blocks(node.entry.size)
    total = lba
    # An extent must lie inside the volume; with no data the last directory block will do.
    zero_lba = data_lba if total > data_lba else data_lba - 1
    if total > VOLUME_BLOCKS_MAX:
        raise IsoPlanError([f"image of {total} sectors exceeds the 32-bit volume size field"])
    return IsoLayout(
        volume_label=label,
        volume_time_ns=volume_time_ns,
        directories=tuple(directories),
        files=tuple(files),
        path_table_size=pt_size,
        path_table_blocks=pt_blocks,
        directory_lba=directory_lba,
        continuation_blocks=continuation_blocks,
        data_lba=data_lba,
        zero_lba=zero_lba,
        total_blocks=total,
        warnings=tuple(_time_warnings(entry_list)),
    )


def image_size(entries: Iterable[Entry], *, volume_label: str = "ECARCHIVE") -> int:
    """Exact image size in bytes (the `size_of` callback for media spanning)."""
    return plan_iso(entries, volume_label=volume_label, volume_time_ns=0).size


__all__ = ["IsoLayout", "image_size", "plan_iso", "volume_identifier"]
