"""DEST reached only through directory file descriptors.

Every component below DEST is opened with O_NOFOLLOW|O_DIRECTORY from its parent's fd, and
every create, unlink and attribute change names its final component relative to a parent fd
(`dir_fd=`, `follow_symlinks=False`). A symlink the archive planted (or one that was in DEST
before) is therefore never followed, whatever order the members come in, including for the
directory attributes that are set at the end of the run.

The primitives (opening a directory below a descriptor, lstat by name) are `fsio`'s, shared
with the walk of `create`; this module holds what restore does with them: which directories it
keeps open, what it creates and what it removes to make room.
"""

from __future__ import annotations

import os
import stat

from ..fsio import lstat_at, open_dir, open_root

Parts = tuple[bytes, ...]

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
        return cls(open_root(root))

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
        held = self._fds[kept - 1] if kept else self.root_fd
        assert held is not None
        fd = held
        for i in range(kept, depth):
            fd = open_dir(self._names[i], fd)
            self._fds[i] = fd
            self._let_go(i - MAX_OPEN_DIRS)
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
                fd = open_dir(name, parent)
            except OSError:
                if make is None or make_room(parent, name, keep_dir=True):
                    raise  # a real directory we cannot open is never replaced
                os.mkdir(name, make, dir_fd=parent)
                fd = open_dir(name, parent)
            self._push(name, fd)
        return self._fd_at(len(parts))


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
