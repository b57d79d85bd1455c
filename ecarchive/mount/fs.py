"""The mfusepy adapter: FUSE calls → `LowerView`. Every writing call fails with EROFS.

mfusepy hands paths over as str decoded with surrogateescape; os.fsencode gives the exact
bytes back. Errors are raised as OSError with the errno the kernel should see.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import stat
import threading
from collections.abc import Callable
from typing import Any

import mfusepy

from .lowerfile import LowerFile
from .view import LowerView

FUSE_FILL_DIR_PLUS = 2  # fuse.h: the filler's stat is complete (libfuse 3)

_pinned = threading.local()


def _keep_thread_state() -> None:
    """Give the calling libfuse worker thread a Python thread state for the rest of its life.

    ctypes wraps every callback from a thread Python did not start in PyGILState_Ensure/Release,
    and the Release of the outermost one deletes the thread state: each FUSE request paid for a
    new one (an mmap'ed frame stack, a gettid) and lost its thread-local scratch buffers (the
    extent encryption's 1 MiB tile). One extra, never released Ensure keeps it. libfuse's
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
        _keep_thread_state()
        return super()._wrapper(func, *args, **kwargs)

    def readdir_fuse_3(
        self, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any, flags: int
    ) -> int:
        # Entries carry their position, so libfuse hands each one with its attributes to the
        # kernel at once (with offset 0 it buffers them and libfuse 3.14 drops the attributes);
        # a listing that fills the kernel's buffer is resumed from `offset`.
        st = mfusepy.c_stat()
        size = ctypes.sizeof(st)
        entries = self.operations.listing(path or b"/", fip.contents.fh, offset)
        for position in range(offset, len(entries)):
            name, attrs = entries[position]
            ctypes.memset(ctypes.byref(st), 0, size)
            if attrs is None:
                st.st_mode = stat.S_IFDIR
                plus = 0
            else:
                mfusepy.set_st_attrs(st, attrs, use_ns=True)
                plus = FUSE_FILL_DIR_PLUS
            if filler(buf, name, st, position + 1, plus) != 0:
                break
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
        return self._files[fh].read(offset, size)

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
