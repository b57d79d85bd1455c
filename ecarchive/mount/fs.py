"""The mfusepy adapter: FUSE calls → `LowerView`. Every writing call fails with EROFS.

mfusepy hands paths over as str decoded with surrogateescape; os.fsencode gives the exact
bytes back. Errors are raised as OSError with the errno the kernel should see.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
from collections.abc import Callable
from typing import Any

import mfusepy

from .lowerfile import LowerFile
from .view import LowerView


def _read_only(*_args: Any, **_kwargs: Any) -> int:
    raise mfusepy.FuseOSError(errno.EROFS)


class LowerFS(mfusepy.Operations):  # type: ignore[misc]
    """Read-only lower tree of SOURCE. `ready` runs once the kernel has answered INIT."""

    use_ns = True  # times in integer nanoseconds, as lstat gives them

    def __init__(self, view: LowerView, ready: Callable[[], None] | None = None) -> None:
        self.view = view
        self._ready = ready
        self._files: dict[int, LowerFile] = {}
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

    def readdir(self, path: str, fh: int) -> list[Any]:
        entries: list[Any] = [".", ".."]
        for name, file_type, ino in self.view.listdir(os.fsencode(path)):
            entries.append((os.fsdecode(name), {"st_mode": file_type, "st_ino": ino}, 0))
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
