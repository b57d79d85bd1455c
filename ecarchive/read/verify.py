"""`ecarchive verify`: check an archive, an extracted tree or a mounted disc against its manifest.

Three levels, each adding to the one before:

* no secret: every member's SHA-256 against MANIFEST.ecarchive, members missing from the
  archive or not in the manifest, types, sizes and hard-link structure (bit rot, a bad burn);
* a passphrase: the manifest's HMAC, every lower file's header (marker, a packet for this
  passphrase's key, a lower size that matches the header's size) and every name and symlink
  target decrypts;
* `--against SOURCE`: every file is decrypted and compared with SOURCE byte for byte, types and
  symlink targets too, and SOURCE entries missing from the archive are named.

One line per problem on `out`, with the plaintext path where it is known (`plain [lower]`),
then a summary. Exit 0 only when no problem was found. A wrong passphrase and an unreadable
archive are fatal (EcarchiveError), not problems.

The archive is read once, in member order, with fixed-size buffers: a tar stream's manifest is
its last member, so all comparisons with it happen at the end, from a table of what was seen
(one small record per member).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import libarchive
from libarchive import ffi
from libarchive.exception import ArchiveError

from ..display import escape_path
from ..ecryptfs.constants import HEADER_READ_SIZE
from ..ecryptfs.sizes import lower_size
from ..errors import EXIT_OK, EXIT_WARNINGS, ArchiveUnreadable, Reporter, UsageError
from ..manifest import (
    MANIFEST_NAME,
    MAX_PROBLEMS,
    Facts,
    Line,
    ManifestError,
    ManifestReader,
)
from ..model import KIND_OF_FILE_TYPE, Kind
from .decode import CHUNK, FOREIGN_LIMIT, HELD_MAX, DamagedEntry, FileContent, Keys, unsafe_name
from .dest import DestTree
from .members import MAX_MANIFEST_BYTES, open_lower_file
from .spool import Spool

STDIN = "-"
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0)
_FILE_KINDS = (Kind.FILE, Kind.HARDLINK)  # names of file data; which name is "first" may vary
_SIZED_KINDS = (*_FILE_KINDS, Kind.SYMLINK)  # a directory's size depends on the medium


@dataclass(slots=True)
class Member:
    """One member of the archive, path relative to the archive root ('/'-separated bytes)."""

    kind: Kind
    path: bytes
    size: int
    target: bytes = b""  # SYMLINK: stored target; HARDLINK: archive path of the file
    group: object = None  # hard-link identity: an inode for directories, else the path
    chunks: Iterator[bytes | memoryview] | None = None  # FILE data; consume before the next member


# --- reading members ----------------------------------------------------------------------------


def _normal(raw: bytes) -> bytes:
    return b"/".join(p for p in raw.split(b"/") if p and p != b".")


def _archive_blocks(archive_p: Any, buf: Any) -> Iterator[memoryview]:
    """A member's data in views of one reused buffer (libarchive-c's get_blocks allocates a
    fresh buffer per member and copies every block)."""
    view = memoryview(buf).cast("B")
    while n := ffi.read_data(archive_p, buf, len(view)):
        yield view[:n]


def _archive_members(archive: Any) -> Iterator[Member]:
    buf = ctypes.create_string_buffer(CHUNK)
    for entry in archive:
        e = entry._entry_p
        path = _normal(ffi.entry_pathname(e) or os.fsencode(entry.pathname))
        if not path:
            continue
        hard = ffi.entry_hardlink(e)
        if hard:
            yield Member(Kind.HARDLINK, path, entry.size or 0, target=_normal(hard))
            continue
        kind = KIND_OF_FILE_TYPE.get(stat.S_IFMT(entry.filetype))
        if kind is None:
            continue
        member = Member(kind, path, entry.size or 0, group=path)
        if kind is Kind.SYMLINK:
            member.target = ffi.entry_symlink(e) or os.fsencode(entry.linkpath or "")
            member.size = len(member.target)
        elif kind is Kind.FILE:
            member.chunks = _archive_blocks(archive._pointer, buf)
        yield member


def _file_blocks(path: bytes) -> Iterator[bytes]:
    fd = open_lower_file(path)
    try:
        while block := os.read(fd, CHUNK):
            yield block
    finally:
        os.close(fd)


def _dir_members(root: bytes, reporter: Reporter) -> Iterator[Member]:
    """Sorted by name bytes, parents first, like the plan; the first name of an inode is FILE."""
    seen: dict[tuple[int, int], bytes] = {}
    stack: list[tuple[bytes, Iterator[os.DirEntry[bytes]]]] = [
        (b"", iter(_children(root, reporter)))
    ]
    while stack:
        rel_dir, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        rel = rel_dir + b"/" + child.name if rel_dir else child.name
        try:
            st = child.stat(follow_symlinks=False)
        except OSError as e:
            reporter.warn(f"{os.fsdecode(rel)}: cannot stat: {e.strerror}")
            continue
        kind = KIND_OF_FILE_TYPE.get(stat.S_IFMT(st.st_mode))
        if kind is None:
            continue
        inode = (st.st_dev, st.st_ino)
        if kind is Kind.FILE and inode in seen:
            yield Member(Kind.HARDLINK, rel, st.st_size, target=seen[inode], group=inode)
            continue
        member = Member(kind, rel, st.st_size if kind is Kind.FILE else 0, group=inode)
        if kind is Kind.FILE:
            seen[inode] = rel
            member.chunks = _file_blocks(child.path)
        elif kind is Kind.SYMLINK:
            member.target = os.readlink(child.path)
            member.size = len(member.target)
        yield member
        if kind is Kind.DIR:
            stack.append((rel, iter(_children(child.path, reporter))))


def _children(path: bytes, reporter: Reporter) -> list[os.DirEntry[bytes]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda d: d.name)
    except OSError as e:
        reporter.warn(f"{os.fsdecode(path)}: cannot read directory: {e.strerror}")
        return []


@contextlib.contextmanager
def open_members(source: str, reporter: Reporter) -> Iterator[Iterator[Member]]:
    """Members of a tar or ISO file (or '-' for stdin), or of a directory tree."""
    if source != STDIN and os.path.isdir(source):
        yield _dir_members(os.fsencode(source), reporter)
        return
    if source != STDIN and not os.path.exists(source):
        raise ArchiveUnreadable(f"{source}: no such file or directory")
    try:
        reader = (
            libarchive.fd_reader(0, block_size=CHUNK)
            if source == STDIN
            else (libarchive.file_reader(source, block_size=CHUNK))
        )
        with reader as archive:
            yield _archive_members(archive)
    except ArchiveError as e:
        raise ArchiveUnreadable(f"{source}: cannot read the archive: {e.msg}") from e


# --- streaming one file's data ------------------------------------------------------------------


class _HashingReader:
    """A DataReader over a chunk iterator that hashes every byte handed out."""

    def __init__(self, chunks: Iterator[bytes | memoryview]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")
        self.sha = hashlib.sha256()
        self.total = 0

    def readinto(self, view: memoryview) -> int:
        got = 0
        while got < len(view):
            if not self._pending:
                nxt = next(self._chunks, None)
                if nxt is None:
                    break
                self._pending = memoryview(nxt)
            n = min(len(self._pending), len(view) - got)
            view[got : got + n] = self._pending[:n]
            self.sha.update(self._pending[:n])
            self._pending = self._pending[n:]
            got += n
        self.total += got
        return got

    def drain(self) -> None:
        if self._pending:
            self.sha.update(self._pending)
            self.total += len(self._pending)
            self._pending = memoryview(b"")
        for chunk in self._chunks:
            self.sha.update(chunk)
            self.total += len(chunk)


# --- the verifier -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Seen:
    kind: Kind
    size: int
    digest: bytes | None
    target: bytes
    group: object
    listed: bool = False  # a manifest line names it


@dataclass(slots=True)
class Verifier:
    out: TextIO
    reporter: Reporter
    keys: Keys | None = None
    against: bytes | None = None
    # A directory (an extracted tree, a mounted disc) only shows inodes, and isofs gives every
    # name its own: there hard links are checked by content only.
    links_checked: bool = True
    problems: int = 0
    data_bytes: int = 0
    seen: dict[bytes, _Seen] = field(default_factory=dict)
    _resolved: dict[bytes, _Seen | None] = field(default_factory=dict)  # hard link → its data
    manifest: Spool | None = None
    line_problems: int = 0  # problems with manifest lines, MAX_PROBLEMS of them printed
    lower_root: bytes | None = None
    plain_seen: set[bytes] = field(default_factory=set)
    _plain: dict[bytes, bytes | None] = field(default_factory=dict)
    _in: memoryview = field(default_factory=lambda: memoryview(bytearray(CHUNK)))
    _out: memoryview = field(default_factory=lambda: memoryview(bytearray(CHUNK)))
    _src: memoryview = field(default_factory=lambda: memoryview(bytearray(CHUNK)))
    _held: list[str] = field(default_factory=list)
    _decided: bool = False  # every member was read: nothing is held any longer
    source_tree: DestTree | None = None  # SOURCE of --against, reached by directory fds
    as_json: bool = False  # one JSON object per problem line and for the summary

    # -- reporting

    def problem(self, path: bytes, message: str) -> None:
        self.problems += 1
        self.emit(path, message)

    def line_problem(self, path: bytes, message: str) -> None:
        """A problem found by a manifest line: a crafted manifest lists millions of paths the
        archive does not hold, so past MAX_PROBLEMS they are counted, not printed."""
        self.line_problems += 1
        if self.line_problems <= MAX_PROBLEMS:
            self.problem(path, message)
        else:
            self.problems += 1

    def emit(self, path: bytes, message: str) -> None:
        if self.as_json:
            plain = self.plain_path(path) if self.keys is not None else None
            record = {
                "path": os.fsdecode(path),
                "plain": None if plain is None else os.fsdecode(plain),
                "problem": message,
            }
            line = json.dumps(record)
        else:
            line = f"{self.display(path)}: {message}"
        undecided = self.keys is not None and not self.keys.verified and not self._decided
        if undecided and len(self._held) < HELD_MAX:
            self._held.append(line)  # a wrong passphrase is decided over the archive first
            return
        self.flush()
        print(line, file=self.out, flush=True)

    def print_problem(self, plain: bytes, message: str) -> None:
        """A problem known by its SOURCE path only (--against)."""
        if self.as_json:
            line = json.dumps({"path": None, "plain": os.fsdecode(plain), "problem": message})
        else:
            line = f"{escape_path(plain)}: {message}"
        self.flush()
        print(line, file=self.out, flush=True)

    def flush(self) -> None:
        for line in self._held:
            print(line, file=self.out, flush=True)
        self._held.clear()

    def passphrase_checked(self, *, at_end: bool) -> None:
        """WrongPassphrase once the archive's signatures say so (decoder.FOREIGN_LIMIT)."""
        keys = self.keys
        if keys is None or keys.verified:
            self.flush()
            return
        if keys.foreign >= FOREIGN_LIMIT or (at_end and keys.foreign):
            raise keys.wrong_passphrase()
        if at_end:
            # an archive without one lower file never verifies the passphrase: the manifest's
            # problems, found after this, must not wait for it
            self._decided = True
            self.flush()

    def display(self, path: bytes) -> str:
        plain = self.plain_path(path) if self.keys is not None else None
        lower = escape_path(path)
        if plain is None:
            return lower
        return f"{escape_path(plain) or '.'} [{lower}]"

    # -- names

    def is_lower(self, path: bytes) -> bool:
        top, sep, _ = path.partition(b"/")
        if self.lower_root is not None:
            return top == self.lower_root
        return bool(sep)

    def plain_path(self, path: bytes) -> bytes | None:
        """The plaintext path below the lower root, or None (not lower, does not decrypt, or
        decrypts to a name no file system entry can have, such as '..').

        Iterative: a path 1,500 levels deep must not exhaust the recursion limit."""
        if self.keys is None or not self.is_lower(path):
            return None
        todo: list[bytes] = []
        at = path
        while at not in self._plain:
            parent, _, _ = at.rpartition(b"/")
            if not parent:
                self._plain[at] = b""  # the lower root
                break
            todo.append(at)
            at = parent
        for at in reversed(todo):
            parent, _, name = at.rpartition(b"/")
            base = self._plain[parent]
            clear = self.clear_name(name)
            self._plain[at] = (
                None if base is None or clear is None else (base + b"/" + clear).lstrip(b"/")
            )
        return self._plain[path]

    def clear_name(self, name: bytes) -> bytes | None:
        assert self.keys is not None
        try:
            clear = self.keys.name(name)
        except DamagedEntry:
            return None
        return None if unsafe_name(clear) else clear

    # -- one member

    def member(self, m: Member) -> None:
        if m.path == MANIFEST_NAME and m.kind is Kind.FILE:
            self.read_manifest(m)
            return
        if self.lower_root is None and m.kind is Kind.DIR and b"/" not in m.path:
            self.lower_root = m.path  # the one directory beside RESTORE.txt
        lower = self.is_lower(m.path)
        if self.keys is not None and lower:
            plain = self.plain_path(m.path)
            if plain is None:
                self.name_problem(m.path)
            elif self.against is not None:
                self.plain_seen.add(plain)
        digest: bytes | None = None
        if m.kind is Kind.FILE:
            digest = self.file(m, lower)
        elif m.kind is Kind.SYMLINK:
            digest = hashlib.sha256(m.target).digest()
            if self.keys is not None and lower:
                try:
                    self.keys.name(m.target)
                except DamagedEntry as e:
                    self.problem(m.path, f"symlink target does not decrypt: {e}")
        self.seen[m.path] = _Seen(m.kind, m.size, digest, m.target, m.group)
        if self.against is not None and lower and m.kind is not Kind.FILE:
            self.compare_other(m)

    def name_problem(self, path: bytes) -> None:
        parent, _, name = path.rpartition(b"/")
        if self.plain_path(parent) is None and parent in self.seen:
            return  # named once, at its parent
        assert self.keys is not None
        try:
            clear = self.keys.name(name)
        except DamagedEntry as e:
            self.problem(path, f"name does not decrypt: {e}")
            return
        self.problem(path, f"name decrypts to {escape_path(clear)!r}, not a file name")

    def read_manifest(self, m: Member) -> None:
        assert m.chunks is not None
        spool = Spool()
        for chunk in m.chunks:
            spool.write(chunk)
            if spool.size > MAX_MANIFEST_BYTES:
                self.problem(m.path, "too large to be a manifest")
                return
        spool.close()
        self.manifest = spool

    def file(self, m: Member, lower: bool) -> bytes | None:
        assert m.chunks is not None
        reader = _HashingReader(m.chunks)
        try:
            if self.keys is not None and lower:
                try:
                    self.decrypt(m, reader)
                except DamagedEntry as e:
                    self.problem(m.path, str(e))
            reader.drain()
        except OSError as e:  # a file in a directory or on a disc we may not read
            self.problem(m.path, f"cannot read: {e.strerror}")
            return None
        self.data_bytes += reader.total
        if reader.total != m.size:
            self.problem(m.path, f"member says {m.size} bytes but holds {reader.total}")
        return reader.sha.digest()

    def decrypt(self, m: Member, reader: _HashingReader) -> None:
        assert self.keys is not None
        page = self._in[:HEADER_READ_SIZE]
        got = reader.readinto(page)
        key = self.keys.file_key_of(page[:got])
        expected = lower_size(key.plain_size, key.metadata_size)
        if m.size != expected:
            self.problem(
                m.path,
                f"lower size is {m.size} bytes; its header's plaintext size "
                f"{key.plain_size} needs {expected}",
            )
        if self.against is None:
            return
        skip = key.metadata_size - got
        while skip > 0:
            n = reader.readinto(self._in[: min(skip, CHUNK)])
            if n == 0:
                raise DamagedEntry("truncated inside the eCryptfs header")
            skip -= n
        content = FileContent(key, reader, (self._in, self._out))
        self.compare_file(m.path, content)

    # -- against SOURCE

    def open_source(self, path: bytes) -> int:
        """SOURCE's file for `path`: every directory opened O_NOFOLLOW from SOURCE down, the
        file itself O_NOFOLLOW|O_NONBLOCK (a fifo where the archive has a file must not block);
        OSError(EISDIR/EINVAL...) for anything but a regular file."""
        plain = self.plain_path(path)
        assert plain and self.source_tree is not None
        *up, name = plain.split(b"/")
        parent = self.source_tree.open_detached(tuple(up))
        try:
            fd = open_lower_file(name, dir_fd=parent, flags=os.O_NONBLOCK)
        finally:
            os.close(parent)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file")
        return fd

    def compare_file(self, path: bytes, content: FileContent) -> None:
        if not self.plain_path(path):
            return
        try:
            fd = self.open_source(path)
        except OSError as e:
            self.problem(path, f"not a readable file in SOURCE: {e.strerror}")
            return
        try:
            size = os.fstat(fd).st_size
            if size != content.plain_size:
                self.problem(path, f"size {content.plain_size}, SOURCE has {size}")
                return
            offset = 0
            for chunk in content.chunks():
                n = len(chunk)
                got = os.readv(fd, [self._src[:n]])
                if got != n or chunk != self._src[:n]:
                    first = next((i for i in range(min(n, got)) if chunk[i] != self._src[i]), got)
                    self.problem(path, f"content differs from SOURCE at byte {offset + first}")
                    return
                offset += n
        finally:
            os.close(fd)

    def source_lstat(self, plain: bytes) -> tuple[os.stat_result, bytes]:
        """lstat of SOURCE/plain reached by directory fds (no symlink on the way is followed),
        and a symlink's target (b"" for other types)."""
        assert self.source_tree is not None
        *up, name = plain.split(b"/")
        parent = self.source_tree.open_detached(tuple(up))
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            target = os.readlink(name, dir_fd=parent) if stat.S_ISLNK(st.st_mode) else b""
        finally:
            os.close(parent)
        return st, target

    def compare_other(self, m: Member) -> None:
        plain = self.plain_path(m.path)
        if not plain:
            return
        try:
            st, src_target = self.source_lstat(plain)
        except OSError as e:
            self.problem(m.path, f"not in SOURCE: {e.strerror}")
            return
        kind = KIND_OF_FILE_TYPE.get(stat.S_IFMT(st.st_mode))
        wanted = Kind.FILE if m.kind is Kind.HARDLINK else m.kind
        if kind is not wanted:
            self.problem(
                m.path,
                f"is {m.kind.name.lower()}, SOURCE has {kind.name.lower() if kind else 'other'}",
            )
            return
        assert self.keys is not None
        if m.kind is Kind.SYMLINK:
            try:
                target = self.keys.name(m.target)
            except DamagedEntry:
                return  # already named
            if src_target != target:
                self.problem(m.path, "symlink target differs from SOURCE")
        elif m.kind is Kind.HARDLINK:
            first = self.plain_path(m.target)
            try:
                same = bool(first) and os.path.samestat(st, self.source_lstat(first or b"")[0])
            except OSError:
                same = False
            if first is not None and not same:
                self.problem(m.path, f"SOURCE has no hard link to {escape_path(first)}")

    def source_leftovers(self) -> None:
        """SOURCE entries the archive does not hold (sockets are never archived)."""
        assert self.against is not None
        stack = [b""]
        while stack:
            rel_dir = stack.pop()
            for child in _children(
                os.path.join(self.against, rel_dir) if rel_dir else self.against, self.reporter
            ):
                rel = rel_dir + b"/" + child.name if rel_dir else child.name
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(child.stat(follow_symlinks=False).st_mode):
                        continue
                if rel not in self.plain_seen:
                    self.problems += 1
                    self.print_problem(rel, "in SOURCE but not in the archive")
                    continue
                if child.is_dir(follow_symlinks=False):
                    stack.append(rel)

    # -- the manifest, at the end

    def check_manifest(self) -> Facts | None:
        """Read the kept manifest as a stream twice: first for what concerns it as a whole
        (header, HMAC, malformed lines), then each line checked as it is parsed against what
        the archive showed. Memory does not grow with the manifest."""
        if self.manifest is None:
            self.problem(MANIFEST_NAME, "missing: nothing to check the archive against")
            return None
        reader = ManifestReader(self.keys.file_key if self.keys is not None else None)
        try:
            for chunk in self.manifest.chunks():
                for _ in reader.feed(chunk):
                    pass
            facts = reader.close()
        except ManifestError as e:
            self.problem(MANIFEST_NAME, str(e))
            return None
        for text in reader.problems:
            self.problem(MANIFEST_NAME, text)
        if self.keys is not None:
            sig = self.keys.file_key.sig_hex
            if facts.file_sig != sig:
                self.problem(
                    MANIFEST_NAME,
                    f"written for key {facts.file_sig}, the passphrase gives {sig}",
                )
            if not reader.mac_ok():
                self.problem(
                    MANIFEST_NAME,
                    "HMAC does not verify: the manifest was altered "
                    "(or written with another passphrase)",
                )
        if self.lower_root is not None and facts.lower_root != self.lower_root:
            self.problem(MANIFEST_NAME, f"names lower directory {escape_path(facts.lower_root)}")
        again = ManifestReader()
        for chunk in self.manifest.chunks():
            for line in again.feed(chunk):
                self.check_line(line)
        self.more_line_problems()
        for path, seen in self.seen.items():
            if not seen.listed:
                kind = seen.kind.name.lower()
                self.problem(path, f"{kind} is in the archive but not in the manifest")
        return facts

    def more_line_problems(self) -> None:
        hidden = self.line_problems - MAX_PROBLEMS
        if hidden > 0:
            self.emit(MANIFEST_NAME, f"{hidden} more problems with manifest lines not shown")

    def resolved(self, path: bytes) -> _Seen | None:
        """The member whose data a hard link (chain) names; a loop resolves to nothing.
        Each name's answer is kept: a chain of n links is walked once, not once per name."""
        chain: list[bytes] = []
        at, seen = path, self.seen.get(path)
        while seen is not None and seen.kind is Kind.HARDLINK:
            if at in self._resolved:
                seen = self._resolved[at]
                break
            chain.append(at)
            if len(chain) > len(self.seen):
                seen = None
                break
            at = seen.target
            seen = self.seen.get(at)
        for link in chain:
            self._resolved[link] = seen
        return seen

    def check_line(self, line: Line) -> None:
        seen = self.seen.get(line.path)
        if seen is not None:
            seen.listed = True
        if line.absent:
            return  # the file vanished while the archive was written; create said so
        if seen is None:
            self.line_problem(
                line.path, f"{line.kind.name.lower()} listed in the manifest is missing"
            )
            return
        want_file = line.kind in _FILE_KINDS
        if (seen.kind in _FILE_KINDS) != want_file or (
            not want_file and seen.kind is not line.kind
        ):
            self.line_problem(
                line.path,
                f"is {seen.kind.name.lower()}, the manifest says {line.kind.name.lower()}",
            )
            return
        data = self.resolved(line.path) if want_file else seen
        if data is None or (want_file and data.kind is not Kind.FILE):
            self.line_problem(line.path, "hard link to a file that is not in the archive")
            return
        if line.digest is not None and data.digest != line.digest:
            self.line_problem(line.path, "content differs from the manifest (SHA-256 mismatch)")
        elif line.kind in _SIZED_KINDS and data.size != line.size:
            self.line_problem(line.path, f"size {data.size}, the manifest says {line.size}")
        if line.kind is Kind.HARDLINK and self.links_checked:
            other = self.resolved(line.target)
            if other is None or other.group != data.group:
                self.line_problem(line.path, f"is not a hard link of {escape_path(line.target)}")


def verify_archive(
    source: str,
    *,
    passphrase: bytes | None,
    against: str | None,
    reporter: Reporter,
    out: TextIO,
    as_json: bool = False,
) -> int:
    """Verify SOURCE (tar, ISO, '-', extracted directory or mounted disc); returns the exit
    code: 0 clean, 1 problems found. Fatal conditions raise EcarchiveError subclasses.

    `as_json`: every problem as {"path", "plain", "problem"} and a last {"summary": {...}}
    line, one JSON object per line."""
    if against is not None and passphrase is None:
        raise UsageError("--against needs the passphrase to decrypt the archive")
    if against is not None and not os.path.isdir(against):
        raise UsageError(f"--against {against}: not a directory")
    verifier = Verifier(
        out=out,
        reporter=reporter,
        keys=Keys(passphrase) if passphrase is not None else None,
        against=os.fsencode(against) if against is not None else None,
        links_checked=source == STDIN or not os.path.isdir(source),
        as_json=as_json,
    )
    if verifier.against is not None:
        verifier.source_tree = DestTree.open(verifier.against)
    with open_members(source, reporter) as members:
        try:
            for m in members:
                verifier.member(m)
                verifier.passphrase_checked(at_end=False)
        except ArchiveError as e:
            verifier.problem(os.fsencode(source), f"unreadable from here on: {e.msg}")
    verifier.passphrase_checked(at_end=True)
    facts = verifier.check_manifest()
    if verifier.against is not None:
        verifier.source_leftovers()
    if verifier.source_tree is not None:
        verifier.source_tree.close()
    entries = len(verifier.seen)
    volume = f" (volume {facts.volume} of {facts.volumes})" if facts and facts.volumes > 1 else ""
    level = (
        "hashes"
        if verifier.keys is None
        else ("hashes, HMAC, headers, names" + (", content against SOURCE" if against else ""))
    )
    shown = escape_path(os.fsencode(source))
    if as_json:
        summary = {
            "source": source,
            "ok": not verifier.problems,
            "problems": verifier.problems,
            "entries": entries,
            "bytes": verifier.data_bytes,
            "checks": level,
            "volume": facts.volume if facts else None,
            "volumes": facts.volumes if facts else None,
        }
        print(json.dumps({"summary": summary}), file=out)
    elif verifier.problems:
        print(
            f"verify: {shown}{volume}: {verifier.problems} problem"
            f"{'s' if verifier.problems != 1 else ''} in {entries} entries ({level})",
            file=out,
        )
    else:
        print(
            f"verify: {shown}{volume}: OK, {entries} entries, {verifier.data_bytes} bytes "
            f"({level})",
            file=out,
        )
    return EXIT_WARNINGS if verifier.problems else EXIT_OK
