"""SOURCE as an eCryptfs lower directory: what the mount shows, without FUSE.

Every call starts from one descriptor of SOURCE opened at mount time and walks the plaintext
path one component at a time with O_NOFOLLOW, so a symlink swapped into the tree is never
followed and a path is never resolved twice within a call. Attributes come from lstat alone:
a file's lower size is `lower_size(plaintext size)`, no byte is read before `open`.

What eCryptfs cannot store, `create` refuses or skips; the view leaves it out, so a copy of the
view mounts as exactly the rest of SOURCE: sockets, names longer than 143 bytes (with
encrypted names), symlink targets longer than 3007 bytes, excluded paths.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

from ..ecryptfs.sizes import lower_size
from ..errors import Reporter
from ..plan import Excluder
from .keys import InodeKeys
from .lowerfile import LowerFile
from .names import Names
from .resolve import open_beneath

_WALK_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOATIME = getattr(os, "O_NOATIME", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY | _NOATIME
_PIN_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# No O_NOFOLLOW: /proc/self/fd/N is a link, and following it is the point.
_REOPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | _NOATIME
_HAVE_PROC_FD = os.path.isdir("/proc/self/fd")
_BLOCK = 512  # st_blocks unit
_SHOWN_TYPES = frozenset(
    (stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK)
)


def _missing() -> OSError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))


@dataclass(frozen=True, slots=True)
class Node:
    """A plaintext entry found by a lower path."""

    parts: tuple[bytes, ...]  # plaintext path components below SOURCE (empty for the root)
    st: os.stat_result  # its lstat
    attrs: dict[str, int]  # what the lower file system would report

    @property
    def rel(self) -> bytes:
        return b"/".join(self.parts)


class LowerView:
    """The lower tree of SOURCE under one set of names and keys. Thread-safe."""

    def __init__(
        self,
        source: bytes,
        names: Names,
        keys: InodeKeys,
        reporter: Reporter,
        *,
        excludes: tuple[str, ...] = (),
    ) -> None:
        self.names = names
        self.keys = keys
        self.reporter = reporter
        self.excluder = Excluder(excludes)
        self.root_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # StableKeys reaches the xattr by path; anchor it where the descriptor points.
        self.source = os.path.realpath(source)

    def close(self) -> None:
        os.close(self.root_fd)

    # -- path resolution ----------------------------------------------------------------

    def _plain_parts(self, path: bytes) -> tuple[bytes, ...]:
        parts: list[bytes] = []
        for name in path.split(b"/"):
            if not name:
                continue
            plain = self.names.plain(name)
            if plain is None:
                raise _missing()
            parts.append(plain)
            if self.excluder and self.excluder.excluded(b"/".join(parts)):
                raise _missing()
        return tuple(parts)

    @contextlib.contextmanager
    def _dir(self, parts: tuple[bytes, ...], last_flags: int = _WALK_FLAGS) -> Iterator[int]:
        """A descriptor of the plaintext directory `parts`, reached without following links."""
        fd = open_beneath(self.root_fd, parts, last_flags)
        try:
            yield fd
        finally:
            os.close(fd)

    def lookup(self, path: bytes) -> Node:
        """The plaintext entry shown at lower `path` ('/'-separated, relative to the mount)."""
        parts = self._plain_parts(path)
        if not parts:
            st = os.fstat(self.root_fd)
            return Node(parts, st, self._attrs(st, st.st_size))
        with self._dir(parts[:-1]) as fd:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            attrs = self._shown(st, parts[-1], fd)
        if attrs is None:
            raise _missing()
        return Node(parts, st, attrs)

    def _shown(self, st: os.stat_result, name: bytes, dir_fd: int) -> dict[str, int] | None:
        """The lower attributes of plaintext entry `name` in dir_fd, None when not shown."""
        mode = st.st_mode
        if stat.S_IFMT(mode) not in _SHOWN_TYPES or len(name) > self.names.name_limit:
            return None
        if stat.S_ISREG(mode):
            return self._attrs(st, lower_size(st.st_size))
        if stat.S_ISLNK(mode):
            try:
                target = self.names.target(os.readlink(name, dir_fd=dir_fd))
            except OSError:
                return None
            return None if target is None else self._attrs(st, len(target))
        return self._attrs(st, st.st_size)

    @staticmethod
    def _attrs(st: os.stat_result, size: int) -> dict[str, int]:
        """stat of the lower entry, as the kernel's lower file system would report it."""
        return {
            "st_mode": st.st_mode,
            "st_ino": st.st_ino,
            "st_nlink": st.st_nlink,
            "st_uid": st.st_uid,
            "st_gid": st.st_gid,
            "st_rdev": st.st_rdev,
            "st_size": size,
            "st_blocks": -(-size // _BLOCK) if stat.S_ISREG(st.st_mode) else st.st_blocks,
            "st_atime": st.st_atime_ns,
            "st_mtime": st.st_mtime_ns,
            "st_ctime": st.st_ctime_ns,
        }

    # -- what the file system calls ask -------------------------------------------------

    def attributes(self, path: bytes) -> dict[str, int]:
        return self.lookup(path).attrs

    def listdir(self, path: bytes) -> list[tuple[bytes, dict[str, int]]]:
        """(lower name, lower attributes) of each entry shown in a directory."""
        parts = self._plain_parts(path)
        out: list[tuple[bytes, dict[str, int]]] = []
        excluder = self.excluder if self.excluder else None
        with self._dir(parts, _LIST_FLAGS) as fd, os.scandir(fd) as it:
            for d in it:
                name = os.fsencode(d.name)
                if excluder is not None and excluder.excluded(b"/".join((*parts, name))):
                    continue
                try:
                    st = d.stat(follow_symlinks=False)
                except OSError:
                    continue  # vanished since the listing
                attrs = self._shown(st, name, fd)
                if attrs is not None:
                    out.append((self.names.lower(name), attrs))
        return out

    def readlink(self, path: bytes) -> bytes:
        parts = self._plain_parts(path)
        if not parts:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        with self._dir(parts[:-1]) as fd:
            target = self.names.target(os.readlink(parts[-1], dir_fd=fd))
        if target is None:
            raise _missing()
        return target

    def open(self, path: bytes) -> LowerFile:
        """Open the plaintext file behind lower `path` for reading as its lower file."""
        parts = self._plain_parts(path)
        if not parts:
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        fd, st = _open_regular(self.root_fd, parts)
        try:
            rel = b"/".join(parts)
            material = self.keys.material(os.path.join(self.source, rel), rel, st)
            return LowerFile(
                fd,
                st,
                material,
                filenames_encrypted=self.names.encrypted,
                rel=rel,
                reporter=self.reporter,
            )
        except BaseException:
            os.close(fd)
            raise

    def statfs(self) -> dict[str, int]:
        sv = os.statvfs(self.root_fd)
        return {
            "f_bsize": sv.f_bsize,
            "f_frsize": sv.f_frsize,
            "f_blocks": sv.f_blocks,
            "f_bfree": sv.f_bfree,
            "f_bavail": sv.f_bavail,
            "f_files": sv.f_files,
            "f_ffree": sv.f_ffree,
            "f_favail": sv.f_favail,
            "f_namemax": sv.f_namemax,
        }


def _open_regular(root_fd: int, parts: tuple[bytes, ...]) -> tuple[int, os.stat_result]:
    """Open `parts` for reading only if it is a regular file, never opening anything else;
    the descriptor and the file's fstat.

    The kernel's lookup saw a regular file, but the name may since point to a fifo or a device,
    and opening those has effects of its own (a fifo's writer goes on, a tape rewinds), even
    with O_NONBLOCK. So the entry is pinned with O_PATH, which opens nothing, checked, and that
    very inode reopened through /proc/self/fd. Without /proc, an O_NONBLOCK open checked
    before any read is the best left.
    """
    pinned = open_beneath(root_fd, parts, _PIN_FLAGS)
    try:
        st = _regular_stat(pinned)
        if _HAVE_PROC_FD:
            return _open_noatime(partial(os.open, f"/proc/self/fd/{pinned}"), _REOPEN_FLAGS), st
    finally:
        os.close(pinned)
    fd = _open_noatime(partial(open_beneath, root_fd, parts), _FILE_FLAGS)
    try:
        st = _regular_stat(fd)
        os.set_blocking(fd, True)  # O_NONBLOCK only kept a fifo swapped in from blocking
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _regular_stat(fd: int) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    return st


def _open_noatime(open_: Callable[[int], int], flags: int) -> int:
    try:
        return open_(flags)
    except PermissionError:
        # O_NOATIME is refused on files of other owners unless we are root
        return open_(flags & ~_NOATIME)
