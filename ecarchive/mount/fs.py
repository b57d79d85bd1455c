"""The mfusepy adapter: FUSE calls → `LowerView`. Every writing call fails with EROFS.

mfusepy hands paths over as str decoded with surrogateescape; os.fsencode gives the exact
bytes back. Errors are raised as OSError with the errno the kernel should see.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import operator
import os
import stat
import struct
import threading
from collections.abc import Callable
from typing import Any

import mfusepy

from .lowerfile import LowerFile
from .view import LowerView

FUSE_FILL_DIR_PLUS = 2  # fuse.h: the filler's stat is complete (libfuse 3)

_pinned = threading.local()
# libfuse 3 runs a fixed set of workers (max_idle_threads = max_threads); libfuse 2 ends idle
# workers beyond ten and starts new ones, whose kept thread states would pile up.
_KEEP_THREAD_STATES = mfusepy.fuse_version_major >= 3
_NS = 10**9
# What the view's attributes fill, in the order StatPacker.pack reads them from a dict.
_FIELDS = ("st_ino", "st_nlink", "st_mode", "st_uid", "st_gid", "st_rdev", "st_size", "st_blocks")
_TIMES = ("st_atime", "st_mtime", "st_ctime")
_INT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}


class StatPacker:
    """Fills a libfuse `struct stat` from the view's attribute dict in one struct.pack_into.

    mfusepy's set_st_attrs sets each field by name through ctypes (~10 µs an entry), which a
    READDIRPLUS of a large directory pays per entry. The format is derived from mfusepy's
    c_stat, so it follows the platform's layout; fields it lacks are left out, the rest zero.
    """

    def __init__(self, cls: Any) -> None:
        wanted = [*_FIELDS, *(f"{t}spec.{part}" for t in _TIMES for part in ("tv_sec", "tv_nsec"))]
        leaves: list[tuple[int, int, str, int]] = []  # offset, size, struct code, index in wanted
        for name, ctype, *_ in cls._fields_:
            offset = getattr(cls, name).offset
            members = getattr(ctype, "_fields_", None)
            subs = [(f"{name}.{n}", t, getattr(ctype, n).offset) for n, t, *_ in members or ()]
            for leaf, leaf_type, inner in subs or [(name, ctype, 0)]:
                if leaf in wanted:
                    code = _INT_CODES[ctypes.sizeof(leaf_type)]
                    code = code if leaf_type._type_.islower() else code.upper()
                    leaves.append((offset + inner, ctypes.sizeof(leaf_type), code, wanted.index(leaf)))
        fmt, end = ["="], 0
        for offset, size, code, _ in sorted(leaves):
            fmt.append(f"{offset - end}x{code}")
            end = offset + size
        fmt.append(f"{ctypes.sizeof(cls) - end}x")
        self._struct = struct.Struct("".join(fmt))
        self._order = operator.itemgetter(*(index for *_, index in sorted(leaves)))

    def pack(self, st: Any, attrs: dict[str, int]) -> None:
        a_s, a_ns = divmod(attrs["st_atime"], _NS)
        m_s, m_ns = divmod(attrs["st_mtime"], _NS)
        c_s, c_ns = divmod(attrs["st_ctime"], _NS)
        values = (*operator.itemgetter(*_FIELDS)(attrs), a_s, a_ns, m_s, m_ns, c_s, c_ns)
        self._struct.pack_into(st, 0, *self._order(values))


_pack_stat = StatPacker(mfusepy.c_stat).pack


def _keep_thread_state() -> None:
    """Give the calling libfuse worker thread a Python thread state for the rest of its life.

    ctypes wraps every callback from a thread Python did not start in PyGILState_Ensure/Release,
    and the Release of the outermost one deletes the thread state: each FUSE request paid for a
    new one (an mmap'ed frame stack, a gettid) and lost its thread-local scratch buffers (the
    extent encryption's 1 MiB tile). One extra, never released Ensure keeps it. libfuse 3's
    workers live as long as the mount (max_idle_threads = max_threads), so at most max_threads
    thread states stay, as with threads Python started.
    """
    if not getattr(_pinned, "kept", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _pinned.kept = True


class LowerFUSE(mfusepy.FUSE):  # type: ignore[misc]
    """mfusepy's FUSE with a Python thread state kept per worker thread, whose readdir hands
    libfuse 3 every entry's full attributes.

    mfusepy fills only the file type (its readdir_fuse_3 leaves a TODO there), so a tree walk
    costs one LOOKUP round trip, and one Python call, per entry. With FUSE_FILL_DIR_PLUS the
    kernel's READDIRPLUS answer carries the attributes and `find -ls` or `rsync` need no
    further call per entry. libfuse 2 keeps mfusepy's readdir.
    """

    def _wrapper(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if _KEEP_THREAD_STATES:
            _keep_thread_state()
        return super()._wrapper(func, *args, **kwargs)

    def readdir_fuse_3(
        self, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any, flags: int
    ) -> int:
        # Entries carry their position, so libfuse hands each one with its attributes to the
        # kernel at once (with offset 0 it buffers them and libfuse 3.14 drops the attributes);
        # a listing that fills the kernel's buffer is resumed from `offset`.
        st = mfusepy.c_stat()
        st_p = ctypes.pointer(st)  # converted once, not per filler call
        entries = self.operations.listing(path or b"/", fip.contents.fh, offset)
        for position in range(offset, len(entries)):
            name, attrs = entries[position]
            if attrs is None:
                ctypes.memset(st_p, 0, ctypes.sizeof(st))
                st.st_mode = stat.S_IFDIR
                plus = 0
            else:
                _pack_stat(st, attrs)
                plus = FUSE_FILL_DIR_PLUS
            if filler(buf, name, st_p, position + 1, plus) != 0:
                break
        return 0

    def read(self, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
        # Straight into libfuse's reply buffer: mfusepy's read wants bytes, then copies them.
        out = (ctypes.c_ubyte * size).from_address(ctypes.addressof(buf.contents))
        done: int = self.operations.read_into(fip.contents.fh, offset, memoryview(out))
        return done

    def fgetattr(self, path: bytes | None, buf: Any, fip: Any) -> int:
        fh = fip.contents.fh if fip else None
        decoded = None if path is None else path.decode(self.encoding, self.errors)
        _pack_stat(buf.contents, self.operations.getattr(decoded, fh))
        return 0


def _read_only(*_args: Any, **_kwargs: Any) -> int:
    raise mfusepy.FuseOSError(errno.EROFS)


class LowerFS(mfusepy.Operations):  # type: ignore[misc]
    """Read-only lower tree of SOURCE. `ready` runs once the kernel has answered INIT."""

    use_ns = True  # times in integer nanoseconds, as lstat gives them

    def __init__(self, view: LowerView, ready: Callable[[], None] | None = None) -> None:
        self.view = view
        self._ready = ready
        self._files: dict[int, LowerFile] = {}
        self._dirs: dict[int, list[tuple[bytes, Any]]] = {}  # open directory -> its listing
        self._handles = itertools.count(1)
        self._lock = threading.Lock()
        self.started = False  # the kernel answered the mount

    def init(self, path: str) -> None:
        self.started = True
        if self._ready is not None:
            self._ready()

    def destroy(self, path: str) -> None:
        with self._lock:
            files, self._files = list(self._files.values()), {}
        for f in files:
            f.close()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        attrs = self.view.attributes(os.fsencode(path))
        if fh is not None:
            # The size an open file was fixed at, so the kernel never cuts or pads its reads.
            open_file = self._files.get(fh)
            if open_file is not None:
                attrs["st_size"] = open_file.size
        return attrs

    def opendir(self, path: str) -> int:
        with self._lock:
            fh = next(self._handles)
            self._dirs[fh] = []
        return fh

    def releasedir(self, path: str, fh: int) -> int:
        with self._lock:
            self._dirs.pop(fh, None)
        return 0

    def listing(self, path: bytes, fh: int, offset: int) -> list[tuple[bytes, Any]]:
        """'.', '..' and the entries of an open directory, listed once per opendir (a large
        directory is read by many readdir calls, each resuming at an offset)."""
        entries = self._dirs.get(fh)
        if entries is None or not entries or offset == 0:
            entries = [(b".", None), (b"..", None), *self.view.listdir(path)]
            with self._lock:
                if fh in self._dirs:
                    self._dirs[fh] = entries
        return entries

    def readdir(self, path: str, fh: int) -> list[Any]:
        entries: list[Any] = [".", ".."]
        for name, attrs in self.view.listdir(os.fsencode(path)):
            entries.append((os.fsdecode(name), attrs, 0))
        return entries

    def readlink(self, path: str) -> str:
        return os.fsdecode(self.view.readlink(os.fsencode(path)))

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC):
            raise mfusepy.FuseOSError(errno.EROFS)
        open_file = self.view.open(os.fsencode(path))
        with self._lock:
            fh = next(self._handles)
            self._files[fh] = open_file
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        # mfusepy registers READ only for operations that have `read`; LowerFUSE serves it
        # through read_into, straight into libfuse's buffer.
        return self._files[fh].read(offset, size)

    def read_into(self, fh: int, offset: int, out: memoryview) -> int:
        return self._files[fh].read_into(offset, out)

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            open_file = self._files.pop(fh, None)
        if open_file is not None:
            open_file.close()
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return self.view.statfs()

    def access(self, path: str, amode: int) -> int:
        if amode & os.W_OK:
            raise mfusepy.FuseOSError(errno.EROFS)
        self.view.lookup(os.fsencode(path))
        return 0

    chmod = chown = create = link = mkdir = mknod = rename = rmdir = symlink = _read_only
    truncate = unlink = utimens = write = setxattr = removexattr = fallocate = _read_only
