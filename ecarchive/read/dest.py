"""DEST reached only through directory file descriptors.

Every component below DEST is opened with O_NOFOLLOW|O_DIRECTORY from its parent's fd, and
every create, unlink and attribute change names its final component relative to a parent fd
(`dir_fd=`, `follow_symlinks=False`). A symlink the archive planted (or one that was in DEST
before) is therefore never followed, whatever order the members come in, including for the
directory attributes that are set at the end of the run.
"""

from __future__ import annotations

import os
import stat

Parts = tuple[bytes, ...]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Open directories kept for the current path; deeper ones are reopened from the nearest kept
# ancestor, so a 1,500-level path needs no 1,500 descriptors.
MAX_OPEN_DIRS = 64


class DestTree:
    """Directory fds below DEST for the path being restored, opened component by component."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._names: list[bytes] = []
        self._fds: list[int | None] = []  # fd of the directory _names[:i + 1]

    @classmethod
    def open(cls, root: bytes) -> DestTree:
        return cls(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))

    def close(self) -> None:
        self._truncate(0)
        os.close(self.root_fd)

    def _truncate(self, depth: int) -> None:
        for fd in self._fds[depth:]:
            if fd is not None:
                os.close(fd)
        del self._names[depth:]
        del self._fds[depth:]

    def _fd_at(self, depth: int) -> int:
        """The fd of _names[:depth] (the root for 0), reopening it if it was let go."""
        kept = depth
        while kept > 0 and self._fds[kept - 1] is None:
            kept -= 1
        fd = self._fds[kept - 1] if kept else self.root_fd
        for i in range(kept, depth):
            fd = os.open(self._names[i], _DIR_FLAGS, dir_fd=fd)
            self._fds[i] = fd
            self._let_go(i - MAX_OPEN_DIRS)
        assert fd is not None
        return fd

    def _let_go(self, index: int) -> None:
        if index >= 0:
            fd = self._fds[index]
            if fd is not None:
                os.close(fd)
                self._fds[index] = None

    def _push(self, name: bytes, fd: int) -> None:
        self._names.append(name)
        self._fds.append(fd)
        self._let_go(len(self._fds) - 1 - MAX_OPEN_DIRS)

    def dir_fd(self, parts: Parts, *, make: int | None = None) -> int:
        """The fd of directory DEST/parts (borrowed: valid until the next call).

        With `make` (a mode), a missing component is created and a non-directory in its way
        is removed, as tar does for the parents of a member; without it, a missing or
        non-directory component raises OSError.
        """
        common = 0
        limit = min(len(parts), len(self._names))
        while common < limit and self._names[common] == parts[common]:
            common += 1
        self._truncate(common)
        for name in parts[common:]:
            parent = self._fd_at(len(self._names))
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except OSError:
                if make is None or make_room(parent, name, keep_dir=True):
                    raise  # a real directory we cannot open is never replaced
                os.mkdir(name, make, dir_fd=parent)
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            self._push(name, fd)
        return self._fd_at(len(parts))

    def open_detached(self, parts: Parts) -> int:
        """A new fd of directory DEST/parts that the caller closes (a second directory at once,
        e.g. a hard link's source beside its destination)."""
        fd = os.dup(self.root_fd)
        try:
            for name in parts:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd


def lstat_at(parent: int, name: bytes) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def make_room(parent: int, name: bytes, *, keep_dir: bool) -> bool:
    """Remove what stands at name, like tar does; True when it is a directory that may stay."""
    st = lstat_at(parent, name)
    if st is None:
        return False
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return True
        os.rmdir(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)
    return False


def open_dir_at(parent: int, name: bytes) -> int:
    return os.open(name, _DIR_FLAGS, dir_fd=parent)
