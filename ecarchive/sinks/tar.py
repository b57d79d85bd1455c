"""The tar sink: a POSIX pax archive written straight to a file descriptor.

The headers are encoded here rather than through libarchive: libarchive's per-entry calls
cost ~50 µs through ctypes, more than encrypting a small file, and its block buffer copies
every data byte once more. The layout follows what libarchive's pax writer emitted before
(so readers see the same archive): a ustar header with the path split into prefix/name where
possible, and a pax extended header ("x") only for what ustar cannot hold exactly:
sub-second mtimes, long or unsplittable paths and link targets, long or non-ASCII owner
names, and numbers too large for the octal fields.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from ..errors import OutputFailed
from ..model import Entry, Kind

Chunk = bytes | bytearray | memoryview
Opener = Callable[[Entry], "Iterator[Chunk] | None"]
BLOCK_SIZE = 1 << 20  # output is gathered into writes of this size (1 MiB: see issue 6)
RECORD = 512
END_OF_ARCHIVE = bytes(2 * RECORD)
# Chunks at least this long are written from the caller's buffer instead of being copied.
_DIRECT_WRITE = 64 << 10
_NS = 1_000_000_000

_TYPEFLAG = {
    Kind.DIR: b"5",
    Kind.FILE: b"0",
    Kind.HARDLINK: b"1",
    Kind.SYMLINK: b"2",
    Kind.FIFO: b"6",
    Kind.CHAR: b"3",
    Kind.BLOCK: b"4",
}
_NAME, _PREFIX, _LINKNAME, _OWNER = 100, 155, 100, 32
# Largest values of the octal fields: 7 digits for mode/ids/devices, 11 for size and mtime.
_MAX_OCTAL_7 = 0o7777777
_MAX_OCTAL_11 = 0o77777777777
_PAX_NAME_TAIL = 80  # bytes of the member's base name kept in its extended header's name
_CHECKSUM_BLANK = b" " * 8
_MAGIC = b"ustar\x0000"
_OWNER_CACHE = 1024  # distinct (mode, uid, gid, user, group) combinations kept rendered
_ZERO_RECORD = bytes(RECORD)
_ZERO_DEVICE = b"0000000\0"


def _describe(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e)


def _octal(value: int, width: int) -> bytes:
    """`width` bytes: zero-padded octal digits and a NUL, as GNU tar writes them."""
    field = b"%0*o\0" % (width - 1, value)
    if len(field) != width:
        raise ValueError(f"{value} does not fit a {width}-byte octal field")
    return field


def _record(key: bytes, value: bytes) -> bytes:
    """One pax record "LEN key=value\\n", where LEN counts its own digits too."""
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n += 1
    return b"%d" % n + body


def _split_path(path: bytes) -> tuple[bytes, bytes] | None:
    """ustar (prefix, name) for `path`, or None when it does not fit. Bytes go in as they are,
    whatever their encoding, as GNU tar does."""
    if len(path) <= _NAME:
        return b"", path
    cut = path.find(b"/", max(0, len(path) - _NAME - 1))
    while cut != -1:
        if 0 < cut <= _PREFIX and 0 < len(path) - cut - 1 <= _NAME:
            return path[:cut], path[cut + 1 :]
        cut = path.find(b"/", cut + 1)
    return None


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# name, mode, uid, gid, size, mtime, checksum, typeflag, linkname, magic+version, uname, gname,
# devmajor, devminor, prefix; struct pads every field with NULs and the record to 512 bytes.
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_CHECKSUM_AT = slice(148, 156)


@dataclass(frozen=True, slots=True)
class _Owner:
    """The mode and owner fields of a header, rendered once per distinct owner and mode."""

    fields: tuple[bytes, bytes, bytes, bytes, bytes]  # mode, uid, gid, uname, gname
    records: bytes  # pax records for what the fields cannot hold


@lru_cache(maxsize=_OWNER_CACHE)
def _owner(mode: int, uid: int, gid: int, uname_text: str, gname_text: str) -> _Owner:
    records: list[bytes] = []
    if uid > _MAX_OCTAL_7:
        records.append(_record(b"uid", b"%d" % uid))
    if gid > _MAX_OCTAL_7:
        records.append(_record(b"gid", b"%d" % gid))
    uname = uname_text.encode(errors="surrogateescape")
    gname = gname_text.encode(errors="surrogateescape")
    if len(uname) > _OWNER or not uname.isascii():
        records.append(_record(b"uname", uname))
    if len(gname) > _OWNER or not gname.isascii():
        records.append(_record(b"gname", gname))
    fields = (
        _octal(mode & _MAX_OCTAL_7, 8),
        _octal(min(uid, _MAX_OCTAL_7), 8),
        _octal(min(gid, _MAX_OCTAL_7), 8),
        uname[:_OWNER] if uname.isascii() else b"",
        gname[:_OWNER] if gname.isascii() else b"",
    )
    return _Owner(fields, b"".join(records))


def _ustar(
    name: bytes,
    prefix: bytes,
    typeflag: bytes,
    owner: _Owner,
    size: int,
    mtime: int,
    linkname: bytes,
    rdev: tuple[bytes, bytes] = (_ZERO_DEVICE, _ZERO_DEVICE),
) -> bytes:
    mode, uid, gid, uname, gname = owner.fields
    header = bytearray(
        _USTAR.pack(
            name,
            mode,
            uid,
            gid,
            _octal(size, 12),
            _octal(mtime, 12),
            _CHECKSUM_BLANK,
            typeflag,
            linkname,
            _MAGIC,
            uname,
            gname,
            rdev[0],
            rdev[1],
            prefix,
        )
    )
    header[_CHECKSUM_AT] = b"%06o\0 " % sum(header)
    return bytes(header)


def _mtime_record(mtime_ns: int) -> bytes:
    sign, whole = ("-", -mtime_ns) if mtime_ns < 0 else ("", mtime_ns)
    s, ns = divmod(whole, _NS)
    return _record(b"mtime", f"{sign}{s}.{ns:09d}".rstrip("0").rstrip(".").encode())


def member_header(entry: Entry) -> bytes:
    """The header records of one member: an optional pax extended header, then the ustar one."""
    kind = entry.kind
    path = entry.path + b"/" if kind is Kind.DIR else entry.path
    owner = _owner(entry.mode, entry.uid, entry.gid, entry.uname, entry.gname)
    records: list[bytes] = []
    split = _split_path(path)
    if split is None:
        if not _utf8(path):
            records.append(_record(b"hdrcharset", b"BINARY"))
        records.append(_record(b"path", path))
        split = b"", path[-_NAME:]
    prefix, name = split
    link = entry.link_target if kind is Kind.SYMLINK or kind is Kind.HARDLINK else b""
    if len(link) > _LINKNAME:
        records.append(_record(b"linkpath", link))
        link = link[:_LINKNAME]
    size = entry.size if kind is Kind.FILE else 0
    if size > _MAX_OCTAL_11:
        records.append(_record(b"size", b"%d" % size))
        size = _MAX_OCTAL_11
    sec, nsec = divmod(entry.mtime_ns, _NS)
    if nsec or not 0 <= sec <= _MAX_OCTAL_11:
        records.append(_mtime_record(entry.mtime_ns))
        sec = min(max(sec, 0), _MAX_OCTAL_11)
    if owner.records:
        records.append(owner.records)
    if kind is Kind.CHAR or kind is Kind.BLOCK:
        rdev = (_octal(os.major(entry.rdev), 8), _octal(os.minor(entry.rdev), 8))
        ustar = _ustar(name, prefix, _TYPEFLAG[kind], owner, size, sec, link, rdev)
    else:
        ustar = _ustar(name, prefix, _TYPEFLAG[kind], owner, size, sec, link)
    if not records:
        return ustar
    data = b"".join(records)
    base = entry.path.rsplit(b"/", 1)[-1][-_PAX_NAME_TAIL:]
    pax = _ustar(b"PaxHeader/" + base, b"", b"x", owner, len(data), sec, b"")
    return b"".join((pax, data, _ZERO_RECORD[: -len(data) % RECORD], ustar))


class _Output:
    """Gathers small pieces into BLOCK_SIZE writes; large pieces go out from their own buffer."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = memoryview(bytearray(BLOCK_SIZE))  # allocated once, never resized
        self._used = 0

    def add(self, data: Chunk) -> None:
        n = len(data)
        used = self._used
        if n >= _DIRECT_WRITE:
            self._write_all([self._buffer[:used], data] if used else [data])
            self._used = 0
            return
        if used + n > BLOCK_SIZE:
            self.flush()
            used = 0
        self._buffer[used : used + n] = data
        self._used = used + n

    def flush(self) -> None:
        if self._used:
            self._write_all([self._buffer[: self._used]])
            self._used = 0

    def _write_all(self, pieces: list[Chunk]) -> None:
        views = [memoryview(p).cast("B") for p in pieces]
        try:
            while views:
                n = os.writev(self._fd, views)
                while views and n >= len(views[0]):
                    n -= len(views[0])
                    views.pop(0)
                if n:
                    views[0] = views[0][n:]
        except OSError as e:
            raise OutputFailed(f"writing the archive failed: {_describe(e)}") from e


class TarWriter:
    """Writes plan entries as pax members; the caller supplies each FILE's bytes."""

    def __init__(self, fd: int) -> None:
        self._out = _Output(fd)

    def add(self, entry: Entry, data: Iterator[Chunk] | None) -> int:
        """Write one member; returns the data bytes written (entry.size for FILE)."""
        out = self._out
        out.add(member_header(entry))
        written = 0
        if data is not None:
            for chunk in data:
                out.add(chunk)
                written += len(chunk)
        if entry.kind is Kind.FILE and written != entry.size:
            raise AssertionError(f"{entry.path!r}: wrote {written} of {entry.size} bytes")
        if written % RECORD:
            out.add(bytes(RECORD - written % RECORD))
        return written

    def close(self) -> None:
        self._out.add(END_OF_ARCHIVE)
        self._out.flush()

    def abort(self) -> None:
        """Stop without the end-of-archive records, so a reader sees the archive is cut."""


def write_tar(
    entries: tuple[Entry, ...] | list[Entry],
    open_data: Opener,
    fd: int,
    on_skip: Callable[[Entry], None] | None = None,
) -> None:
    """Stream `entries` as a pax tar to `fd`. A FILE whose data cannot be opened is skipped,
    and so are its hard links (the opener has warned)."""
    writer = TarWriter(fd)
    skipped: set[bytes] = set()
    try:
        for entry in entries:
            data = None
            if entry.kind is Kind.FILE:
                data = open_data(entry)
                if data is None:
                    skipped.add(entry.path)
                    if on_skip:
                        on_skip(entry)
                    continue
            elif entry.kind is Kind.HARDLINK and entry.link_target in skipped:
                continue
            writer.add(entry, data)
    except BaseException:
        writer.abort()
        raise
    writer.close()
