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

from libarchive import ffi
from libarchive.exception import ArchiveError

from ..errors import OutputFailed
from ..model import FILE_TYPE, Entry, Kind
from .base import Opener, Sink
from .tarsize import tar_size_bound

# libarchive-c's copy_link picks symlink vs hard link from flags we cannot set; call the
# explicit setters of libarchive itself.
_copy_symlink = ffi.libarchive.archive_entry_copy_symlink
_copy_symlink.argtypes = [ffi.c_archive_entry_p, ctypes.c_char_p]
_copy_symlink.restype = None
_copy_hardlink = ffi.libarchive.archive_entry_copy_hardlink
_copy_hardlink.argtypes = [ffi.c_archive_entry_p, ctypes.c_char_p]
_copy_hardlink.restype = None
# The per-entry calls, bound once (module attribute lookups cost as much as some calls).
_clear = ffi.entry_clear
_copy_pathname = ffi.entry_copy_pathname
_set_mode = ffi.entry_set_mode  # file type and permissions in one call
_set_uid = ffi.entry_set_uid
_set_gid = ffi.entry_set_gid
_copy_uname = ffi.entry_copy_uname
_copy_gname = ffi.entry_copy_gname
_set_mtime = ffi.entry_set_mtime
_set_size = ffi.entry_set_size
_write_header = ffi.write_header
_write_data = ffi.write_data
_finish_entry = ffi.write_finish_entry

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
        try:
            _write_header(a, e)
            if data is not None:
                for chunk in data:
                    n = len(chunk)
                    if not n:
                        continue
                    if isinstance(chunk, bytes):
                        _write_data(a, chunk, n)
                    else:
                        # the buffer's address: no ctypes array type per chunk size
                        _write_data(a, ctypes.addressof(_CHAR.from_buffer(chunk)), n)
                    written += n
            _finish_entry(a)
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
