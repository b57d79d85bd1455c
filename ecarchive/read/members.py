"""Readers of lower trees: a tar (file or stdin, via libarchive), an ISO 9660 image (file or
stdin, read/iso: recognised by its volume descriptor at sector 16) or a directory.

Every reader yields `LowerEntry` values with paths relative to the *lower root*, in archive order
(parents before children), and never holds more than one member's data at a time.

Where the lower root is: an archive made by ecarchive holds `RESTORE.txt` (plain text, first)
and one directory `NAME/` with the lower tree; a tar of a kernel lower directory holds the lower
tree at its top level. The rule: if the top level holds a plain (non-eCryptfs) `RESTORE.txt`
and exactly one directory beside it (and maybe plain `MANIFEST*` files), that directory is the
lower root; otherwise the top level is. A plain top-level `RESTORE.txt`/`MANIFEST*` is never
restored. Archives are read in one pass (stdin cannot be read twice, and a second pass would
double the cost for files): a plain `RESTORE.txt`/`MANIFEST*` as the first top-level member, as
ecarchive writes tars, means the wrapped layout at once; an ISO image lists its directories
before its files, so the rule is applied to its root directory before its first member.
"""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

import libarchive
from libarchive import ffi
from libarchive.exception import ArchiveError
from libarchive.ffi import NO_CLOSE_CB, NO_OPEN_CB, READ_CALLBACK

from ..display import escape_path
from ..ecryptfs.header import MARKER_PEEK_BYTES, has_marker
from ..ecryptfs.names import is_encrypted_name
from ..errors import ArchiveUnreadable, NoArchiveFound, Reporter
from ..fsio import lstat_at, open_regular
from ..manifest import MANIFEST_NAME
from ..model import KIND_OF_FILE_TYPE, Kind
from .dirtree import DirTree, FileData, is_plain_file
from .iso import ISO_SNIFF_BYTES, ImageSource, IsoImage, IsoUnreadable, is_iso_head

# re-exported: the readers above members.py import these names from here
from .lower import DataReader as DataReader
from .lower import LowerEntry as LowerEntry
from .lower import MemberUnreadable as MemberUnreadable
from .lower import Path as Path
from .lower import Progress as Progress
from .lower import RawMember
from .spool import Spool

STDIN = "-"
RESTORE_NAME = b"RESTORE.txt"
MANIFEST_PREFIX = b"MANIFEST"
# libarchive reads in blocks of this size; its default (st_blksize, 4 KiB) costs syscalls
READ_BLOCK = 1 << 20
_UNRECOGNISED = "Unrecognized archive format"
MAX_MANIFEST_BYTES = 1 << 30  # ~8 million entries; anything larger is not ours
_NS = 1_000_000_000

_sparse_count = ffi.libarchive.archive_entry_sparse_count
_sparse_count.argtypes = [ctypes.c_void_p]
_sparse_count.restype = ctypes.c_int

class UnsafePath(ValueError):
    """A member path that could land outside the destination."""


def split_member_path(raw: bytes) -> Path:
    """Archive member path → components: './' and empty parts dropped; '..' and '/x' refused."""
    if raw.startswith(b"/"):
        raise UnsafePath("absolute path")
    parts = tuple(p for p in raw.split(b"/") if p and p != b".")
    if b".." in parts:
        raise UnsafePath("path contains '..'")
    return parts


def is_side_file_name(name: bytes) -> bool:
    """Names ecarchive writes beside the lower directory."""
    return name == RESTORE_NAME or name.startswith(MANIFEST_PREFIX)


class _Peeked:
    """A reader whose first bytes were already taken to look for the eCryptfs marker."""

    def __init__(self, head: bytes, rest: DataReader) -> None:
        self._head = head
        self._rest = rest

    def readinto(self, view: memoryview) -> int:
        n = 0
        if self._head:
            n = min(len(self._head), len(view))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            if n == len(view):
                return n
        return n + self._rest.readinto(view[n:])


def _peek(reader: DataReader) -> tuple[bytes, DataReader]:
    buf = bytearray(MARKER_PEEK_BYTES)
    n = reader.readinto(memoryview(buf))
    head = bytes(buf[:n])
    return head, _Peeked(head, reader)


# --- libarchive (tar, pax, ISO 9660, ...) -----------------------------------------------------


class _ArchiveData:
    """Member data straight from libarchive, counted for the progress callback."""

    def __init__(self, archive_p: Any, progress: Progress | None) -> None:
        self._a = archive_p
        self._progress = progress
        self.consumed = 0

    def readinto(self, view: memoryview) -> int:
        got = 0
        want = len(view)
        # libarchive copies into a C pointer; a ctypes view over the same memory avoids a copy
        target = (ctypes.c_char * want).from_buffer(view) if want else None
        base = ctypes.addressof(target) if target is not None else 0
        while got < want:
            try:
                n = ffi.read_data(self._a, base + got, want - got)
            except ArchiveError as e:
                raise MemberUnreadable(f"archive data unreadable: {e.msg}") from e
            if n == 0:
                break
            got += n
        self.consumed += got
        if self._progress and got:
            self._progress(got)
        return got


def _text(value_b: bytes | None, value_w: str | None) -> bytes:
    if value_b is not None:
        return bytes(value_b)
    return os.fsencode(value_w) if value_w else b""


def _kind_of(filetype: int, is_hardlink: bool) -> Kind | None:
    if is_hardlink:
        return Kind.HARDLINK
    return KIND_OF_FILE_TYPE.get(stat.S_IFMT(filetype))


def _archive_members(
    archive: Any, reporter: Reporter | None, progress: Progress | None
) -> Iterator[RawMember]:
    """Every member with a safe path; the LowerEntry's path is the full member path."""
    a = archive._pointer
    entry = libarchive.entry.ArchiveEntry(a)
    e = entry._entry_p
    while True:
        try:
            if ffi.read_next_header2(a, e) == ffi.ARCHIVE_EOF:
                return
        except ArchiveError as err:
            raise ArchiveUnreadable(f"cannot read the archive: {err.msg}") from err
        raw = _text(ffi.entry_pathname(e), ffi.entry_pathname_w(e))
        hard = _text(ffi.entry_hardlink(e), ffi.entry_hardlink_w(e))
        try:
            path = split_member_path(raw)
            link_path = split_member_path(hard) if hard else ()
        except UnsafePath as why:
            if reporter:
                reporter.warn(f"{escape_path(raw)}: {why}; skipped")
            continue
        if not path:
            continue  # the archive's own "./"
        kind = _kind_of(ffi.entry_filetype(e), bool(hard))
        if kind is None:
            if reporter:
                reporter.warn(f"{escape_path(raw)}: unsupported member type; skipped")
            continue
        size = ffi.entry_size(e) if ffi.entry_size_is_set(e) else 0
        if kind is Kind.FILE and _sparse_count(e) > 0:
            # ecarchive never writes sparse members: the holes would be read as zeros and
            # "decrypted" into a fully allocated file of garbage of whatever size the map claims
            if reporter:
                reporter.warn(
                    f"{escape_path(raw)}: sparse member, its data is not in the archive; skipped"
                )
            if progress:
                progress(size)
            continue
        data = _ArchiveData(a, progress) if kind is Kind.FILE else None
        lower = LowerEntry(
            kind=kind,
            path=path,
            mode=ffi.entry_perm(e) & 0o7777,
            uid=ffi.entry_uid(e),
            gid=ffi.entry_gid(e),
            uname=_text(ffi.entry_uname(e), None).decode(errors="replace"),
            gname=_text(ffi.entry_gname(e), None).decode(errors="replace"),
            mtime_ns=ffi.entry_mtime(e) * _NS + ffi.entry_mtime_nsec(e),
            size=size if kind is Kind.FILE else 0,
            symlink=(
                _text(ffi.entry_symlink(e), ffi.entry_symlink_w(e)) if kind is Kind.SYMLINK else b""
            ),
            link_path=link_path,
            rdev=os.makedev(ffi.entry_rdevmajor(e), ffi.entry_rdevminor(e)),
            data=data,
        )
        yield RawMember(path, lower)
        # libarchive skips unread data itself; count it so a progress bar reaches its total
        if data is not None and progress and size > data.consumed:
            progress(size - data.consumed)


@contextmanager
def open_archive(source: str, fed: tuple[int, bytes] | None = None) -> Iterator[Any]:
    """libarchive reading only the formats ecarchive writes: tar (any compression) and ISO
    9660 (only a compressed one reaches it: plain images are read by read/iso). With every
    format enabled a text file or a blank disc is "read" as an mtree or empty archive; here it
    fails, so a foreign input is found at once. `fed`: an input that cannot be opened again (a
    pipe) as its descriptor and the bytes already read from it, given to libarchive first."""
    a = ffi.read_new()
    try:
        ffi.read_support_filter_all(a)
        ffi.read_support_format_tar(a)
        ffi.read_support_format_iso9660(a)
        if fed is not None:
            feed = _HeadThenFd(fed[1], fed[0])
            ffi.read_open(a, None, NO_OPEN_CB, feed.callback, NO_CLOSE_CB)
        elif source == STDIN:
            ffi.read_open_fd(a, 0, READ_BLOCK)
        else:
            ffi.read_open_filename_w(a, source, READ_BLOCK)
        yield libarchive.read.ArchiveRead(a)
    except ArchiveError as err:
        # "Unrecognized archive format" says nothing more; other reasons (a cut image) may help
        detail = "" if _UNRECOGNISED in str(err.msg) else f" ({err.msg})"
        raise NoArchiveFound(f"{source}: {_NOT_FOUND}{detail}") from err
    finally:
        ffi.read_free(a)


class _HeadThenFd:
    """libarchive's read callback: the bytes taken to recognise the input, then the fd."""

    def __init__(self, head: bytes, fd: int) -> None:
        self._head: bytes | None = head
        self._fd = fd
        self._buf = ctypes.create_string_buffer(READ_BLOCK)
        self._view = memoryview(self._buf).cast("B")
        self._address = ctypes.addressof(self._buf)
        self.callback = READ_CALLBACK(self._read)

    def _read(self, archive_p: Any, context: Any, ptrptr: Any) -> int:
        if self._head:
            data, self._head = self._head, None
            n = len(data)
            self._view[:n] = data
        else:
            try:
                n = os.readv(self._fd, [self._view])
            except OSError:
                return -1
        ctypes.cast(ptrptr, ctypes.POINTER(ctypes.c_void_p))[0] = self._address
        return n


def spool_bounded(data: DataReader, limit: int) -> Spool | None:
    """A small member kept (compressed) until the end, or None when it holds more than
    `limit` bytes."""
    spool = Spool()
    buf = memoryview(bytearray(1 << 16))
    while n := data.readinto(buf):
        spool.write(buf[:n])
        if spool.size > limit:
            return None
    spool.close()
    return spool


class LowerTree:
    """The entries of a lower tree, plus what the archive showed beside them.

    `side_files` is set once a plain RESTORE.txt or MANIFEST* was met (an ecarchive archive
    even if its lower tree is empty); `manifest` holds MANIFEST.ecarchive's bytes (compressed) once read
    (for a stream, usually only when `entries` is exhausted); `lower_root` is the archive path
    of the lower root (b"" when it is the top level), to match manifest paths.
    `side_file`, when set before `entries` is read, is given every plain top-level side file
    but the manifest (RESTORE.txt, MANIFEST.deleted), its data unread, as they are met.
    """

    def __init__(self, entries: Iterator[LowerEntry], lower_root: bytes = b"") -> None:
        self.entries = entries
        self.side_files = False
        self.manifest: Spool | None = None
        self.lower_root = lower_root
        self.side_file: Callable[[LowerEntry], None] | None = None


# Which top-level directory of an ISO image is the lower root, decided before its first member
# is used (an image lists its directories before its files, so RESTORE.txt comes late).
IsoWrapper = Callable[[Path], "bytes | None"]


class _StreamLayout(LowerTree):
    """One-pass layout decision: a plain RESTORE.txt/MANIFEST* first (as ecarchive writes tars)
    means the wrapped layout; an ISO image asks `iso_wrapper`; otherwise the top level is the
    lower root."""

    def __init__(
        self,
        members: Iterator[RawMember],
        reporter: Reporter,
        iso_wrapper: IsoWrapper | None = None,
    ) -> None:
        super().__init__(self._walk(members, reporter, iso_wrapper))

    def _side_file(self, m: RawMember, reporter: Reporter) -> bool:
        """True when m is a plain top-level RESTORE.txt/MANIFEST* (then consumed here)."""
        top = m.path[0]
        if len(m.path) != 1 or m.entry.kind is not Kind.FILE or not is_side_file_name(top):
            return False
        assert m.entry.data is not None
        head, m.entry.data = _peek(m.entry.data)
        if has_marker(head):
            return False
        self.side_files = True
        if top == MANIFEST_NAME:
            try:
                self.manifest = spool_bounded(m.entry.data, MAX_MANIFEST_BYTES)
            except MemberUnreadable as e:
                reporter.warn(f"{escape_path(top)}: {e}")
            if self.manifest is None:
                reporter.warn(f"{escape_path(top)}: too large to be a manifest; not used")
        elif self.side_file is not None:
            self.side_file(m.entry)
        return True

    def _walk(
        self, members: Iterator[RawMember], reporter: Reporter, iso_wrapper: IsoWrapper | None
    ) -> Iterator[LowerEntry]:
        wrapped: bool | None = None
        wrapper: bytes | None = None
        for m in members:
            if self._side_file(m, reporter):
                if wrapped is None:
                    wrapped = True
                continue
            top = m.path[0]
            single = len(m.path) == 1
            if wrapped is None:
                wrapper = iso_wrapper(m.path) if iso_wrapper is not None else None
                wrapped = wrapper is not None
                if wrapped:
                    self.lower_root = wrapper or b""
            if not wrapped:
                yield m.entry
                continue
            if wrapper is None and (m.entry.kind is Kind.DIR or not single):
                wrapper = top  # the first directory, listed or only implied by a member path
                self.lower_root = wrapper
                if single:
                    continue
            if top != wrapper or single:
                if not (single and top == wrapper and m.entry.kind is Kind.DIR):
                    where = escape_path(b"/".join(m.path))
                    reporter.warn(f"{where}: outside the lower directory; ignored")
                continue
            if m.entry.kind is Kind.HARDLINK and m.entry.link_path[:1] != (wrapper,):
                reporter.warn(
                    f"{escape_path(b'/'.join(m.path))}: hard link leaves the lower directory; "
                    "skipped"
                )
                continue
            yield _rebased(m.entry, 1)


def _rebased(entry: LowerEntry, depth: int) -> LowerEntry:
    entry.path = entry.path[depth:]
    if entry.link_path:
        entry.link_path = entry.link_path[depth:]
    return entry


# --- a directory on disk --------------------------------------------------------------------


def _lower_root_name(tree: DirTree) -> bytes | None:
    """The directory of an extracted archive that is its lower root (see the module
    docstring), or None when the top level is."""
    side = False
    dirs: list[bytes] = []
    others = 0
    for name in tree.top_names():
        st = lstat_at(tree.top_fd, name)
        if st is None:
            continue
        if stat.S_ISDIR(st.st_mode):
            dirs.append(name)
        elif (
            stat.S_ISREG(st.st_mode)
            and is_side_file_name(name)
            and is_plain_file(tree.top_fd, name)
        ):
            side = side or name == RESTORE_NAME
        else:
            others += 1
    return dirs[0] if side and len(dirs) == 1 and not others else None


def _dir_entries(
    lower: LowerTree, tree: DirTree, reporter: Reporter, progress: Progress | None
) -> Iterator[LowerEntry]:
    """A directory's lower entries, after its plain top-level side files went to
    `lower.side_file` (when set), as an archive shows them first."""
    if lower.side_file is not None:
        for entry in tree.side_files(_side_not_manifest, reporter, progress):
            lower.side_file(entry)
            assert isinstance(entry.data, FileData)
            entry.data.close()
    yield from tree.walk(is_side_file_name, reporter, progress)


def _side_not_manifest(name: bytes) -> bool:
    return is_side_file_name(name) and name != MANIFEST_NAME


def _manifest_file(top_fd: int, reporter: Reporter) -> Spool | None:
    try:
        fd, _ = open_regular(MANIFEST_NAME, top_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        reporter.warn(f"{escape_path(MANIFEST_NAME)}: cannot read: {e.strerror}")
        return None
    with os.fdopen(fd, "rb") as f:
        spool = spool_bounded(f, MAX_MANIFEST_BYTES)
    if spool is None:
        reporter.warn(f"{escape_path(MANIFEST_NAME)}: too large to be a manifest; not used")
    return spool


# --- entry point ------------------------------------------------------------------------------


def _iso_wrapper_of(image: IsoImage) -> IsoWrapper:
    """The lower root of an image by the rule of the module docstring, from its root
    directory (read before its first member is yielded); side files are peeked at where the
    input can seek, and otherwise taken as plain if the one directory has a clear name (a
    kernel lower tree's names are encrypted)."""

    def decide(first: Path) -> bytes | None:
        dirs = []
        side = False
        for name, kind, offset in image.root_listing:
            if kind is Kind.DIR:
                dirs.append(name)
                continue
            if kind is not Kind.FILE or not is_side_file_name(name):
                return None
            head = image.src.peek_at(offset, MARKER_PEEK_BYTES) if offset is not None else b""
            if head is not None and has_marker(head):
                return None
            side = side or name == RESTORE_NAME
        if not side or len(dirs) != 1:
            return None
        if not image.src.seekable and is_encrypted_name(dirs[0]):
            return None
        return dirs[0]

    return decide


_NOT_FOUND = "no ecarchive archive found"


def _compressed_iso_wrapper(archive: Any) -> IsoWrapper:
    """For an image libarchive reads (a compressed one), read once as a stream: a first
    directory with a clear name is taken for ecarchive's layout (a kernel lower tree's names
    are encrypted)."""

    def decide(first: Path) -> bytes | None:
        if not bytes(ffi.format_name(archive._pointer) or b"").startswith(b"ISO9660"):
            return None
        return first[0] if not is_encrypted_name(first[0]) else None

    return decide


def _read_head(fd: int, size: int) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return bytes(buf[:got])


@contextmanager
def _opened_input(source: str) -> Iterator[tuple[int, bytes]]:
    """The input's descriptor and its first bytes, enough to recognise an ISO image."""
    if source == STDIN:
        yield 0, _read_head(0, ISO_SNIFF_BYTES)
        return
    try:
        # a user-named input, followed through symlinks as libarchive opens it
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ArchiveUnreadable(f"{source}: cannot open: {e.strerror}") from e
    try:
        yield fd, _read_head(fd, ISO_SNIFF_BYTES)
    finally:
        os.close(fd)


def _blocks(data: DataReader) -> Iterator[bytes]:
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    while n := data.readinto(view):
        yield bytes(view[:n])


def _iso_image(
    source: str, fd: int, head: bytes, reporter: Reporter | None, progress: Progress | None
) -> IsoImage:
    """The image read from `fd` (its first bytes already taken as `head`); an image whose
    volume descriptor or root cannot be read is no archive at all."""
    try:
        return IsoImage(ImageSource(fd, head), reporter, progress)
    except IsoUnreadable as e:
        raise NoArchiveFound(f"{source}: {_NOT_FOUND} ({e})") from e


def top_level_files(
    source: str, names: Collection[bytes]
) -> Iterator[tuple[bytes, Iterator[bytes]]]:
    """The regular files called one of `names` at the top of an archive file, each with its
    data as blocks. An ISO image is read by read/iso, so damage elsewhere in it costs nothing
    here (restore reports it); libarchive seeks over tar member data."""
    with _opened_input(source) as (fd, head):
        if is_iso_head(head):
            for m in _iso_image(source, fd, head, None, None).members():
                top = m.path[0]
                if len(m.path) == 1 and m.entry.kind is Kind.FILE and top in names:
                    assert m.entry.data is not None
                    yield top, _blocks(m.entry.data)
            return
    with open_archive(source) as archive:
        for entry in archive:
            # raw bytes: names in clear (--fnek off) need not be UTF-8
            path = (ffi.entry_pathname(entry._entry_p) or b"").removeprefix(b"./")
            if path in names and entry.isfile:
                yield path, entry.get_blocks()


@contextmanager
def open_lower_tree(
    source: str, reporter: Reporter, progress: Progress | None = None
) -> Iterator[LowerTree]:
    """The lower entries of SOURCE: '-' (stdin), an archive file, or an extracted directory.

    `progress`, when given, is called with the number of lower bytes consumed as reading goes
    (an archive's member sizes; a directory's file sizes).
    """
    if source != STDIN and os.path.isdir(source):
        with _dir_tree(source) as (tree, root_name):
            lower = LowerTree(iter(()))
            lower.entries = _dir_entries(lower, tree, reporter, progress)
            if root_name is not None:
                lower.side_files = True
                lower.lower_root = root_name
                lower.manifest = _manifest_file(tree.top_fd, reporter)
            yield lower
        return
    if source != STDIN and not os.path.exists(source):
        raise ArchiveUnreadable(f"{source}: no such file or directory")
    with _opened_input(source) as (fd, head):
        if is_iso_head(head):
            image = _iso_image(source, fd, head, reporter, progress)
            yield _StreamLayout(image.members(), reporter, _iso_wrapper_of(image))
            return
        # a regular file is opened again by name (libarchive seeks over member data); a pipe,
        # even a named one such as <(ssh host cat x.tar), is read on without what was taken
        reopen = source != STDIN and stat.S_ISREG(os.fstat(fd).st_mode)
        with open_archive(source, None if reopen else (fd, head)) as archive:
            members = _archive_members(archive, reporter, progress)
            yield _StreamLayout(members, reporter, _compressed_iso_wrapper(archive))


@contextmanager
def _dir_tree(source: str) -> Iterator[tuple[DirTree, bytes | None]]:
    """SOURCE opened as a directory tree, with the name of its lower root (None: the top)."""
    try:
        tree = DirTree(os.fsencode(source))
    except OSError as e:  # a disc or tree this user may not read: nothing of it can be
        raise ArchiveUnreadable(f"{source}: cannot read: {e.strerror}") from e
    try:
        try:
            root_name = _lower_root_name(tree)
            tree.open_root(root_name)
        except OSError as e:
            raise ArchiveUnreadable(f"{source}: cannot read: {e.strerror}") from e
        yield tree, root_name
    finally:
        tree.close()
