"""Reaching files inside a tree through directory file descriptors, written once.

A path is never resolved twice: SOURCE is opened once, every directory below it is opened
relative to its parent's descriptor with `O_NOFOLLOW|O_DIRECTORY`, and every file relative to
its directory with `O_NOFOLLOW|O_NONBLOCK`. A directory swapped for a symlink between the plan
and the read therefore fails to open (ELOOP/ENOTDIR) instead of leading outside the tree, and a
file swapped for a FIFO or a device is opened without blocking and refused after `fstat`.
"""

from __future__ import annotations

import errno
import os
import stat
import threading

_NOATIME = getattr(os, "O_NOATIME", 0)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | _NOATIME


class NotRegularFile(OSError):
    """The name no longer refers to a regular file (a FIFO, device, directory or socket now)."""

    def __init__(self, name: bytes) -> None:
        super().__init__(errno.EINVAL, "not a regular file", os.fsdecode(name))


def open_noatime(name: bytes, flags: int, dir_fd: int | None = None) -> int:
    """os.open that drops O_NOATIME where the kernel refuses it, and only then."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except PermissionError:
        if not flags & _NOATIME:
            raise
        # O_NOATIME is refused on files we do not own unless we are root
        return os.open(name, flags & ~_NOATIME, dir_fd=dir_fd)


def open_root(path: bytes) -> int:
    """A tree's root (SOURCE, DEST): symlinks in the path the user typed are followed, as GNU
    tar does."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_dir(name: bytes, dir_fd: int) -> int:
    """The directory `name` inside `dir_fd`; a symlink there raises instead of being followed."""
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def open_subdir(root_fd: int, rel: bytes) -> int:
    """The directory at `rel` ('/'-separated, b"" for the root) below `root_fd`, one component
    at a time; the caller closes the descriptor returned."""
    fd = os.dup(root_fd)
    try:
        for part in rel.split(b"/") if rel else ():
            if part in (b"", b".", b".."):
                raise OSError(errno.EINVAL, "bad path component", os.fsdecode(rel))
            child = open_dir(part, fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def lstat_at(dir_fd: int, name: bytes) -> os.stat_result | None:
    """lstat of `name` inside `dir_fd`; None when nothing is there."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_regular(name: bytes, dir_fd: int | None) -> tuple[int, os.stat_result]:
    """Open a regular file for reading without following a symlink or blocking on a FIFO;
    returns the descriptor and its fstat. Raises NotRegularFile for anything else."""
    fd = open_noatime(name, FILE_FLAGS, dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(name)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_full(fd: int, view: memoryview) -> int:
    """Fill `view` from the file position; returns the bytes read (fewer only at end of file)."""
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return got


def pread_full(fd: int, view: memoryview, offset: int) -> int:
    """Fill `view` from `offset`; returns the bytes read (fewer only at end of file)."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            break
        got += n
    return got


class DirHandle:
    """An open directory shared by jobs on several threads; closed when the last user lets go
    and its owner has released it."""

    __slots__ = ("_lock", "_refs", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._refs = 1  # the owner's
        self._lock = threading.Lock()

    def acquire(self) -> DirHandle:
        with self._lock:
            self._refs += 1
        return self

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            last = self._refs == 0
        if last:
            os.close(self.fd)


class TreeDirs:
    """The directories of one tree, opened on demand below its root descriptor.

    Files are asked for in plan order, so a one-entry cache (the current directory) opens each
    directory once per run of its files."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._rel: bytes | None = None
        self._handle: DirHandle | None = None

    def parent(self, rel: bytes) -> tuple[DirHandle, bytes]:
        """The directory holding `rel` (acquired: release it when done) and the file's name.
        Raises OSError when a directory on the way cannot be opened or is no longer one."""
        head, _, name = rel.rpartition(b"/")
        if self._rel != head or self._handle is None:
            self.close()
            self._handle = DirHandle(open_subdir(self.root_fd, head))
            self._rel = head
        return self._handle.acquire(), name

    def close(self) -> None:
        handle, self._handle, self._rel = self._handle, None, None
        if handle is not None:
            handle.release()
