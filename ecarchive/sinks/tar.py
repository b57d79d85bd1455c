"""The tar sink: a pax archive written through libarchive straight to a file descriptor.

libarchive formats every header (pax records for nanosecond mtimes, long paths and link
targets, non-ASCII names, large numbers), so the output is what bsdtar itself would write.
Its per-entry calls through ctypes cost ~50 µs; a hand-written pax encoder measured faster
for tiny files, but the format belongs to the library that reads it back everywhere.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterator
from typing import Any

from libarchive import ffi
from libarchive.exception import ArchiveError

from ..errors import OutputFailed
from ..model import FILE_TYPE, Entry, Kind
from .base import Opener, Sink
from .tarsize import BLOCK, header_size_bound, tar_size_bound

# Calls through a PyDLL handle keep the GIL; libarchive-c's CDLL bindings drop and retake it,
# and while workers run every retake waits for one of them: ~12 handoffs per member, a third
# of the CPU time of a tree of small files. So a call keeps the GIL unless it may write to the
# output, which can block for as long as the reader likes (a pipe read by a thread of this
# very process would deadlock): libarchive writes only when its block buffer fills, so the
# bytes handed to it so far tell which calls cannot.
_held = ctypes.PyDLL(ffi.libarchive._name, handle=ffi.libarchive._handle)


def _bind(name: str, restype: Any, *argtypes: Any) -> Any:
    function = getattr(_held, name)
    function.argtypes = list(argtypes)
    function.restype = restype
    return function


def _entry_call(name: str, *argtypes: Any) -> Any:
    return _bind(name, None, ffi.c_archive_entry_p, *argtypes)


def _checked(function: Any) -> Any:
    function.errcheck = ffi.check_int
    return function


_clear = _bind("archive_entry_clear", ffi.c_archive_entry_p, ffi.c_archive_entry_p)
_copy_pathname = _entry_call("archive_entry_copy_pathname", ctypes.c_char_p)
_set_mode = _entry_call("archive_entry_set_mode", ctypes.c_int)  # type and permissions at once
_set_uid = _entry_call("archive_entry_set_uid", ctypes.c_longlong)
_set_gid = _entry_call("archive_entry_set_gid", ctypes.c_longlong)
_copy_uname = _entry_call("archive_entry_copy_uname", ctypes.c_char_p)
_copy_gname = _entry_call("archive_entry_copy_gname", ctypes.c_char_p)
_set_mtime = _entry_call("archive_entry_set_mtime", ctypes.c_longlong, ctypes.c_long)
_set_size = _entry_call("archive_entry_set_size", ctypes.c_longlong)
# libarchive-c's copy_link picks symlink vs hard link from flags we cannot set; call the
# explicit setters of libarchive itself.
_copy_symlink = _entry_call("archive_entry_copy_symlink", ctypes.c_char_p)
_copy_hardlink = _entry_call("archive_entry_copy_hardlink", ctypes.c_char_p)
_handed = _bind("archive_filter_bytes", ctypes.c_longlong, ffi.c_archive_p, ctypes.c_int)
# (keeps the GIL, releases it)
_WRITE_HEADER = (
    _checked(_bind("archive_write_header", ctypes.c_int, ffi.c_archive_p, ffi.c_archive_entry_p)),
    ffi.write_header,
)
_WRITE_DATA = (
    _checked(
        _bind(
            "archive_write_data",
            ctypes.c_ssize_t,
            ffi.c_archive_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
        )
    ),
    ffi.write_data,
)
_FINISH_ENTRY = (
    _checked(_bind("archive_write_finish_entry", ctypes.c_int, ffi.c_archive_p)),
    ffi.write_finish_entry,
)
_ALL_INPUT = -1  # archive_filter_bytes: the bytes handed to the output's buffer

_CHAR = ctypes.c_char
BLOCK_SIZE = 1 << 20  # libarchive's default 10 KiB blocks cost a third of the pipe throughput


def _describe(e: Exception) -> str:
    errno = getattr(e, "errno", None)
    if errno:
        return os.strerror(errno)
    return str(e)


class TarWriter:
    """Writes plan entries as pax members; the caller supplies each FILE's bytes."""

    def __init__(self, fd: int) -> None:
        self._a = ffi.write_new()
        self._entry = ffi.entry_new()
        self._names: dict[str, bytes] = {}  # user and group names, encoded once per run
        try:
            ffi.write_set_format_pax(self._a)
            ffi.write_set_bytes_per_block(self._a, BLOCK_SIZE)
            ffi.write_set_bytes_in_last_block(self._a, 1)
            ffi.write_open_fd(self._a, fd)
        except ArchiveError as e:
            self._free()
            raise OutputFailed(f"cannot start the tar stream: {_describe(e)}") from e

    def _free(self) -> None:
        ffi.entry_free(self._entry)
        ffi.write_free(self._a)

    def add(self, entry: Entry, data: Iterator[bytes | bytearray | memoryview] | None) -> int:
        """Write one member; returns the data bytes written (entry.size for FILE)."""
        e = self._entry
        _clear(e)
        _copy_pathname(e, entry.path)
        _set_mode(e, FILE_TYPE[entry.kind] | entry.mode)
        _set_uid(e, entry.uid)
        _set_gid(e, entry.gid)
        if entry.uname:
            _copy_uname(e, self._encoded(entry.uname))
        if entry.gname:
            _copy_gname(e, self._encoded(entry.gname))
        sec, nsec = divmod(entry.mtime_ns, 1_000_000_000)
        _set_mtime(e, sec, nsec)
        if entry.kind is Kind.SYMLINK:
            _copy_symlink(e, entry.link_target)
        elif entry.kind is Kind.HARDLINK:
            _copy_hardlink(e, entry.link_target)
        if entry.kind in (Kind.CHAR, Kind.BLOCK):
            ffi.entry_set_rdevmajor(e, os.major(entry.rdev))
            ffi.entry_set_rdevminor(e, os.minor(entry.rdev))
        _set_size(e, entry.size if entry.kind is Kind.FILE else 0)
        written = 0
        a = self._a
        # bytes libarchive can take before it writes its block out
        room = BLOCK_SIZE - _handed(a, _ALL_INPUT) % BLOCK_SIZE
        try:
            _WRITE_HEADER[header_size_bound(entry) >= room](a, e)
            room = BLOCK_SIZE - _handed(a, _ALL_INPUT) % BLOCK_SIZE
            if data is not None:
                for chunk in data:
                    n = len(chunk)
                    if not n:
                        continue
                    # a buffer goes by its address: no ctypes array type per chunk size
                    address = (
                        chunk
                        if isinstance(chunk, bytes)
                        else ctypes.addressof(_CHAR.from_buffer(chunk))
                    )
                    _WRITE_DATA[n >= room](a, address, n)
                    written += n
                    room = (room - n - 1) % BLOCK_SIZE + 1
            _FINISH_ENTRY[room <= BLOCK](a)  # pads the data to BLOCK
        except ArchiveError as e:
            raise OutputFailed(f"writing the archive failed: {_describe(e)}") from e
        if entry.kind is Kind.FILE and written != entry.size:
            raise AssertionError(f"{entry.path!r}: wrote {written} of {entry.size} bytes")
        return written

    def _encoded(self, name: str) -> bytes:
        raw = self._names.get(name)
        if raw is None:
            raw = self._names[name] = name.encode()
        return raw

    def close(self) -> int:
        """Finish the archive; returns the bytes written in all (headers and padding too)."""
        try:
            ffi.write_close(self._a)
            return int(ffi.filter_bytes(self._a, -1))
        except ArchiveError as e:
            raise OutputFailed(f"writing the archive failed: {_describe(e)}") from e
        finally:
            self._free()

    def abort(self) -> None:
        ffi.write_fail(self._a)
        self._free()


def write_tar(
    entries: tuple[Entry, ...] | list[Entry],
    open_data: Opener,
    fd: int,
    on_skip: Callable[[Entry], None] | None = None,
) -> int:
    """Stream `entries` as a pax tar to `fd`; returns the bytes written. A FILE whose data
    cannot be opened is skipped, and so are its hard links (the opener has warned)."""
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
    return writer.close()


class TarSink(Sink):
    """A pax tar through libarchive: a FILE that cannot be read is left out."""

    def size(self) -> int:
        return tar_size_bound(self.entries)

    def write(self, open_data: Opener, fd: int) -> int:
        return write_tar(self.entries, open_data, fd)
