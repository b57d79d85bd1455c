"""Userspace restore: decrypt a lower tree while extracting it, no ciphertext copy on disk.

Mirrors what `tar -xp` + `mount -t ecryptfs` + `cp -a` would give: names, contents (the
header's size decides the length), directories, symlinks, hard links, fifos and devices, modes
(setuid included, set after the content), mtimes (directories after their contents) and owners
(when run as root). Damaged entries are warned about and skipped; the rest is restored.
"""

from __future__ import annotations

import enum
import errno
import grp
import hashlib
import os
import pwd
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

from ..display import escape_path
from ..ecryptfs.constants import EXTENT_SIZE
from ..errors import OutputFailed, Reporter
from ..fsio import lstat_at, open_dir, open_subdir
from ..manifest import MANIFEST_NAME, Facts, ManifestError, ManifestReader
from ..model import Kind
from ..progress import Tally
from .decode import CHUNK, DamagedEntry, Decoder, Keys, PlainEntry
from .dest import DestTree, Parts, make_room
from .listing import list_archive
from .members import (
    DataReader,
    LowerEntry,
    LowerTree,
    MemberUnreadable,
    Path,
    open_lower_tree,
)
from .select import Selection

__all__ = ["list_archive", "restore_archive"]

Progress = Callable[[int], None]
# Errors that will hit every following entry too: stop instead of warning once per file.
_FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_WORK_DIR_MODE = 0o700  # directories stay writable for us until their final mode is set
_PARENT_DIR_MODE = 0o755  # parents the archive does not list (tar does the same)
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_MODE = 0o600
_DATA_KINDS = (Kind.FILE, Kind.HARDLINK)
_ZERO_EXTENT = bytes(EXTENT_SIZE)


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
    parts: Parts
    mode: int
    mtime_ns: int
    uid: int
    gid: int


def _write_sparse(fd: int, chunk: memoryview) -> None:
    """Write chunk at the file offset, seeking over all-zero extents so they become holes
    (a sparse VM image does not come back fully allocated)."""
    end = len(chunk)
    at = 0
    while at < end:
        data_end = at
        while data_end < end and chunk[data_end : data_end + EXTENT_SIZE].tobytes() != _ZERO_EXTENT:
            data_end += EXTENT_SIZE
        data_end = min(data_end, end)
        view = chunk[at:data_end]
        while view:
            view = view[os.write(fd, view) :]
        hole_end = data_end
        while hole_end < end and chunk[hole_end : hole_end + EXTENT_SIZE].tobytes() == _ZERO_EXTENT:
            hole_end += EXTENT_SIZE
        hole_end = min(hole_end, end)
        if hole_end > data_end:
            os.lseek(fd, hole_end - data_end, os.SEEK_CUR)
        at = hole_end


class Existing(enum.Enum):
    """What happens to a file that is already in DEST where the archive has one (GNU tar)."""

    REPLACE = "replace"  # the default: remove it, restore the archive's
    KEEP = "keep"  # --keep-old-files: leave it and warn (exit 1)
    SKIP = "skip"  # --skip-old-files: leave it silently


class _Kept(Exception):
    """The member is not restored because DEST already has that name (--keep/--skip-old-files)."""


def _parts(rel: bytes) -> Parts:
    return tuple(rel.split(b"/"))


class _Writer:
    """Creates the plaintext tree under DEST through directory fds (read.dest): nothing outside
    DEST is ever created, written or changed, whatever symlinks the archive or DEST holds."""

    def __init__(
        self,
        dest: str,
        reporter: Reporter,
        existing: Existing = Existing.REPLACE,
        tally: Tally | None = None,
    ) -> None:
        self.root = os.fsencode(dest)
        self.reporter = reporter
        self.tally = tally or Tally()
        self.existing = existing
        self.tree: DestTree | None = None
        self.as_root = os.geteuid() == 0
        self._files: set[bytes] = set()  # regular files restored by this run (hard-link targets)
        self._dirs: list[_DirMeta] = []

    @property
    def started(self) -> bool:
        return self.tree is not None

    def start(self) -> DestTree:
        if self.tree is not None:
            return self.tree
        try:
            os.makedirs(self.root, exist_ok=True)
            self.tree = DestTree.open(self.root)
        except (FileExistsError, NotADirectoryError) as e:
            raise OutputFailed(f"{os.fsdecode(self.root)}: exists and is not a directory") from e
        except OSError as e:
            raise OutputFailed(f"{os.fsdecode(self.root)}: cannot create: {e.strerror}") from e
        return self.tree

    def _owner(self, entry: PlainEntry) -> tuple[int, int]:
        e = entry.lower
        return _uid(e.uname, e.uid), _gid(e.gname, e.gid)

    def _owned(self, entry: PlainEntry, chown: Callable[[int, int], None]) -> None:
        """chown as root; an owner no system call takes (>= 2**32) costs the owner only."""
        if not self.as_root:
            return
        uid, gid = self._owner(entry)
        try:
            chown(uid, gid)
        except OverflowError:
            self.reporter.warn(f"{entry.display}: owner {uid}:{gid} cannot be set; kept as is")

    def _timed(self, entry: PlainEntry, utime: Callable[[tuple[int, int]], None]) -> None:
        try:
            utime((time.time_ns(), entry.lower.mtime_ns))
        except OverflowError:
            self.reporter.warn(f"{entry.display}: modification time cannot be set; kept as is")

    def _finish_fd(self, entry: PlainEntry, fd: int) -> None:
        """Owner, then mode (chown clears setuid), then times."""
        self._owned(entry, lambda uid, gid: os.fchown(fd, uid, gid))
        os.fchmod(fd, entry.lower.mode)
        self._timed(entry, lambda ns: os.utime(fd, ns=ns))

    def _finish_at(self, entry: PlainEntry, parent: int, name: bytes) -> None:
        """The same for a node just made at parent/name that cannot be opened safely (a fifo
        would block, a device might act): by name, never following a symlink."""
        self._owned(
            entry, lambda uid, gid: os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
        )
        if entry.kind is not Kind.SYMLINK:
            os.chmod(name, entry.lower.mode, dir_fd=parent)
        self._timed(entry, lambda ns: os.utime(name, ns=ns, dir_fd=parent, follow_symlinks=False))

    def add(self, entry: PlainEntry) -> None:
        self.start()
        try:
            self._add(entry)
            self.tally.count(entry.kind)
        except _Kept:
            pass
        except DamagedEntry as e:
            self.reporter.warn(f"{entry.display}: {e}; skipped")
        except OSError as e:
            if e.errno in _FATAL_ERRNOS:
                raise OutputFailed(f"{entry.display}: cannot write: {e.strerror}") from e
            self.reporter.warn(f"{entry.display}: cannot restore: {e.strerror}; skipped")
        except (OverflowError, ValueError) as e:  # an owner or time no system call takes
            self.reporter.warn(f"{entry.display}: cannot restore: {e}; skipped")

    def _room(self, parent: int, name: bytes, entry: PlainEntry) -> bool:
        """Apply the existing-file policy; True when a directory stands there and may stay."""
        if self.existing is not Existing.REPLACE and entry.kind is not Kind.DIR:
            st = lstat_at(parent, name)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                if self.existing is Existing.KEEP:
                    self.reporter.warn(f"{entry.display}: already exists; not replaced")
                raise _Kept
        return make_room(parent, name, keep_dir=entry.kind is Kind.DIR)

    def _add(self, entry: PlainEntry) -> None:
        assert self.tree is not None
        parts = _parts(entry.path)
        *up, name = parts
        parent = self.tree.dir_fd(tuple(up), make=_PARENT_DIR_MODE)
        kind = entry.kind
        exists = self._room(parent, name, entry)
        self._files.discard(entry.path)
        if kind is Kind.DIR:
            if not exists:
                os.mkdir(name, _WORK_DIR_MODE, dir_fd=parent)
            uid, gid = self._owner(entry)
            self._dirs.append(_DirMeta(parts, entry.lower.mode, entry.lower.mtime_ns, uid, gid))
        elif kind is Kind.FILE:
            self._write_file(entry, parent, name)
            self._files.add(entry.path)
        elif kind is Kind.SYMLINK:
            os.symlink(entry.target, name, dir_fd=parent)
            self._finish_at(entry, parent, name)
        elif kind is Kind.HARDLINK:
            if entry.target not in self._files:
                raise DamagedEntry(
                    f"hard link to {escape_path(entry.target)}, which was not restored"
                )
            src_up, _, src_name = entry.target.rpartition(b"/")
            src_dir = open_subdir(self.tree.root_fd, src_up)  # a second directory at once
            try:
                os.link(
                    src_name, name, src_dir_fd=src_dir, dst_dir_fd=parent, follow_symlinks=False
                )
            finally:
                os.close(src_dir)
            self._files.add(entry.path)
        elif kind is Kind.FIFO:
            os.mkfifo(name, _NEW_FILE_MODE, dir_fd=parent)
            self._finish_at(entry, parent, name)
        else:
            file_type = stat.S_IFCHR if kind is Kind.CHAR else stat.S_IFBLK
            os.mknod(name, _NEW_FILE_MODE | file_type, entry.lower.rdev, dir_fd=parent)
            self._finish_at(entry, parent, name)

    def _write_file(self, entry: PlainEntry, parent: int, name: bytes) -> None:
        if entry.content is None:
            raise DamagedEntry("file has no content reader")
        fd = os.open(name, _NEW_FILE_FLAGS, _NEW_FILE_MODE, dir_fd=parent)
        try:
            for chunk in entry.content.chunks():
                self.tally.bytes_out += len(chunk)
                _write_sparse(fd, chunk)
            os.ftruncate(fd, entry.content.plain_size)  # the file may end in a hole
            self._finish_fd(entry, fd)
        except BaseException:
            os.close(fd)
            os.unlink(name, dir_fd=parent)
            raise
        os.close(fd)

    def finish(self) -> None:
        """Directory modes and times, deepest first so setting them disturbs nothing; each
        directory is reopened component by component, so a symlink that replaced it (or one
        of its parents) since it was made is not followed."""
        tree = self.tree
        if tree is None:
            return
        for meta in reversed(self._dirs):
            *up, name = meta.parts
            try:
                parent = tree.dir_fd(tuple(up))
                fd = open_dir(name, parent)
            except OSError:
                continue  # a later member replaced the directory (or a parent) by a non-directory
            try:
                if self.as_root:
                    os.fchown(fd, meta.uid, meta.gid)
                os.fchmod(fd, meta.mode)
                os.utime(fd, ns=(time.time_ns(), meta.mtime_ns))
            except (OSError, OverflowError) as e:
                where = escape_path(b"/".join(meta.parts))
                self.reporter.warn(f"{where}: cannot set attributes: {getattr(e, 'strerror', e)}")
            finally:
                os.close(fd)
        self._dirs.clear()

    def remove(self, plain: bytes) -> None:
        """Unlink a file this run restored (never a directory, never outside DEST)."""
        assert self.tree is not None
        *up, name = _parts(plain)
        try:
            parent = self.tree.dir_fd(tuple(up))
            if plain in self._files:
                os.unlink(name, dir_fd=parent)
                self._files.discard(plain)
        except OSError as e:
            self.reporter.warn(f"{escape_path(plain)}: cannot remove: {e.strerror}")

    def close(self) -> None:
        if self.tree is not None:
            self.finish()
            self.tree.close()


# Below this a member's bytes are hashed where they are read: handing a small read to the
# hashing thread cost more than the hash (the thread waits for the GIL to report back, up to
# the 5 ms switch interval; 14,000 files of a home-directory tree restored 2.4x slower).
HASH_IN_THREAD_MIN = 256 << 10


class _HashingData:
    """A member's lower bytes on their way to the decoder, hashed; `drain` takes in what the
    decoder left (bytes past the header's size) so the digest covers the whole member.

    SHA-256 costs about as much CPU as the AES decryption, so it runs on a helper thread
    (hashlib lets go of the GIL) while the decoder decrypts and the writer writes the same
    bytes. The decoder reads into two buffers in turn, so a read waits only for the hash of
    the chunk that last used its buffer; updates keep their order (one hashing thread, and
    a small read hashed here only once nothing is pending)."""

    def __init__(self, inner: DataReader, buf: memoryview, hasher: ThreadPoolExecutor) -> None:
        self._inner = inner
        self._buf = buf
        self._hasher = hasher
        self._pending: deque[tuple[object, Future[None]]] = deque()
        self.sha = hashlib.sha256()

    def _wait(self, buffer: object | None = None) -> None:
        """Wait for the hashes of chunks in `buffer` (and those queued before them); all of
        them when None."""
        if buffer is not None and not any(b is buffer for b, _ in self._pending):
            return
        while self._pending:
            held, future = self._pending.popleft()
            future.result()
            if held is buffer:
                return

    def readinto(self, view: memoryview) -> int:
        self._wait(view.obj)
        n = self._inner.readinto(view)
        if n >= HASH_IN_THREAD_MIN:
            self._pending.append((view.obj, self._hasher.submit(self.sha.update, view[:n])))
        elif n:
            self._wait()
            self.sha.update(view[:n])
        return n

    def drain(self) -> bytes | None:
        """The member's SHA-256, or None when the rest of it cannot be read."""
        self._wait()
        try:
            while n := self._inner.readinto(self._buf):
                self.sha.update(self._buf[:n])
        except MemberUnreadable:
            return None
        return self.sha.digest()


class _Check:
    """What restore compares with the manifest at the end: the SHA-256 of every lower file it
    read, by lower path, with the plaintext path it was restored to."""

    def __init__(self, hasher: ThreadPoolExecutor) -> None:
        self.hasher = hasher
        self.digests: dict[Path, bytes | None] = {}
        self.restored: dict[Path, bytes] = {}  # lower path → plaintext path, files only
        self._buf = memoryview(bytearray(CHUNK))

    def hashed(self, entries: Iterator[LowerEntry]) -> Iterator[LowerEntry]:
        for entry in entries:
            if entry.kind is not Kind.FILE or entry.data is None:
                yield entry
                continue
            data = _HashingData(entry.data, self._buf, self.hasher)
            entry.data = data
            yield entry
            self.digests[entry.path] = data.drain()  # the consumer is done with the member

    def compare(
        self, tree: LowerTree, keys: Keys, reporter: Reporter, writer: _Writer
    ) -> Facts | None:
        """Compare what was read with the manifest; its facts (volume k of n), if any."""
        if tree.manifest is None:
            if tree.side_files:
                # archives made before manifests existed have none: said, not an error
                reporter.note(
                    f"{escape_path(MANIFEST_NAME)} missing: restored files were not checked"
                )
            return None
        # Read as a stream twice (the HMAC first, then each line as it is parsed): memory
        # does not grow with the manifest, whatever its length.
        reader = ManifestReader(keys.file_key)
        try:
            for chunk in tree.manifest.chunks():
                for _ in reader.feed(chunk):
                    pass
            facts = reader.close()
        except ManifestError as e:
            reporter.warn(f"{escape_path(MANIFEST_NAME)}: {e}; restored files were not checked")
            return None
        if not reader.mac_ok():
            reporter.warn(
                f"{escape_path(MANIFEST_NAME)}: HMAC does not verify: the manifest was altered "
                "(or written with another passphrase)"
            )
        prefix = tree.lower_root + b"/" if tree.lower_root else b""
        listed: set[Path] = set()  # restored files only: bounded by the archive, not the manifest
        again = ManifestReader()
        for chunk in tree.manifest.chunks():
            for line in again.feed(chunk):
                # a directory walk may meet a hard-linked file under any of its names first
                if line.kind not in _DATA_KINDS or not line.path.startswith(prefix):
                    continue
                path = tuple(line.path[len(prefix) :].split(b"/"))
                plain = self.restored.get(path)
                if plain is None:
                    continue
                listed.add(path)
                if line.absent:
                    reporter.warn(
                        f"{escape_path(plain)}: vanished while the archive was written; "
                        "its zero-filled placeholder is not restored"
                    )
                    writer.remove(plain)
                elif self.digests.get(path) != line.digest:
                    reporter.warn(
                        f"{escape_path(plain)}: restored content differs from the manifest "
                        "(SHA-256 mismatch): the archive is damaged"
                    )
        for path, plain in self.restored.items():
            if path not in listed:
                reporter.warn(f"{escape_path(plain)}: not in the manifest")
        return facts


def _volumes_missing(facts: list[Facts], reporter: Reporter, *, several: bool) -> None:
    """Name the volumes of a set that were not given: an error when several were (the set
    was meant to be whole), a note for one volume restored on its own."""
    if not facts:
        return
    count = max(f.volumes for f in facts)
    if count <= 1:
        return
    missing = sorted(set(range(1, count + 1)) - {f.volume for f in facts})
    if not missing:
        return
    names = ", ".join(str(n) for n in missing)
    text = f"volume{'s' if len(missing) > 1 else ''} {names} of {count} not restored"
    if several:
        reporter.warn(f"{text}: the set is incomplete")
    else:
        reporter.note(
            f"{text} by this run: restore {'them' if len(missing) > 1 else 'it'} "
            "into the same DEST too"
        )


def restore_archive(
    source: str | Sequence[str],
    dest: str,
    passphrase: bytes,
    reporter: Reporter,
    *,
    progress: Progress | None = None,
    tally: Tally | None = None,
    existing: Existing = Existing.REPLACE,
    selection: Selection | None = None,
    check_selection: bool = True,
) -> None:
    """Decrypt SOURCE into DEST.

    SOURCE is a tar or ISO 9660 image (file or '-' for stdin), or an already-extracted archive
    or lower directory; or several, e.g. the volumes of a multi-volume set (any order), which
    are restored into DEST in one run. DEST is created when the input is known to be an
    archive; it may already exist (entries replace what is in their way, as tar does, or as
    `existing` says). `selection` restores only some plaintext paths. `progress` is called
    with counts of lower bytes consumed; `tally` counts what was restored.

    Every lower file read is hashed and compared at the end with the archive's manifest (and
    the manifest's HMAC checked): a file whose bytes differ is named (exit status 1), a file
    the manifest marks absent is removed again. Volumes of a set that were not given are named.

    Raises WrongPassphrase and NoArchiveFound before anything is written, ArchiveUnreadable
    when SOURCE cannot be read, OutputFailed when DEST cannot be written, NotFoundInArchive
    (after the run) for a selected PATH that matched nothing. Damaged entries are
    `reporter.warn`ed and skipped (exit status 1). `check_selection` False leaves the
    NotFoundInArchive check to the caller (a chain: a PATH need only be in one level).
    """
    sources = [source] if isinstance(source, str) else list(source)
    keys = Keys(passphrase)
    writer = _Writer(dest, reporter, existing, tally)
    chosen = selection or Selection()
    volumes: list[Facts] = []
    hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecarchive-sha256")
    try:
        for one in sources:
            facts = _restore_one(one, keys, writer, chosen, reporter, progress, hasher)
            if facts is not None:
                volumes.append(facts)
    finally:
        hasher.shutdown()
        writer.close()
    _volumes_missing(volumes, reporter, several=len(sources) > 1)
    if check_selection:
        chosen.check_found()


def _restore_one(
    source: str,
    keys: Keys,
    writer: _Writer,
    selection: Selection,
    reporter: Reporter,
    progress: Progress | None,
    hasher: ThreadPoolExecutor,
) -> Facts | None:
    check = _Check(hasher)
    with open_lower_tree(source, reporter, progress) as tree:
        entries = Decoder(keys, reporter).entries(
            check.hashed(tree.entries), recognised=lambda: tree.side_files, source=source
        )
        for entry in entries:
            if not selection.wants(entry.path):
                continue
            writer.add(entry)
            if entry.kind is Kind.FILE and entry.lower.path not in check.restored:
                check.restored[entry.lower.path] = entry.path
        writer.start()  # an archive with nothing in it still gives DEST
        return check.compare(tree, keys, reporter, writer)
