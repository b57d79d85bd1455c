"""The members of an ISO 9660 + Rock Ridge image, read in one forward pass.

Every directory record names an extent (a directory, a file's data, a continuation area);
the pending ones wait in a heap keyed by byte offset and the lowest is always taken next, so
a file or a pipe is read front to back once. What cannot be taken is damage that costs its
record (a directory record: its whole subtree) with a warning naming its path: an extent past
the end of the image, one that lies before what was already read (a directory loop, a
continuation area pointing at itself), one that overlaps the next pending extent, bad lengths.

Choices:
- Rock Ridge relocation (RE/CL, genisoimage -R below 8 levels) is followed: the moved
  directory is read under its rr_moved path (it comes first in the image) and its members
  are held, without data, until the CL record that places it is read; rr_moved is not shown
  when that is all it holds. ecarchive and xorriso never relocate.
- Hard links are records sharing a data extent (or, for empty files, a PX serial): the first
  taken is the file, the others link to it (libarchive may pick another name as the file;
  the restored inode is the same).
- Symlink targets are joined as Linux joins SL entries (see susp.py); PN numbers are read
  as each known writer writes them.
- Data that comes before the record naming it (multisession images) cannot be read forward
  and is damage.

Memory: one sector of a directory at a time, plus one small object per pending record (and
the held members of moved directories); a record costs at least 34 bytes of real input, so
memory is bounded by the image read. A directory may claim at most DIRECTORY_MAX bytes.
"""

from __future__ import annotations

import contextlib
import heapq
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from ...display import escape_path
from ...errors import Reporter
from ...iso.continuation import MAX_HOPS
from ...iso.encode import SECTOR
from ...iso.records import FLAG_DIRECTORY, FLAG_MULTI_EXTENT, RECORD_FIXED
from ...model import KIND_OF_FILE_TYPE, Kind
from ..lower import LowerEntry, MemberUnreadable, Path, Progress, RawMember
from .records import (
    DESCRIPTORS_MAX,
    DOT,
    FIRST_DESCRIPTOR,
    FLAG_ASSOCIATED,
    TYPE_TERMINATOR,
    Record,
    is_descriptor,
    iso_name,
    parse_record,
    primary_volume,
    sp_skip,
)
from .source import ImageEnded, ImageSource
from .susp import Damage, RockRidge

# A directory's records are read one sector at a time; this caps what one directory may
# claim (about 8 million records), far above any real one.
DIRECTORY_MAX = 1 << 30
# Where genisoimage and libisofs move relocated directories; not shown when that is all
# they hold (as libarchive and Linux hide them)
RELOCATION_DIRECTORIES = (b"rr_moved", b".rr_moved")
_PLAIN_DIR_MODE = 0o555  # without Rock Ridge, as libarchive and Linux show them
_PLAIN_FILE_MODE = 0o444


class IsoUnreadable(Exception):
    """Nothing of the image can be read: no volume descriptor, or no readable root."""


@dataclass(slots=True, eq=False)
class _Relocation:
    """A directory the writer moved (its RE record lies in rr_moved) and the CL record that
    says where it belongs; its members are held until both are known."""

    moved: Path | None = None  # the RE record's path
    target: Path | None = None  # the CL record's path, inside `outer` when that is not None
    outer: _Relocation | None = None
    held: list[RawMember] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Dir:
    path: Path
    start: int
    size: int
    # a relocation directory's entry, shown only once it holds more than relocated records
    held: RawMember | None = None
    relocation: _Relocation | None = None  # the moved directory this one lies in


@dataclass(slots=True, eq=False)
class _Pending:
    """One member's record(s), waiting for continuation areas or for its data."""

    owner: _Dir
    ident: bytes
    flags: int
    date_ns: int
    sections: list[tuple[int, int]]  # (byte offset, bytes) of each extent
    rr: RockRidge = field(default_factory=RockRidge)
    hops: int = 0
    path: Path = ()
    entry: LowerEntry | None = None

    @property
    def parent(self) -> Path:
        return self.owner.path

    def shown(self) -> str:
        if self.path:
            return escape_path(b"/".join(self.path))
        name = bytes(self.rr.name) if self.rr.has_name else iso_name(self.ident)
        return escape_path(b"/".join((*self.parent, name)))


@dataclass(slots=True, eq=False)
class _Continuation:
    pending: _Pending
    length: int


_Item = _Dir | _Continuation | _Pending
_DONE = RockRidge()  # stands for the entries of every record already turned into an entry


class _SectionData:
    """A file's data: its extents in order, straight from the image into the caller's view."""

    def __init__(self, src: ImageSource, sections: list[tuple[int, int]], progress: Progress | None):
        self._src = src
        self._sections = sections
        self._index = 0
        self._left = sections[0][1]
        self._progress = progress

    @property
    def remaining(self) -> int:
        return self._left + sum(size for _, size in self._sections[self._index + 1 :])

    def readinto(self, view: memoryview) -> int:
        got = 0
        want = len(view)
        src = self._src
        while got < want:
            if not self._left:
                if self._index + 1 >= len(self._sections):
                    break
                self._index += 1
                start, self._left = self._sections[self._index]
                try:
                    src.skip_to(start)
                except (ImageEnded, OSError, ValueError) as e:
                    raise MemberUnreadable(f"extent section unreadable: {e}") from e
                continue
            try:
                n = src.readinto(view[got : got + min(self._left, want - got)])
            except OSError as e:
                raise MemberUnreadable(e.strerror or str(e)) from e
            if n == 0:
                raise MemberUnreadable("the image ends inside this file")
            got += n
            self._left -= n
        if self._progress and got:
            self._progress(got)
        return got


class IsoImage:
    """Opened by reading the volume descriptors and the root's first sector (IsoUnreadable
    when that fails); `members()` then yields every readable member once."""

    def __init__(
        self, src: ImageSource, reporter: Reporter | None, progress: Progress | None
    ) -> None:
        self.src = src
        self._reporter = reporter
        self._progress = progress
        self._heap: list[tuple[int, int, _Item]] = []
        self._seq = 0
        self._ready: list[RawMember] = []
        self._skip: int | None = None  # SP LEN_SKP; None: no Rock Ridge
        self._last_data: tuple[int, int, Path] | None = None  # (offset, size, path) of a file
        self._empty_links: dict[int, Path] = {}  # PX serial -> first name of an empty file
        self._root_waiting = 0  # root records still waiting for continuation areas
        self._relocations: dict[int, _Relocation] = {}  # by the moved directory's offset
        # the root's children as they complete: (name, kind, data offset or None)
        self.root_listing: list[tuple[bytes, Kind, int | None]] = []
        self._end, root = self._volume()
        self._root_first: bytes | None = self._root_sector(root)
        self._push(root.start, root)

    # --- opening ------------------------------------------------------------------------

    def _volume(self) -> tuple[int, _Dir]:
        src = self.src
        sectors: list[bytes] = []
        try:
            src.skip_to(FIRST_DESCRIPTOR)
            while len(sectors) < DESCRIPTORS_MAX:
                sector = src.read_exact(SECTOR)
                if not is_descriptor(sector):
                    break
                sectors.append(sector)
                if sector[0] == TYPE_TERMINATOR or primary_volume(sectors[-1:]) is not None:
                    break
            volume = primary_volume(sectors)
        except (ImageEnded, Damage, OSError) as e:
            raise IsoUnreadable(str(e)) from e
        if volume is None:
            raise IsoUnreadable("no primary volume descriptor")
        end = volume.blocks * SECTOR
        if src.real_size is not None:
            end = min(end, src.real_size)
        root = volume.root
        start = root.extent * SECTOR
        if not root.flags & FLAG_DIRECTORY or not 0 < root.size <= DIRECTORY_MAX:
            raise IsoUnreadable(f"root directory record of size {root.size}")
        if start < src.pos or start + root.size > end:
            raise IsoUnreadable(
                f"root directory at byte {start} ({root.size} bytes) outside the volume's "
                f"{end} bytes"
            )
        return end, _Dir((), start, root.size)

    def _root_sector(self, root: _Dir) -> bytes:
        try:
            self.src.skip_to(root.start)
            return self.src.read_exact(min(SECTOR, root.size))
        except (ImageEnded, OSError) as e:
            raise IsoUnreadable(f"root directory unreadable: {e}") from e

    # --- the walk -------------------------------------------------------------------------

    def members(self) -> Iterator[RawMember]:
        heap = self._heap
        while heap:
            offset, _, item = heapq.heappop(heap)
            if isinstance(item, _Dir):
                yield from self._directory(item)
            elif isinstance(item, _Continuation):
                self._continuation(offset, item)
            else:
                yield from self._file(offset, item)
            if self._ready and not self._root_waiting:
                yield from self._ready
                self._ready.clear()
        yield from self._ready
        self._ready.clear()
        self._unresolved_relocations()

    def _push(self, offset: int, item: _Item) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (offset, self._seq, item))

    def _warn(self, shown: str, why: str) -> None:
        if self._reporter:
            self._reporter.warn(f"{shown}: {why}")

    def _swallows(self, start: int, end: int) -> bool:
        """True when the extent start..end holds the whole next pending extent: then its own
        size is the damaged field. One that only begins inside it is the damaged one instead,
        and is found when taken (it lies in what was already read)."""
        if not self._heap:
            return False
        offset, _, item = self._heap[0]
        if not start < offset < end:
            return False
        if isinstance(item, _Dir):
            other_end = item.start + item.size
        elif isinstance(item, _Continuation):
            other_end = offset + item.length
        else:
            other_end = item.sections[0][0] + item.sections[0][1]
        return other_end <= end

    def _directory(self, d: _Dir) -> Iterator[RawMember]:
        shown = escape_path(b"/".join(d.path) or b".")
        src = self.src
        first: bytes | None = self._root_first if not d.path else None
        if first is None:
            if d.start < src.pos:
                self._warn(shown, "directory extent lies in what was already read (a loop or "
                           "an overlap); skipped with everything below it")
                return
            if self._swallows(d.start, d.start + d.size):
                self._warn(shown, "directory extent overlaps other extents of the image; "
                           "skipped with everything below it")
                return
        else:
            self._root_first = None
        open_file: list[_Pending] = []  # the sections so far of a multi-extent file
        offset = d.start
        while offset < d.start + d.size:
            size = min(SECTOR, d.start + d.size - offset)
            try:
                if first is not None:
                    sector, first = first, None
                else:
                    src.skip_to(offset)
                    sector = src.read_exact(size)
            except (ImageEnded, OSError) as e:
                self._warn(shown, f"directory unreadable from byte {offset}: {e}; the records "
                           "after it are lost")
                break
            self._sector(d, memoryview(sector), offset, open_file)
            offset += size
            if self._ready and not self._root_waiting:
                yield from self._ready
                self._ready.clear()
        if open_file:
            self._warn(open_file[0].shown(), "the last extent section of this file is missing; "
                       "skipped")
            self._done_waiting(open_file[0])
        if d.held is not None and not any(
            isinstance(item, _Continuation) and item.pending.owner is d for _, _, item in self._heap
        ):
            d.held = None  # only relocated directories in it: the writer's, not the tree's

    def _sector(self, d: _Dir, sector: memoryview, base: int, open_file: list[_Pending]) -> None:
        shown = escape_path(b"/".join(d.path) or b".")
        pos = 0
        while pos < len(sector):
            length = sector[pos]
            if length == 0:
                if any(sector[pos:]):
                    self._warn(shown, f"directory record at byte {base + pos} has length 0 "
                               "before the end of its sector; the records after it in that "
                               "sector are lost")
                return
            if length < RECORD_FIXED + 1 or pos + length > len(sector):
                self._warn(shown, f"directory record at byte {base + pos} has bad length "
                           f"{length}; the records after it in that sector are lost")
                return
            try:
                rec = parse_record(sector[pos : pos + length], self._skip or 0)
            except Damage as e:
                self._warn(shown, f"directory record at byte {base + pos}: {e}; skipped")
                pos += length
                continue
            pos += length
            if rec.is_dot:
                if not d.path and rec.ident == DOT and self._skip is None:
                    self._skip = sp_skip(rec.system_use)
                continue
            self._record(d, rec, open_file)

    def _record(self, d: _Dir, rec: Record, open_file: list[_Pending]) -> None:
        if rec.flags & FLAG_ASSOCIATED:
            return  # a resource fork or similar beside a file of the same name, never ours
        section = (rec.extent * SECTOR, rec.size)
        if open_file:
            head = open_file[0]
            if rec.ident == head.ident:
                head.sections.append(section)
                if not rec.flags & FLAG_MULTI_EXTENT:
                    open_file.clear()
                    self._sections_done(head)
                return
            self._warn(head.shown(), "the last extent section of this file is missing; skipped")
            open_file.clear()
            self._done_waiting(head)
        p = _Pending(d, rec.ident, rec.flags, rec.date_ns, [section])
        if not d.path:
            self._root_waiting += 1
        if self._skip is not None:
            try:
                p.rr.parse(rec.system_use)
            except Damage as e:
                self._damaged(p, str(e))
                return
        if rec.flags & FLAG_MULTI_EXTENT:
            open_file.append(p)
            return
        self._sections_done(p)

    def _sections_done(self, p: _Pending) -> None:
        """All records of `p` are read: wait for its continuation areas, or complete it."""
        if p.rr.continuation is None:
            self._complete(p)
            return
        block, offset, length = p.rr.continuation
        start = block * SECTOR + offset
        if p.hops >= MAX_HOPS:
            self._damaged(p, f"more than {MAX_HOPS} continuation areas")
        elif offset >= SECTOR or not 0 < length <= SECTOR - offset:
            self._damaged(p, f"continuation area (CE) of {length} bytes at offset {offset} "
                          "does not lie in one block")
        elif start + length > self._end:
            self._damaged(p, f"continuation area (CE) at byte {start} lies past the end of "
                          f"the image ({self._end} bytes)")
        else:
            p.hops += 1
            self._push(start, _Continuation(p, length))

    def _continuation(self, offset: int, c: _Continuation) -> None:
        p = c.pending
        src = self.src
        if offset < src.pos:
            self._damaged(p, f"continuation area (CE) at byte {offset} lies in what was "
                          "already read (it points back, maybe at itself)")
            return
        try:
            src.skip_to(offset)
            area = src.read_exact(c.length)
            p.rr.parse(area)
        except (ImageEnded, OSError) as e:
            self._damaged(p, f"continuation area (CE) unreadable: {e}")
            return
        except Damage as e:
            self._damaged(p, str(e))
            return
        self._sections_done(p)

    def _damaged(self, p: _Pending, why: str) -> None:
        below = " with everything below it" if p.flags & FLAG_DIRECTORY else ""
        self._warn(p.shown(), f"{why}; skipped{below}")
        self._done_waiting(p)

    def _done_waiting(self, p: _Pending) -> None:
        if not p.parent:
            self._root_waiting -= 1

    def _complete(self, p: _Pending) -> None:
        """The record is whole: check it, then emit it or wait for its extent."""
        rr = p.rr
        name = bytes(rr.name) if self._skip is not None and rr.has_name else iso_name(p.ident)
        p.path = (*p.parent, name)
        try:
            if not name or name in (b".", b"..") or b"/" in name or b"\x00" in name:
                raise Damage(f"bad name {escape_path(name)}")
            if rr.relocated or rr.child_link is not None:
                self._relocation_record(p)
                self._done_waiting(p)
                return
            entry = self._entry(p)
        except Damage as e:
            self._damaged(p, str(e))
            return
        self._done_waiting(p)
        if p.owner.held is not None:
            self._ready.append(p.owner.held)
            p.owner.held = None
        owner = p.owner
        if entry.kind is Kind.DIR and not p.parent and name in RELOCATION_DIRECTORIES:
            start, size = p.sections[0]
            self._push(start, _Dir(p.path, start, size, RawMember(p.path, entry)))
            return
        if not p.parent:
            offset = p.sections[0][0] if entry.kind is Kind.FILE and entry.size else None
            self.root_listing.append((name, entry.kind, offset))
        if entry.kind is Kind.DIR:
            start, size = p.sections[0]
            self._emit(owner, RawMember(p.path, entry))
            self._push(start, _Dir(p.path, start, size, relocation=owner.relocation))
        elif entry.kind is Kind.FILE and entry.size:
            p.entry = entry
            p.rr = _DONE  # a file may wait long for its data: keep only what it needs
            self._push(p.sections[0][0], p)
        else:
            self._emit(owner, RawMember(p.path, entry))

    # --- Rock Ridge relocation (genisoimage -R moves directories deeper than 8 levels) -----

    def _relocation_record(self, p: _Pending) -> None:
        rr = p.rr
        if rr.relocated:  # the moved directory itself, under rr_moved: read it from here
            if not p.flags & FLAG_DIRECTORY:
                raise Damage("relocated (RE) record of a non-directory")
            self._check_directory(p)
            start, size = p.sections[0]
            relocation = self._relocations.setdefault(start, _Relocation())
            if relocation.moved is not None:
                raise Damage("a second RE record for one directory")
            relocation.moved = p.path
            self._push(start, _Dir(p.path, start, size, relocation=relocation))
            return
        assert rr.child_link is not None  # a placeholder where the moved directory belongs
        start = rr.child_link * SECTOR
        if rr.mode is not None and not stat.S_ISDIR(rr.mode):
            raise Damage("CL record of a non-directory")
        if start >= self._end:
            raise Damage("CL record pointing past the end of the image")
        relocation = self._relocations.setdefault(start, _Relocation())
        if relocation.target is not None:
            raise Damage("a second CL record for one directory")
        relocation.target = p.path
        relocation.outer = p.owner.relocation
        entry = LowerEntry(
            kind=Kind.DIR,
            path=p.path,
            mode=rr.mode & 0o7777 if rr.mode is not None else _PLAIN_DIR_MODE,
            uid=rr.uid,
            gid=rr.gid,
            uname="",
            gname="",
            mtime_ns=rr.mtime_ns if rr.mtime_ns is not None else p.date_ns,
        )
        self._emit(p.owner, RawMember(p.path, entry))
        self._release()

    @staticmethod
    def _final(path: Path, relocation: _Relocation | None) -> Path | None:
        """Where a member read under moved directories belongs, once every CL is known."""
        while relocation is not None:
            if relocation.target is None or relocation.moved is None:
                return None
            path = (*relocation.target, *path[len(relocation.moved) :])
            relocation = relocation.outer
        return path

    def _emit(self, owner: _Dir, m: RawMember) -> None:
        if owner.relocation is None:
            self._ready.append(m)
            return
        owner.relocation.held.append(m)
        self._release()

    def _release(self) -> None:
        out: list[RawMember] = []
        for relocation in self._relocations.values():
            if relocation.held and self._final((), relocation) is not None:
                for m in relocation.held:
                    final = self._final(m.path, relocation)
                    assert final is not None
                    m.path = m.entry.path = final
                    out.append(m)
                relocation.held = []
        out.sort(key=lambda m: len(m.path))  # parents first, read order among equals
        self._ready.extend(out)

    def _unresolved_relocations(self) -> None:
        for relocation in self._relocations.values():
            if relocation.moved is not None and self._final((), relocation) is None:
                self._warn(escape_path(b"/".join(relocation.moved)),
                           "relocated directory (RE) that no CL record places; skipped with "
                           "everything below it")
            elif relocation.moved is None and relocation.target is not None:
                self._warn(escape_path(b"/".join(relocation.target)),
                           "relocated directory (CL) whose contents were not found; left empty")

    def _entry(self, p: _Pending) -> LowerEntry:
        rr = p.rr
        is_dir = bool(p.flags & FLAG_DIRECTORY)
        if rr.mode is None:
            kind: Kind | None = Kind.DIR if is_dir else Kind.FILE
            perm = _PLAIN_DIR_MODE if is_dir else _PLAIN_FILE_MODE
        else:
            kind = KIND_OF_FILE_TYPE.get(stat.S_IFMT(rr.mode))
            perm = rr.mode & 0o7777
        if kind is None:
            raise Damage(f"unsupported file type {stat.S_IFMT(rr.mode or 0):o}")
        if (kind is Kind.DIR) != is_dir:
            raise Damage("the record's directory flag and its Rock Ridge mode disagree")
        entry = LowerEntry(
            kind=kind,
            path=p.path,
            mode=perm,
            uid=rr.uid,
            gid=rr.gid,
            uname="",
            gname="",
            mtime_ns=rr.mtime_ns if rr.mtime_ns is not None else p.date_ns,
        )
        if kind is Kind.DIR:
            self._check_directory(p)
        elif kind is Kind.FILE:
            entry.size = self._check_data(p)
            if not entry.size and rr.nlink > 1 and rr.serial is not None:
                first = self._empty_links.setdefault(rr.serial, p.path)
                if first != p.path:
                    entry.kind, entry.link_path = Kind.HARDLINK, first
                    return entry
            if not entry.size:
                entry.data = _SectionData(self.src, [(0, 0)], None)
        elif kind is Kind.SYMLINK:
            if rr.target is None:
                raise Damage("symbolic link without a Rock Ridge target (SL)")
            entry.symlink = bytes(rr.target)
        else:
            entry.rdev = rr.rdev
        return entry

    def _check_directory(self, p: _Pending) -> None:
        if len(p.sections) != 1:
            raise Damage("directory of several extent sections")
        start, size = p.sections[0]
        if not 0 < size <= DIRECTORY_MAX:
            raise Damage(f"directory of {size} bytes")
        if start + size > self._end:
            raise Damage(f"directory extent (bytes {start} to {start + size}) lies past the "
                         f"end of the image ({self._end} bytes)")

    def _check_data(self, p: _Pending) -> int:
        total = 0
        previous_end = 0
        for start, size in p.sections:
            if not size:
                continue
            if start + size > self._end:
                raise Damage(f"data (bytes {start} to {start + size}) lies past the end of the "
                             f"image ({self._end} bytes)")
            if start < previous_end:
                raise Damage("extent sections out of order")
            previous_end = start + size
            total += size
        p.sections = [s for s in p.sections if s[1]] or [(p.sections[0][0], 0)]
        return total

    def _file(self, offset: int, p: _Pending) -> Iterator[RawMember]:
        entry = p.entry
        assert entry is not None
        src = self.src
        if p.owner.relocation is not None:
            final = self._final(p.path, p.owner.relocation)
            if final is None:
                return  # in a moved directory no CL record places: warned at the end
            p.path = entry.path = final
        if offset < src.pos:
            last = self._last_data
            if last is not None and last[:2] == (offset, entry.size):
                entry.kind, entry.link_path, entry.size = Kind.HARDLINK, last[2], 0
                yield RawMember(p.path, entry)
            else:
                self._warn(p.shown(), "its data lies in what was already read (before its "
                           "directory record, or overlapping other data); skipped")
            return
        end = p.sections[-1][0] + p.sections[-1][1]
        if self._swallows(offset, p.sections[0][0] + p.sections[0][1]):
            self._warn(p.shown(), "its data overlaps other extents of the image; skipped")
            return
        try:
            src.skip_to(offset)
        except (ImageEnded, OSError) as e:
            self._warn(p.shown(), f"data unreadable: {e}; skipped")
            return
        data = _SectionData(src, p.sections, self._progress)
        entry.data = data
        self._last_data = (offset, entry.size, p.path)
        yield RawMember(p.path, entry)
        left = data.remaining
        if left:
            if self._progress:
                self._progress(left)
            # when this fails, what comes after is past the end too, and says so
            with contextlib.suppress(ImageEnded, OSError):
                src.skip_to(max(end, src.pos))

