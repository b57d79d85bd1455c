"""Directory records (ECMA-119 9.1) with their Rock Ridge entries.

The same functions build the records when the layout is planned and when the image is
written, so sizes cannot drift apart: planning builds one child of each shape (kind, name and
identifier lengths, sections, target) with placeholder block numbers, which change no length,
and the writer checks each directory and its continuation blocks against the plan.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterator
from typing import Protocol

from ..model import Kind
from .continuation import CeAllocator
from .encode import SECTOR, both16, both32, date7
from .errors import IsoInternalError
from .rrip import ce as ce_entry
from .rrip import er as er_entry
from .rrip import pn, px, sl_entries, sp, split_system_use, tf
from .tree import Node

RECORD_FIXED = 33  # bytes before the file identifier
RECORD_MAX = 254  # 255 is the field limit; records are kept even
FLAG_DIRECTORY = 0x02
FLAG_MULTI_EXTENT = 0x80  # "not the final record of this file"
VOLUME_SEQUENCE = 1
DOT = b"\x00"
DOTDOT = b"\x01"
# Largest multiple of the sector size below 2**32: every section but the last has this size.
SECTION_SIZE = 0xFFFFF800
SINGLE_EXTENT_MAX = 0xFFFFFFFF
# Linux reads at most 100 sections of one file (isofs_read_level3_size).
SECTIONS_MAX = 100


def sections(size: int) -> list[tuple[int, int]]:
    """(offset in blocks, length in bytes) of each extent section of a file of `size` bytes."""
    if size <= SINGLE_EXTENT_MAX:
        return [(0, size)]
    return [
        (offset // SECTOR, min(SECTION_SIZE, size - offset))
        for offset in range(0, size, SECTION_SIZE)
    ]


def _identifier_pad(ident: bytes) -> bytes:
    # The system use area starts on an even offset: a pad byte follows even-length names.
    return b"\x00" if len(ident) % 2 == 0 else b""


def capacity(ident: bytes) -> int:
    return RECORD_MAX - RECORD_FIXED - len(ident) - len(_identifier_pad(ident))


def record(
    lba: int, length: int, mtime_ns: int, flags: int, ident: bytes, system_use: bytes
) -> bytes:
    pad = _identifier_pad(ident)
    body = RECORD_FIXED + len(ident) + len(pad) + len(system_use)
    tail = b"\x00" if body % 2 else b""
    total = body + len(tail)
    if total > RECORD_MAX:
        raise IsoInternalError(f"directory record of {total} bytes for {ident!r}")
    return b"".join(
        (
            bytes((total, 0)),
            both32(lba),
            both32(length),
            date7(mtime_ns),
            bytes((flags, 0, 0)),
            both16(VOLUME_SEQUENCE),
            bytes((len(ident),)),
            ident,
            pad,
            system_use,
            tail,
        )
    )


def _px(node: Node) -> bytes:
    e = node.entry
    return px(node.mode, node.nlink, e.uid, e.gid, node.serial)


class Placer(Protocol):
    def place(self, entries: list[bytes]) -> bytes: ...


def _system_use(
    head: list[bytes], name: bytes, tail: list[bytes], ident: bytes, ce: Placer
) -> bytes:
    inline, rest = split_system_use(head, name, tail, capacity(ident))
    if rest:
        inline.append(ce.place(rest))
    return b"".join(inline)


def _dot_records(directory: Node, ce: Placer) -> Iterator[bytes]:
    e = directory.entry
    head = [_px(directory), tf(e.mtime_ns)]
    tail: list[bytes] = []
    if directory.parent is directory:  # the root: SP first, ER in its continuation
        head.insert(0, sp())
        tail.append(er_entry())
    su = _system_use(head, b"", tail, DOT, ce)
    yield record(directory.lba, directory.size, e.mtime_ns, FLAG_DIRECTORY, DOT, su)
    parent = directory.parent
    pe = parent.entry
    su = _system_use([_px(parent), tf(pe.mtime_ns)], b"", [], DOTDOT, ce)
    yield record(parent.lba, parent.size, pe.mtime_ns, FLAG_DIRECTORY, DOTDOT, su)


def _child_records(child: Node, ce: Placer, zero_lba: int) -> Iterator[bytes]:
    e = child.entry
    head = [_px(child), tf(e.mtime_ns)]
    tail: list[bytes] = []
    if e.kind in (Kind.CHAR, Kind.BLOCK):
        head.append(pn(*_pn_numbers(e.rdev)))
    elif e.kind is Kind.SYMLINK:
        tail = sl_entries(e.link_target)
    if child.is_dir:
        su = _system_use(head, child.name, tail, child.iso_id, ce)
        yield record(child.lba, child.size, e.mtime_ns, FLAG_DIRECTORY, child.iso_id, su)
        return
    size = child.data_size
    if size == 0:
        su = _system_use(head, child.name, tail, child.iso_id, ce)
        yield record(zero_lba, 0, e.mtime_ns, 0, child.iso_id, su)
        return
    parts = sections(size)
    for index, (block_offset, length) in enumerate(parts):
        # Every section repeats the full Rock Ridge data, each with its own continuation.
        su = _system_use(head, child.name, tail, child.iso_id, ce)
        flags = FLAG_MULTI_EXTENT if index < len(parts) - 1 else 0
        lba = child.data.lba + block_offset
        yield record(lba, length, e.mtime_ns, flags, child.iso_id, su)


# Old-style 16-bit device numbers in the low word alone are read alike by Linux
# (MKDEV(low >> 8, low & 0xff) when high is 0) and by libarchive/libisofs (low as a dev_t).
_OLD_MAJOR_MAX = 0xFFF
_OLD_MINOR_MAX = 0xFF


def _pn_numbers(rdev: int) -> tuple[int, int]:
    major, minor = os.major(rdev), os.minor(rdev)
    if major <= _OLD_MAJOR_MAX and minor <= _OLD_MINOR_MAX:
        return 0, major << 8 | minor
    # Linux reads (major, minor) here; libarchive would show a different number.
    return major, minor


def directory_records(directory: Node, ce: CeAllocator, zero_lba: int) -> Iterator[bytes]:
    """Every record of `directory` in ECMA-119 order: '.', '..', then children by ISO name."""
    yield from _dot_records(directory, ce)
    for child in directory.children:
        yield from _child_records(child, ce, zero_lba)


def pack_directory(
    records: Iterator[bytes], emit: Callable[[bytes], None] | None = None
) -> int:
    """Pack records into sectors (a record never crosses one); return the directory size."""
    blocks = 0
    buffer = bytearray()
    for rec in records:
        if len(buffer) + len(rec) > SECTOR:
            if emit is not None:
                emit(bytes(buffer) + bytes(SECTOR - len(buffer)))
            blocks += 1
            buffer = bytearray()
        buffer += rec
    if emit is not None:
        emit(bytes(buffer) + bytes(SECTOR - len(buffer)))
    return (blocks + 1) * SECTOR


def packed_size(lengths: Iterator[int]) -> int:
    """What `pack_directory` returns for records of these lengths."""
    blocks = 0
    used = 0
    for length in lengths:
        if used + length > SECTOR:
            blocks += 1
            used = 0
        used += length
    return (blocks + 1) * SECTOR


# --- planning without building every record --------------------------------------------------

# Per record of a child: its length and the sizes of its continuation entries, if any.
Shape = tuple[tuple[int, list[int] | None], ...]
ShapeCache = dict[Hashable, Shape]


class _Recorder:
    """Stands in for the allocator while one child's records are built to learn their shape."""

    def __init__(self) -> None:
        self.placed: list[list[int]] = []

    def place(self, entries: list[bytes]) -> bytes:
        self.placed.append([len(e) for e in entries])
        return ce_entry(0, 0, 0)


def _shape_key(child: Node) -> Hashable:
    """Everything the lengths of a child's records depend on (not its numbers or times)."""
    e = child.entry
    size = child.data_size
    sections_count = len(sections(size)) if size else 0
    target = e.link_target if e.kind is Kind.SYMLINK else b""
    return (e.kind, len(child.iso_id), len(child.name), sections_count, target)


def _child_shape(child: Node, cache: ShapeCache) -> Shape:
    key = _shape_key(child)
    shape = cache.get(key)
    if shape is None:
        recorder = _Recorder()
        out = []
        for rec in _child_records(child, recorder, 0):
            out.append((len(rec), recorder.placed.pop() if recorder.placed else None))
        shape = cache[key] = tuple(out)
    return shape


def measure_directory(directory: Node, ce: CeAllocator, cache: ShapeCache) -> int:
    """The size `pack_directory(directory_records(...))` gives, advancing `ce` alike.

    Children with the same shape (most files of a tree) are built once, which makes planning
    several times faster; the writer checks every directory against this measurement.
    """

    def lengths() -> Iterator[int]:
        for rec in _dot_records(directory, ce):
            yield len(rec)
        for child in directory.children:
            for length, continuation in _child_shape(child, cache):
                if continuation is not None:
                    ce.reserve(continuation)
                yield length

    return packed_size(lengths())
