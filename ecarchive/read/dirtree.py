"""A lower tree on disk (an extracted archive, a mounted disc) read as members.

Everything is reached through directory descriptors (`fsio`): the top is opened once, every
directory below it with `O_NOFOLLOW|O_DIRECTORY` from its parent's descriptor *before* its
entry is handed out, and files with `O_NOFOLLOW|O_NONBLOCK` and an fstat check. A directory
swapped for a symlink after it was listed therefore leads nowhere new (the walk holds the
directory it listed), and a file swapped for a FIFO or device is damage, never a hang.

Descriptors are kept for the deepest MAX_OPEN_DIRS directories of the current path; an
ancestor let go is reopened on the way back up and must be the same directory (device and
inode), so a 1,500-level tree needs no 1,500 descriptors and is never re-resolved blindly.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..display import escape_path
from ..ecryptfs.header import MARKER_PEEK_BYTES, has_marker
from ..errors import Reporter
from ..fsio import lstat_at, open_dir, open_regular, open_root, read_full
from ..model import Kind
from .lower import LowerEntry, MemberUnreadable, Path, Progress

MAX_OPEN_DIRS = 64
SideFileName = Callable[[bytes], bool]


class FileData:
    """A lower file, opened below its directory's descriptor on first read."""

    def __init__(self, dir_fd: int, name: bytes, progress: Progress | None) -> None:
        self._dir_fd = dir_fd
        self._name = name
        self._progress = progress
        self._fd: int | None = None

    def readinto(self, view: memoryview) -> int:
        try:
            if self._fd is None:
                self._fd, _ = open_regular(self._name, self._dir_fd)
            got = read_full(self._fd, view)
        except OSError as e:
            raise MemberUnreadable(e.strerror or str(e)) from e
        if self._progress and got:
            self._progress(got)
        return got

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def is_plain_file(dir_fd: int, name: bytes) -> bool:
    """A regular file without the eCryptfs marker (a RESTORE.txt or MANIFEST, not a lower
    file of that name)."""
    try:
        fd, _ = open_regular(name, dir_fd)
    except OSError:
        return False
    try:
        head = memoryview(bytearray(MARKER_PEEK_BYTES))
        return not has_marker(bytes(head[: read_full(fd, head)]))
    finally:
        os.close(fd)


def _sorted_names(fd: int) -> list[bytes]:
    # listdir of a descriptor gives str; fsencode undoes its surrogateescape exactly
    return sorted(os.fsencode(n) for n in os.listdir(fd))


@dataclass(slots=True)
class _Level:
    path: Path
    fd: int | None  # None: let go (too deep below), reopened on the way back
    ident: tuple[int, int]
    names: Iterator[bytes]


class DirTree:
    """An open directory on disk: its top-level names, its lower root, its members."""

    def __init__(self, path: bytes) -> None:
        self.top_fd = open_root(path)
        self.root_fd: int | None = None

    def close(self) -> None:
        if self.root_fd is not None:
            os.close(self.root_fd)
            self.root_fd = None
        os.close(self.top_fd)

    def top_names(self) -> list[bytes]:
        return _sorted_names(self.top_fd)

    def open_root(self, name: bytes | None) -> None:
        """Take the top (None) or its directory `name` as the lower root."""
        self.root_fd = os.dup(self.top_fd) if name is None else open_dir(name, self.top_fd)

    def side_files(
        self, is_side: SideFileName, reporter: Reporter, progress: Progress | None
    ) -> Iterator[LowerEntry]:
        """The plain top-level files named as `is_side` says, as members."""
        for name in self.top_names():
            if is_side(name) and is_plain_file(self.top_fd, name):
                entry = self._entry(self.top_fd, name, (name,), {}, reporter, progress)
                if entry is not None:
                    yield entry

    def walk(
        self, skip_top: SideFileName, reporter: Reporter, progress: Progress | None
    ) -> Iterator[LowerEntry]:
        """The lower root's members sorted by name bytes, parents first; hard links found by
        inode; top-level plain files that `skip_top` names are not members. Iterative, so the
        depth is bounded by memory, not recursion."""
        assert self.root_fd is not None
        st = os.fstat(self.root_fd)
        root = _Level((), os.dup(self.root_fd), (st.st_dev, st.st_ino), iter(()))
        root.names = iter(self._listing(root, reporter))
        stack = [root]
        first_name: dict[tuple[int, int], Path] = {}
        try:
            while stack:
                level = stack[-1]
                name = next(level.names, None)
                fd = None if name is None else self._fd_of(stack, reporter)
                if name is None or fd is None:
                    self._pop(stack)
                    continue
                if not level.path and skip_top(name) and is_plain_file(fd, name):
                    continue
                path = (*level.path, name)
                entry = self._entry(fd, name, path, first_name, reporter, progress)
                if entry is None:
                    continue
                # opened before it is shown, so what is listed is the directory just seen
                child = self._enter(fd, name, path, reporter) if entry.kind is Kind.DIR else None
                yield entry
                if isinstance(entry.data, FileData):
                    entry.data.close()
                if child is not None:
                    self._push(stack, child, reporter)
        finally:
            while stack:
                self._pop(stack)

    # -- the stack of open directories ---------------------------------------------------

    def _enter(self, fd: int, name: bytes, path: Path, reporter: Reporter) -> _Level | None:
        """The directory `name`, opened without following a symlink; None (warned) when it
        cannot be: its entry is still shown, as an empty directory."""
        try:
            child = open_dir(name, fd)
        except OSError as e:
            reporter.warn(f"{escape_path(b'/'.join(path))}: cannot read directory: {e.strerror}")
            return None
        st = os.fstat(child)
        return _Level(path, child, (st.st_dev, st.st_ino), iter(()))

    def _push(self, stack: list[_Level], level: _Level, reporter: Reporter) -> None:
        level.names = iter(self._listing(level, reporter))
        stack.append(level)
        if len(stack) > MAX_OPEN_DIRS + 1:  # the root (stack[0]) is kept: reopening starts there
            far = stack[-MAX_OPEN_DIRS - 1]
            if far.fd is not None:
                os.close(far.fd)
                far.fd = None

    @staticmethod
    def _pop(stack: list[_Level]) -> None:
        level = stack.pop()
        if level.fd is not None:
            os.close(level.fd)

    @staticmethod
    def _listing(level: _Level, reporter: Reporter) -> list[bytes]:
        assert level.fd is not None
        try:
            return _sorted_names(level.fd)
        except OSError as e:
            where = escape_path(b"/".join(level.path) or b".")
            reporter.warn(f"{where}: cannot read directory: {e.strerror}")
            return []

    @staticmethod
    def _fd_of(stack: list[_Level], reporter: Reporter) -> int | None:
        """The current directory's descriptor, reopened from the nearest open ancestor if it
        was let go; None (warned) when a directory on the way is no longer the one listed."""
        depth = len(stack) - 1
        if stack[depth].fd is not None:
            return stack[depth].fd
        start = depth
        while stack[start].fd is None:
            start -= 1
        for i in range(start + 1, depth + 1):
            level, parent_fd = stack[i], stack[i - 1].fd
            assert parent_fd is not None
            try:
                fd = open_dir(level.path[-1], parent_fd)
            except OSError:
                fd = None
            if fd is not None:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == level.ident:
                    level.fd = fd
                    continue
                os.close(fd)
            where = escape_path(b"/".join(level.path))
            reporter.warn(f"{where}: directory replaced while read; the rest of it skipped")
            return None
        return stack[depth].fd

    # -- one entry -----------------------------------------------------------------------

    @staticmethod
    def _entry(
        fd: int,
        name: bytes,
        path: Path,
        first_name: dict[tuple[int, int], Path],
        reporter: Reporter,
        progress: Progress | None,
    ) -> LowerEntry | None:
        where = escape_path(b"/".join(path))
        try:
            st = lstat_at(fd, name)
        except OSError as e:
            reporter.warn(f"{where}: cannot stat: {e.strerror}; skipped")
            return None
        if st is None:
            reporter.warn(f"{where}: removed while read; skipped")
            return None
        mode = st.st_mode
        common: dict[str, Any] = {
            "path": path,
            "mode": stat.S_IMODE(mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "uname": "",
            "gname": "",
            "mtime_ns": st.st_mtime_ns,
        }
        if stat.S_ISDIR(mode):
            return LowerEntry(kind=Kind.DIR, **common)
        if stat.S_ISREG(mode):
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in first_name:
                    return LowerEntry(kind=Kind.HARDLINK, link_path=first_name[key], **common)
                first_name[key] = path
            data = FileData(fd, name, progress)
            return LowerEntry(kind=Kind.FILE, size=st.st_size, data=data, **common)
        if stat.S_ISLNK(mode):
            try:
                target = os.readlink(name, dir_fd=fd)
            except OSError as e:
                reporter.warn(f"{where}: cannot read symlink: {e.strerror}; skipped")
                return None
            return LowerEntry(kind=Kind.SYMLINK, symlink=target, **common)
        if stat.S_ISFIFO(mode):
            return LowerEntry(kind=Kind.FIFO, **common)
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = Kind.CHAR if stat.S_ISCHR(mode) else Kind.BLOCK
            return LowerEntry(kind=kind, rdev=st.st_rdev, **common)
        reporter.warn(f"{where}: unsupported file type; skipped")
        return None
