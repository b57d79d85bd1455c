"""Userspace restore: decrypt a lower tree while extracting it, no ciphertext copy on disk.

Mirrors what `tar -xp` + `mount -t ecryptfs` + `cp -a` would give: names, contents (the
header's size decides the length), directories, symlinks, hard links, fifos and devices, modes
(setuid included, set after the content), mtimes (directories after their contents) and owners
(when run as root). Damaged entries are warned about and skipped; the rest is restored.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from .archive_reader import open_lower_tree
from .decoder import DamagedEntry, Decoder, Keys, PlainEntry
from .errors import OutputFailed, Reporter
from .listing import list_archive
from .model import Kind
from .progress import Tally

__all__ = ["list_archive", "restore_archive"]

Progress = Callable[[int], None]
# Errors that will hit every following entry too: stop instead of warning once per file.
_FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_WORK_DIR_MODE = 0o700  # directories stay writable for us until their final mode is set
_PARENT_DIR_MODE = 0o755  # parents the archive does not list (tar does the same)
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_MODE = 0o600


@lru_cache(maxsize=256)
def _uid(uname: str, uid: int) -> int:
    """Owner by name when this system knows it, else by number (GNU tar's default)."""
    if uname:
        try:
            return pwd.getpwnam(uname).pw_uid
        except KeyError:
            pass
    return uid


@lru_cache(maxsize=256)
def _gid(gname: str, gid: int) -> int:
    if gname:
        try:
            return grp.getgrnam(gname).gr_gid
        except KeyError:
            pass
    return gid


@dataclass(frozen=True, slots=True)
class _DirMeta:
    path: bytes
    mode: int
    mtime_ns: int
    uid: int
    gid: int


class _Writer:
    """Creates the plaintext tree under DEST. Never follows a symlink it did not check."""

    def __init__(self, dest: str, reporter: Reporter, tally: Tally) -> None:
        self.root = os.fsencode(dest)
        self.reporter = reporter
        self.tally = tally
        self.started = False
        self.as_root = os.geteuid() == 0
        self._checked_dirs: set[bytes] = {b""}  # real directories made or verified by this run
        self._files: set[bytes] = set()  # regular files restored by this run (hard-link targets)
        self._dirs: list[_DirMeta] = []

    def _abs(self, rel: bytes) -> bytes:
        return os.path.join(self.root, rel) if rel else self.root

    def start(self) -> None:
        if self.started:
            return
        try:
            os.makedirs(self.root, exist_ok=True)
        except FileExistsError as e:
            raise OutputFailed(f"{os.fsdecode(self.root)}: exists and is not a directory") from e
        except OSError as e:
            raise OutputFailed(f"{os.fsdecode(self.root)}: cannot create: {e.strerror}") from e
        if not os.path.isdir(self.root):
            raise OutputFailed(f"{os.fsdecode(self.root)}: exists and is not a directory")
        self.started = True

    def _make_room(self, rel: bytes, *, keep_dir: bool) -> bool:
        """Remove what stands at rel, like tar does; True when a directory may stay."""
        path = self._abs(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            os.rmdir(path)
        else:
            os.unlink(path)
        self._files.discard(rel)
        return False

    def _parent(self, rel: bytes) -> None:
        """Make sure every parent of rel is a real directory (not a symlink) made by us."""
        missing: list[bytes] = []
        parent = os.path.dirname(rel)
        while parent not in self._checked_dirs:
            missing.append(parent)
            parent = os.path.dirname(parent)
        for parent in reversed(missing):
            if not self._make_room(parent, keep_dir=True):
                os.mkdir(self._abs(parent), _PARENT_DIR_MODE)
            self._checked_dirs.add(parent)

    def _owner(self, entry: PlainEntry) -> tuple[int, int]:
        e = entry.lower
        return _uid(e.uname, e.uid), _gid(e.gname, e.gid)

    def _finish_inode(self, entry: PlainEntry, fd: int | None = None) -> None:
        """Owner, then mode (chown clears setuid), then times."""
        target: int | bytes = fd if fd is not None else self._abs(entry.path)
        mtime = entry.lower.mtime_ns
        if self.as_root:
            uid, gid = self._owner(entry)
            os.chown(target, uid, gid, follow_symlinks=entry.kind is not Kind.SYMLINK)
        if entry.kind is not Kind.SYMLINK:
            os.chmod(target, entry.lower.mode)
            os.utime(target, ns=(time.time_ns(), mtime))
        else:
            os.utime(target, ns=(time.time_ns(), mtime), follow_symlinks=False)

    def add(self, entry: PlainEntry) -> None:
        self.start()
        try:
            self._add(entry)
            self.tally.count(entry.kind)
        except DamagedEntry as e:
            self.reporter.warn(f"{entry.display}: {e}; skipped")
        except OSError as e:
            if e.errno in _FATAL_ERRNOS:
                raise OutputFailed(f"{entry.display}: cannot write: {e.strerror}") from e
            self.reporter.warn(f"{entry.display}: cannot restore: {e.strerror}; skipped")

    def _add(self, entry: PlainEntry) -> None:
        rel = entry.path
        self._parent(rel)
        self._checked_dirs.discard(rel)
        kind = entry.kind
        exists = self._make_room(rel, keep_dir=kind is Kind.DIR)
        path = self._abs(rel)
        if kind is Kind.DIR:
            if not exists:
                os.mkdir(path, _WORK_DIR_MODE)
            self._checked_dirs.add(rel)
            uid, gid = self._owner(entry)
            self._dirs.append(_DirMeta(rel, entry.lower.mode, entry.lower.mtime_ns, uid, gid))
        elif kind is Kind.FILE:
            self._write_file(entry, path)
            self._files.add(rel)
        elif kind is Kind.SYMLINK:
            os.symlink(entry.target, path)
            self._finish_inode(entry)
        elif kind is Kind.HARDLINK:
            if entry.target not in self._files:
                raise DamagedEntry(
                    f"hard link to {os.fsdecode(entry.target)}, which was not restored"
                )
            os.link(self._abs(entry.target), path, follow_symlinks=False)
            self._files.add(rel)
        elif kind is Kind.FIFO:
            os.mkfifo(path, _NEW_FILE_MODE)
            self._finish_inode(entry)
        else:
            file_type = stat.S_IFCHR if kind is Kind.CHAR else stat.S_IFBLK
            os.mknod(path, _NEW_FILE_MODE | file_type, entry.lower.rdev)
            self._finish_inode(entry)

    def _write_file(self, entry: PlainEntry, path: bytes) -> None:
        if entry.content is None:
            raise DamagedEntry("file has no content reader")
        fd = os.open(path, _NEW_FILE_FLAGS, _NEW_FILE_MODE)
        try:
            for chunk in entry.content.chunks():
                view = chunk
                self.tally.bytes_out += len(view)
                while view:
                    view = view[os.write(fd, view) :]
            self._finish_inode(entry, fd)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)

    def unwrap(self, name: bytes) -> None:
        """Move what was restored under NAME/ one level up: the stream's lower directory came
        before its RESTORE.txt, so NAME/ turned out to be the lower root (LowerTree)."""
        if name not in self._checked_dirs:
            return
        holder = b".ecarchive-unwrap-" + os.urandom(6).hex().encode()
        os.rename(self._abs(name), self._abs(holder))
        kept = False
        for child in sorted(os.listdir(self._abs(holder))):
            if os.path.lexists(self._abs(child)):
                self.reporter.warn(
                    f"{os.fsdecode(child)}: already in the destination; left in "
                    f"{os.fsdecode(name)}/"
                )
                kept = True
                continue
            os.rename(os.path.join(self._abs(holder), child), self._abs(child))
        prefix = name + b"/"
        if kept:
            os.rename(self._abs(holder), self._abs(name))
        else:
            os.rmdir(self._abs(holder))
        moved = []
        for meta in self._dirs:
            if meta.path.startswith(prefix) and not os.path.lexists(self._abs(meta.path)):
                rel = meta.path[len(prefix) :]
                meta = _DirMeta(rel, meta.mode, meta.mtime_ns, meta.uid, meta.gid)
            elif meta.path == name and not kept:
                continue
            moved.append(meta)
        self._dirs = moved

    def finish(self) -> None:
        """Directory modes and times, deepest first so setting them disturbs nothing."""
        for meta in reversed(self._dirs):
            path = self._abs(meta.path)
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    continue  # a later member replaced the directory
                if self.as_root:
                    os.chown(path, meta.uid, meta.gid)
                os.chmod(path, meta.mode)
                os.utime(path, ns=(time.time_ns(), meta.mtime_ns))
            except OSError as e:
                self.reporter.warn(f"{os.fsdecode(meta.path)}: cannot set attributes: {e.strerror}")
        self._dirs.clear()


def restore_archive(
    source: str,
    dest: str,
    passphrase: bytes,
    reporter: Reporter,
    *,
    progress: Progress | None = None,
    tally: Tally | None = None,
) -> None:
    """Decrypt SOURCE into DEST.

    SOURCE is a tar (or other libarchive-readable archive, ISO 9660 included), '-' for stdin,
    or an already-extracted archive or lower directory. DEST is created when the first entry is
    known to decrypt; it may already exist (entries replace what is in their way, as tar does).
    `progress` is called with counts of lower bytes consumed; `tally` counts what was restored.

    Raises WrongPassphrase before anything is written, ArchiveUnreadable when SOURCE cannot be
    read, OutputFailed when DEST cannot be written. Damaged entries are `reporter.warn`ed and
    skipped (exit status 1).
    """
    keys = Keys(passphrase)
    writer = _Writer(dest, reporter, tally or Tally())
    try:
        with open_lower_tree(source, reporter, progress) as lower:
            for entry in Decoder(keys, reporter).entries(lower.entries):
                writer.add(entry)
            if lower.late_wrapper is not None:
                writer.unwrap(lower.late_wrapper)
        writer.start()  # an archive with nothing in it still gives DEST
    finally:
        if writer.started:
            writer.finish()
