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

The archive is read once, in member order, with fixed-size buffers, by the member reader that
restore and list use (read/members.py: layout, unsafe paths, sparse members, ISO, stdin, trees
on disk); what it skips is a problem here. A tar stream's manifest is its last member, so all
comparisons with it happen at the end, from a table of what was seen (one small record per
member, by archive path: the lower root's name and the entry's path below it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from typing import TextIO

from ..display import escape_path
from ..ecryptfs.constants import HEADER_READ_SIZE
from ..ecryptfs.sizes import lower_size
from ..errors import EXIT_OK, EXIT_WARNINGS, ArchiveUnreadable, Reporter, UsageError
from ..fsio import open_regular, open_root, open_subdir, read_full
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
from .members import STDIN, DataReader, LowerEntry, MemberUnreadable, Path, open_lower_tree
from .spool import Spool

_FILE_KINDS = (Kind.FILE, Kind.HARDLINK)  # names of file data; which name is "first" may vary
_SIZED_KINDS = (*_FILE_KINDS, Kind.SYMLINK)  # a directory's size depends on the medium


class _ReaderProblems(Reporter):
    """What read/members.py skips (an unsafe path, a sparse member, a member outside the lower
    directory, a file that cannot be stat'ed) is a problem of what is verified: said on `out`
    with the others and counted in the summary, not a warning beside an "OK"."""

    def __init__(self, verifier: Verifier) -> None:
        super().__init__()
        self._verifier = verifier

    def warn(self, message: str, *, affects_exit: bool = True) -> None:
        self._verifier.reader_problem(message)


class _HashingReader:
    """A member's data (read/members.py), hashed as it is handed out; `drain` takes in what
    the decoder left, so the digest covers the whole member."""

    def __init__(self, inner: DataReader, spare: memoryview) -> None:
        self._inner = inner
        self._spare = spare
        self.sha = hashlib.sha256()
        self.total = 0

    def readinto(self, view: memoryview) -> int:
        n = self._inner.readinto(view)
        self.sha.update(view[:n])
        self.total += n
        return n

    def drain(self) -> None:
        while self.readinto(self._spare):
            pass


# --- the verifier -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Seen:
    kind: Kind
    size: int
    digest: bytes | None
    target: bytes  # SYMLINK: stored target; HARDLINK: archive path of the file it names
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
    lower_root: bytes | None = None  # archive path of the lower root (b"": the top level)
    _prefix: bytes = b""  # what the archive paths of its entries start with
    # RESTORE.txt, MANIFEST.deleted...: never lower, even when the top level is the lower root
    _side: set[bytes] = field(default_factory=lambda: {MANIFEST_NAME})
    plain_seen: set[bytes] = field(default_factory=set)
    _plain: dict[bytes, bytes | None] = field(default_factory=dict)
    _in: memoryview = field(default_factory=lambda: memoryview(bytearray(CHUNK)))
    _out: memoryview = field(default_factory=lambda: memoryview(bytearray(CHUNK)))
    _src: memoryview = field(default_factory=lambda: memoryview(bytearray(CHUNK)))
    _held: list[str] = field(default_factory=list)
    _decided: bool = False  # every member was read: nothing is held any longer
    source_fd: int | None = None  # SOURCE of --against, reached by directory fds (fsio)
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
        self.show(line)

    def show(self, line: str) -> None:
        undecided = self.keys is not None and not self.keys.verified and not self._decided
        if undecided and len(self._held) < HELD_MAX:
            self._held.append(line)  # a wrong passphrase is decided over the archive first
            return
        self.flush()
        print(line, file=self.out, flush=True)

    def reader_problem(self, message: str) -> None:
        """A member the member reader skipped or could not reach; `message` names it."""
        self.problems += 1
        if self.as_json:
            message = json.dumps({"path": None, "plain": None, "problem": message})
        self.show(message)

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

    def set_root(self, root: bytes) -> None:
        """The lower root, as read/members.py found it, known before its first entry."""
        if root == self.lower_root:
            return
        self.lower_root = root
        self._prefix = root + b"/" if root else b""
        self._plain = {root: b""}
        if root:
            # the directory itself is the layout, not an entry of the lower tree
            self.seen.setdefault(root, _Seen(Kind.DIR, 0, None, b""))

    def archive_path(self, path: Path) -> bytes:
        """The path the manifest names for an entry of the lower tree."""
        return self._prefix + b"/".join(path)

    def is_lower(self, path: bytes) -> bool:
        if self.lower_root is None or path in self._side:
            return False
        return path == self.lower_root or path.startswith(self._prefix)

    def plain_path(self, path: bytes) -> bytes | None:
        """The plaintext path below the lower root, or None (not lower, does not decrypt, or
        decrypts to a name no file system entry can have, such as '..').

        Iterative: a path 1,500 levels deep must not exhaust the recursion limit."""
        if self.keys is None or not self.is_lower(path):
            return None
        todo: list[bytes] = []
        at = path
        while at not in self._plain:  # the lower root is, and every lower path is below it
            todo.append(at)
            at = at.rpartition(b"/")[0]
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

    def member(self, entry: LowerEntry, path: bytes) -> None:
        """One entry of the lower tree, by its archive path."""
        lower = self.is_lower(path)
        if self.keys is not None and lower:
            plain = self.plain_path(path)
            if plain is None:
                self.name_problem(path)
            elif self.against is not None:
                self.plain_seen.add(plain)
        digest: bytes | None = None
        size, target = entry.size, b""
        if entry.kind is Kind.FILE:
            digest = self.file(entry, path, lower)
        elif entry.kind is Kind.SYMLINK:
            target, size = entry.symlink, len(entry.symlink)
            digest = hashlib.sha256(target).digest()
            if self.keys is not None and lower:
                try:
                    self.keys.name(target)
                except DamagedEntry as e:
                    self.problem(path, f"symlink target does not decrypt: {e}")
        elif entry.kind is Kind.HARDLINK:
            target = self.archive_path(entry.link_path)
        self.seen[path] = _Seen(entry.kind, size, digest, target)
        if self.against is not None and lower and entry.kind is not Kind.FILE:
            self.compare_other(entry.kind, path, target)

    def side_file(self, entry: LowerEntry) -> None:
        """RESTORE.txt, MANIFEST.deleted...: beside the lower tree, hashed like its files."""
        path = b"/".join(entry.path)
        self._side.add(path)
        self.member(entry, path)

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

    def file(self, entry: LowerEntry, path: bytes, lower: bool) -> bytes | None:
        assert entry.data is not None
        reader = _HashingReader(entry.data, self._in)
        try:
            if self.keys is not None and lower:
                try:
                    self.decrypt(entry.size, path, reader)
                except DamagedEntry as e:
                    self.problem(path, str(e))
            reader.drain()
        except MemberUnreadable as e:  # an I/O error, a cut archive, a file we may not read
            self.problem(path, f"cannot read: {e}")
            return None
        self.data_bytes += reader.total
        if reader.total != entry.size:
            self.problem(path, f"member says {entry.size} bytes but holds {reader.total}")
        return reader.sha.digest()

    def decrypt(self, size: int, path: bytes, reader: _HashingReader) -> None:
        assert self.keys is not None
        page = self._in[:HEADER_READ_SIZE]
        got = reader.readinto(page)
        key = self.keys.file_key_of(page[:got])
        expected = lower_size(key.plain_size, key.metadata_size)
        if size != expected:
            self.problem(
                path,
                f"lower size is {size} bytes; its header's plaintext size "
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
        content = FileContent(key, reader, (self._in, self._in, self._out))
        self.compare_file(path, content)

    # -- against SOURCE

    def source_parent(self, plain: bytes) -> tuple[int, bytes]:
        """The directory of SOURCE/plain, every component opened O_NOFOLLOW from SOURCE down
        (the caller closes it), and the last component."""
        assert self.source_fd is not None
        up, _, name = plain.rpartition(b"/")
        return open_subdir(self.source_fd, up), name

    def open_source(self, plain: bytes) -> int:
        """SOURCE's regular file for `plain`, opened without blocking (a fifo where the archive
        has a file); OSError (NotRegularFile...) for anything else."""
        parent, name = self.source_parent(plain)
        try:
            return open_regular(name, parent)[0]
        finally:
            os.close(parent)

    def compare_file(self, path: bytes, content: FileContent) -> None:
        plain = self.plain_path(path)
        if not plain:
            return
        try:
            fd = self.open_source(plain)
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
                got = read_full(fd, self._src[:n])
                if got != n or chunk != self._src[:n]:
                    first = next((i for i in range(min(n, got)) if chunk[i] != self._src[i]), got)
                    self.problem(path, f"content differs from SOURCE at byte {offset + first}")
                    return
                offset += n
        except OSError as e:
            self.problem(path, f"cannot read from SOURCE: {e.strerror}")
        finally:
            os.close(fd)

    def source_lstat(self, plain: bytes) -> tuple[os.stat_result, bytes]:
        """lstat of SOURCE/plain reached by directory fds (no symlink on the way is followed),
        and a symlink's target (b"" for other types)."""
        parent, name = self.source_parent(plain)
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            target = os.readlink(name, dir_fd=parent) if stat.S_ISLNK(st.st_mode) else b""
        finally:
            os.close(parent)
        return st, target

    def compare_other(self, kind: Kind, path: bytes, target: bytes) -> None:
        plain = self.plain_path(path)
        if not plain:
            return
        try:
            st, src_target = self.source_lstat(plain)
        except OSError as e:
            self.problem(path, f"not in SOURCE: {e.strerror}")
            return
        src_kind = KIND_OF_FILE_TYPE.get(stat.S_IFMT(st.st_mode))
        wanted = Kind.FILE if kind is Kind.HARDLINK else kind
        if src_kind is not wanted:
            other = src_kind.name.lower() if src_kind else "other"
            self.problem(path, f"is {kind.name.lower()}, SOURCE has {other}")
            return
        assert self.keys is not None
        if kind is Kind.SYMLINK:
            try:
                clear = self.keys.name(target)
            except DamagedEntry:
                return  # already named
            if src_target != clear:
                self.problem(path, "symlink target differs from SOURCE")
        elif kind is Kind.HARDLINK:
            first = self.plain_path(target)
            try:
                same = bool(first) and os.path.samestat(st, self.source_lstat(first or b"")[0])
            except OSError:
                same = False
            if first is not None and not same:
                self.problem(path, f"SOURCE has no hard link to {escape_path(first)}")

    def source_leftovers(self) -> None:
        """SOURCE entries the archive does not hold (sockets are never archived), walked
        through directory fds like the rest of SOURCE."""
        assert self.source_fd is not None
        stack = [b""]
        while stack:
            rel_dir = stack.pop()
            try:
                fd = open_subdir(self.source_fd, rel_dir)
            except OSError as e:
                self.reporter.warn(f"{escape_path(rel_dir or b'.')}: cannot open: {e.strerror}")
                continue
            try:
                with os.scandir(fd) as it:
                    children = sorted(it, key=lambda d: os.fsencode(d.name))
                for child in children:  # a directory fd's entries are named by str
                    name = os.fsencode(child.name)
                    rel = rel_dir + b"/" + name if rel_dir else name
                    with contextlib.suppress(OSError):
                        if stat.S_ISSOCK(child.stat(follow_symlinks=False).st_mode):
                            continue
                    if rel not in self.plain_seen:
                        self.problems += 1
                        self.print_problem(rel, "in SOURCE but not in the archive")
                    elif child.is_dir(follow_symlinks=False):
                        stack.append(rel)
            except OSError as e:
                where = escape_path(rel_dir or b".")
                self.reporter.warn(f"{where}: cannot read directory: {e.strerror}")
            finally:
                os.close(fd)

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
        if self.lower_root and facts.lower_root != self.lower_root:
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
            if other is None or other is not data:
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
        try:
            verifier.source_fd = open_root(verifier.against)
        except OSError as e:
            raise UsageError(f"--against {against}: cannot open: {e.strerror}") from e
    try:
        facts = _verify_tree(source, verifier)
    finally:
        if verifier.source_fd is not None:
            os.close(verifier.source_fd)
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


def _verify_tree(source: str, verifier: Verifier) -> Facts | None:
    """Every member through the one member reader (read/members.py), then the manifest."""
    with open_lower_tree(source, _ReaderProblems(verifier)) as tree:
        tree.side_file = verifier.side_file
        try:
            for entry in tree.entries:
                verifier.set_root(tree.lower_root)
                verifier.member(entry, verifier.archive_path(entry.path))
                verifier.passphrase_checked(at_end=False)
        except ArchiveUnreadable as e:
            # the members before were checked; what comes after, the manifest included, is lost
            verifier.problem(os.fsencode(source), f"unreadable from here on: {e}")
        verifier.set_root(tree.lower_root)  # a lower tree without one entry
        verifier.manifest = tree.manifest
    verifier.passphrase_checked(at_end=True)
    facts = verifier.check_manifest()
    if verifier.against is not None:
        verifier.source_leftovers()
    return facts
