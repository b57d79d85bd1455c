"""Incremental archives (`create --listed-incremental SNAPSHOT`): the snapshot file, what a
level-N run archives, the list of names that disappeared, and the chain facts of the manifest.

GNU tar's model, per entry instead of per directory: a run without SNAPSHOT (or with
`--level 0`) is level 0 and archives everything; a run with SNAPSHOT archives every directory,
the entries that are new or changed since the snapshot's run, and `MANIFEST.deleted`, the
lower (encrypted) paths of the names that are gone. An entry is unchanged when its type,
device, inode, size, mtime, ctime, mode and owner are all as recorded (GNU tar decides on
mtime/ctime, inode and device; mode and owner are compared too because `--stable-keys` writes an
xattr, which moves ctime, so there ctime is not compared). Hard-linked names go together: when
one of them is archived, all are, so a restore links them again.

The snapshot file (text, ASCII, one item per line, '\\n'-terminated; mode 0600 because it names
every plaintext path; it holds no key material, only the public key signatures):

    ecarchive-snapshot 1
    chain 0123456789abcdef0123456789abcdef   (random at level 0; every level of a chain keeps it)
    level 2                                  (of the archive this snapshot was written with)
    archive 0123456789abcdef                 (that archive's id, see ChainFacts)
    file-key-sig 0123456789abcdef
    fnek-sig fedcba9876543210                ("-" when names are stored in clear)
    key-bytes 16
    lower-root Private
    entries 2
    d 2049 131073 4096 1764151200000000000 1764151200000000000 755 1000 1000 docs
    f 2049 131074 12 1764151200000000000 1764151200000000000 644 1000 1000 docs/a.txt

Entry lines: type (model.Kind letters; a hard link is `f`), st_dev, st_ino, st_size, st_mtime
and st_ctime in nanoseconds, mode (octal permission bits), uid, gid, and the plaintext path
relative to SOURCE with every byte outside '!'..'~' and '%' written as %XX.

The snapshot is replaced (rename of a temporary file beside it) only after every volume of the
archive was written; a failed or interrupted run leaves it as it was.

`MANIFEST.deleted` holds the lower paths (`Private/ECRYPTFS_FNEK_ENCRYPTED.…`), each followed
by a NUL byte, outermost names only (a deleted directory is listed, not its contents), and also
the names whose type changed (so a directory that became a file is removed first). It is
applied before the archive is extracted over the previous levels: `xargs -0r rm -rf -- <
MANIFEST.deleted`. The manifest hashes it like every member, so the HMAC covers it. It is left
out when nothing was deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from .errors import EcarchiveError
from .manifest import escape, unescape
from .model import Entry, Kind
from .plan import exclude_pattern

SNAPSHOT_MAGIC = b"ecarchive-snapshot 1\n"
DELETED_NAME = b"MANIFEST.deleted"
DELETED_MODE = 0o644
SNAPSHOT_MODE = 0o600
CHAIN_HEX = 32
ARCHIVE_HEX = 16
NO_PARENT = "-"
# A snapshot names every path of a tree: bound what we read by what a real one can be.
MAX_SNAPSHOT_BYTES = 1 << 32
_HEX = re.compile(rb"[0-9a-f]+")
_FACT_KEYS = (
    b"chain",
    b"level",
    b"archive",
    b"file-key-sig",
    b"fnek-sig",
    b"key-bytes",
    b"lower-root",
    b"entries",
)
_KINDS = {k.value.encode(): k for k in Kind if k is not Kind.HARDLINK}

NameCipher = Callable[[bytes], bytes]


class SnapshotError(EcarchiveError):
    """The snapshot file cannot be read, does not fit this run, or cannot be written."""


@dataclass(frozen=True, slots=True)
class Record:
    """What the snapshot keeps of one entry: enough to tell whether it changed."""

    kind: Kind
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int
    uid: int
    gid: int

    def line(self, rel: bytes) -> bytes:
        return b"%s %d %d %d %d %d %o %d %d %s\n" % (
            self.kind.value.encode(),
            self.dev,
            self.ino,
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            self.mode,
            self.uid,
            self.gid,
            escape(rel),
        )

    def unchanged(self, old: Record, *, ctime: bool) -> bool:
        """GNU tar's decision (mtime, ctime, size, inode, device), plus mode and owner."""
        same = replace(self, ctime_ns=old.ctime_ns) if not ctime else self
        return same == old


@dataclass(frozen=True, slots=True)
class Keying:
    """The facts of the key setup that decide the lower names: a chain keeps them."""

    file_sig: str
    fnek_sig: str | None
    key_bytes: int
    lower_root: bytes


@dataclass(frozen=True, slots=True)
class ChainFacts:
    """The manifest's `chain` line: which chain, which level, which archive it follows.

    `archive` identifies this archive (a hash of its chain, level, parent and the snapshot it
    writes, so a re-run over the same tree gives the same id); `after` is the archive it
    applies on top of (`-` at level 0). A restore refuses an archive whose `after` is not the
    archive restored just before it.
    """

    chain: str
    level: int
    archive: str
    after: str = NO_PARENT

    def text(self) -> bytes:
        return b"%s level %d archive %s after %s" % (
            self.chain.encode(),
            self.level,
            self.archive.encode(),
            self.after.encode(),
        )

    @classmethod
    def parse(cls, text: bytes) -> ChainFacts:
        parts = text.split(b" ")
        if (
            len(parts) != 7
            or parts[1::2] != [b"level", b"archive", b"after"]
            or not _is_hex(parts[0], CHAIN_HEX)
            or not parts[2].isdigit()
            or not _is_hex(parts[4], ARCHIVE_HEX)
            or not (parts[6] == NO_PARENT.encode() or _is_hex(parts[6], ARCHIVE_HEX))
        ):
            raise ValueError(f"bad chain facts {text!r}")
        return cls(parts[0].decode(), int(parts[2]), parts[4].decode(), parts[6].decode())


def _is_hex(text: bytes, width: int) -> bool:
    return len(text) == width and _HEX.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Snapshot:
    chain: str
    level: int
    archive: str
    keying: Keying
    records: dict[bytes, Record]

    def render(self) -> Iterator[bytes]:
        k = self.keying
        yield SNAPSHOT_MAGIC
        yield b"chain %s\n" % self.chain.encode()
        yield b"level %d\n" % self.level
        yield b"archive %s\n" % self.archive.encode()
        yield b"file-key-sig %s\n" % k.file_sig.encode()
        yield b"fnek-sig %s\n" % (k.fnek_sig or "-").encode()
        yield b"key-bytes %d\n" % k.key_bytes
        yield b"lower-root %s\n" % escape(k.lower_root)
        yield b"entries %d\n" % len(self.records)
        for rel in sorted(self.records):
            yield self.records[rel].line(rel)


def _parse_record(number: int, raw: bytes) -> tuple[bytes, Record]:
    parts = raw.split(b" ")
    if len(parts) != 10 or parts[0] not in _KINDS:
        raise SnapshotError(f"snapshot line {number} is malformed")
    try:
        numbers = [int(p) for p in parts[1:6]]
        mode = int(parts[6], 8)
        uid, gid = int(parts[7]), int(parts[8])
        rel = unescape(parts[9])
    except ValueError as e:
        raise SnapshotError(f"snapshot line {number} is malformed") from e
    if not rel or rel.startswith(b"/") or b"\0" in rel:
        raise SnapshotError(f"snapshot line {number} has a bad path")
    dev, ino, size, mtime, ctime = numbers
    return rel, Record(_KINDS[parts[0]], dev, ino, size, mtime, ctime, mode, uid, gid)


def parse_snapshot(data: bytes) -> Snapshot:
    if not data.startswith(SNAPSHOT_MAGIC):
        raise SnapshotError("not an ecarchive snapshot (bad first line)")
    lines = data[len(SNAPSHOT_MAGIC) :].split(b"\n")
    if lines.pop() != b"":
        raise SnapshotError("snapshot does not end with a newline (truncated?)")
    head = len(_FACT_KEYS)
    values: dict[bytes, bytes] = {}
    for raw in lines[:head]:
        key, _, value = raw.partition(b" ")
        values[key] = value
    if list(values) != list(_FACT_KEYS):
        raise SnapshotError("snapshot header is malformed")
    try:
        chain, archive = values[b"chain"], values[b"archive"]
        if not _is_hex(chain, CHAIN_HEX) or not _is_hex(archive, ARCHIVE_HEX):
            raise ValueError("bad chain or archive id")
        fnek = values[b"fnek-sig"].decode("ascii")
        keying = Keying(
            file_sig=values[b"file-key-sig"].decode("ascii"),
            fnek_sig=None if fnek == "-" else fnek,
            key_bytes=int(values[b"key-bytes"]),
            lower_root=unescape(values[b"lower-root"]),
        )
        level, count = int(values[b"level"]), int(values[b"entries"])
    except (ValueError, UnicodeDecodeError) as e:
        raise SnapshotError(f"snapshot header is malformed: {e}") from e
    body = lines[head:]
    if count != len(body):
        raise SnapshotError(f"snapshot says {count} entries but holds {len(body)} (truncated?)")
    records = dict(_parse_record(n, raw) for n, raw in enumerate(body, start=head + 2))
    return Snapshot(chain.decode(), level, archive.decode(), keying, records)


def read_snapshot(path: str) -> Snapshot | None:
    """The snapshot at `path`, or None when there is none (the run is then level 0)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SnapshotError(f"{path}: cannot open the snapshot: {e.strerror}") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SNAPSHOT_BYTES:
            raise SnapshotError(f"{path}: not a snapshot file")
        try:
            data = f.read(st.st_size + 1)
        except OSError as e:
            raise SnapshotError(f"{path}: cannot read the snapshot: {e.strerror}") from e
    try:
        return parse_snapshot(data)
    except SnapshotError as e:
        raise SnapshotError(
            f"{path}: {e}", hint="remove it, or give --level 0 to start a new chain"
        ) from e


def record_of(entry: Entry) -> Record:
    kind = Kind.FILE if entry.kind is Kind.HARDLINK else entry.kind
    size = entry.plain_size if kind is Kind.FILE else 0
    return Record(
        kind,
        entry.dev,
        entry.ino,
        size,
        entry.mtime_ns,
        entry.ctime_ns,
        entry.mode,
        entry.uid,
        entry.gid,
    )


def _from_source(entry: Entry, lower_root: bytes) -> bool:
    """Entries that stand for a SOURCE path: not RESTORE.txt, the manifest or the lower root."""
    return entry.data is None and entry.path != lower_root and bool(entry.rel)


@dataclass(frozen=True, slots=True)
class Selection:
    entries: tuple[Entry, ...]  # what this level archives, in plan order
    deleted: tuple[bytes, ...]  # lower paths to remove before extracting, sorted
    snapshot: Snapshot  # to be written once the archive is complete


@dataclass(frozen=True, slots=True)
class Run:
    """What the run is: its level and chain, decided from SNAPSHOT and `--level`."""

    previous: Snapshot | None  # None: level 0
    chain: str
    level: int
    keying: Keying

    @classmethod
    def start(cls, snapshot: Snapshot | None, keying: Keying, *, full: bool) -> Run:
        if snapshot is None or full:
            return cls(None, os.urandom(CHAIN_HEX // 2).hex(), 0, keying)
        if snapshot.keying != keying:
            raise SnapshotError(
                "the snapshot's chain was written with another key setup "
                f"({_describe(snapshot.keying)}; this run: {_describe(keying)})",
                hint="use the same passphrase, --key-bytes, --fnek and --lower-name, "
                "or --level 0 to start a new chain",
            )
        return cls(snapshot, snapshot.chain, snapshot.level + 1, keying)

    def restore_note(self) -> bytes:
        """The paragraph RESTORE.txt gets about the chain."""
        return chain_text(self.chain, self.level)

    def select(
        self, entries: Sequence[Entry], encrypt: NameCipher, *, check_ctime: bool = True
    ) -> Selection:
        lower_root = self.keying.lower_root
        records = {e.rel: record_of(e) for e in entries if _from_source(e, lower_root)}
        keep = _changed_paths(entries, records, self.previous, lower_root, check_ctime)
        chosen = tuple(
            e
            for e in entries
            if e.kind is Kind.DIR or not _from_source(e, lower_root) or e.path in keep
        )
        deleted = _deleted(records, self.previous, lower_root, encrypt)
        after = self.previous.archive if self.previous else NO_PARENT
        archive = _archive_id(self.chain, self.level, after, records)
        snapshot = Snapshot(self.chain, self.level, archive, self.keying, records)
        return Selection(chosen, deleted, snapshot)

    def facts(self, selection: Selection) -> ChainFacts:
        after = self.previous.archive if self.previous else NO_PARENT
        return ChainFacts(self.chain, self.level, selection.snapshot.archive, after)


def _describe(k: Keying) -> str:
    return (
        f"key {k.file_sig}, name key {k.fnek_sig or 'none'}, {k.key_bytes}-byte keys, "
        f"lower directory {os.fsdecode(k.lower_root)}"
    )


def _changed_paths(
    entries: Sequence[Entry],
    records: dict[bytes, Record],
    previous: Snapshot | None,
    lower_root: bytes,
    check_ctime: bool,
) -> set[bytes]:
    """Lower paths of the non-directory entries to archive, hard-link groups whole."""
    groups: dict[bytes, list[bytes]] = {}  # FILE lower path -> the paths of its names
    for e in entries:
        if e.kind is Kind.HARDLINK:
            groups.setdefault(e.link_target, [e.link_target]).append(e.path)
    keep: set[bytes] = set()
    for e in entries:
        if e.kind is Kind.DIR or not _from_source(e, lower_root):
            continue
        old = previous.records.get(e.rel) if previous else None
        if old is None or not records[e.rel].unchanged(old, ctime=check_ctime):
            data_path = e.link_target if e.kind is Kind.HARDLINK else e.path
            keep.update(groups.get(data_path, [e.path]))
    return keep


def _deleted(
    records: dict[bytes, Record],
    previous: Snapshot | None,
    lower_root: bytes,
    encrypt: NameCipher,
) -> tuple[bytes, ...]:
    """Lower paths of names gone (or of another type) since the snapshot, outermost only."""
    if previous is None:
        return ()
    gone: set[bytes] = set()
    out: list[bytes] = []
    for rel in sorted(previous.records):
        now = records.get(rel)
        if now is not None and now.kind is previous.records[rel].kind:
            continue
        parts = rel.split(b"/")
        if any(b"/".join(parts[:i]) in gone for i in range(1, len(parts))):
            continue
        gone.add(rel)
        out.append(b"/".join([lower_root, *(encrypt(p) for p in parts)]))
    return tuple(sorted(out))


def _archive_id(chain: str, level: int, after: str, records: dict[bytes, Record]) -> str:
    h = hashlib.sha256(
        b"ecarchive archive id\0%s\0%d\0%s\0" % (chain.encode(), level, after.encode())
    )
    for rel in sorted(records):
        h.update(records[rel].line(rel))
    return h.hexdigest()[:ARCHIVE_HEX]


def deleted_content(deleted: Iterable[bytes]) -> bytes:
    return b"".join(path + b"\0" for path in deleted)


def parse_deleted(data: bytes) -> list[bytes]:
    """The lower paths of a MANIFEST.deleted (unchecked: the reader validates each)."""
    if not data:
        return []
    if not data.endswith(b"\0"):
        raise ValueError("MANIFEST.deleted does not end with a NUL byte")
    return data[:-1].split(b"\0")


def with_deleted(entries: Sequence[Entry], deleted: Sequence[bytes]) -> tuple[Entry, ...]:
    """`entries` with MANIFEST.deleted added after the other top-level files (RESTORE.txt),
    so a tar stream brings the list before the lower tree. Unchanged when nothing is gone."""
    if not deleted:
        return tuple(entries)
    content = deleted_content(deleted)
    at = next((i for i, e in enumerate(entries) if e.data is None), len(entries))
    template = entries[at] if at < len(entries) else entries[0]
    entry = Entry(
        kind=Kind.FILE,
        path=DELETED_NAME,
        mode=DELETED_MODE,
        uid=template.uid,
        gid=template.gid,
        uname=template.uname,
        gname=template.gname,
        mtime_ns=template.mtime_ns,
        size=len(content),
        plain_size=len(content),
        data=content,
    )
    return (*entries[:at], entry, *entries[at:])


def deletions_in_first_volume(volumes: Sequence[tuple[Entry, ...]]) -> list[tuple[Entry, ...]]:
    """The split repeats top-level files in every volume; MANIFEST.deleted belongs to volume 1
    only: applied again before volume 2 it would remove a name whose type changed and that
    volume 1 just restored. A volume without it is smaller, so it still fits its medium."""
    return [
        v if n == 0 else tuple(e for e in v if e.path != DELETED_NAME)
        for n, v in enumerate(volumes)
    ]


def chain_text(chain: str, level: int) -> bytes:
    deleted = DELETED_NAME.decode()
    return f"""
This archive is level {level} of the incremental chain {chain}
(level 0 is the full backup; each level holds every directory, what changed since the level
before it and, in {deleted}, the encrypted lower names that disappeared, NUL-separated).

Restore a chain with the kernel: in one empty directory, for every archive from level 0 up,
in order, first remove the names it lists as deleted, then extract it over the others:

  tar -xOf LEVEL.tar {deleted} 2>/dev/null | xargs -0r rm -rf --
  tar -xpf LEVEL.tar --numeric-owner
  (an ISO: mount it as disc/; [ -f disc/{deleted} ] && xargs -0r rm -rf -- < disc/{deleted};
   then cp -a disc/. . and umount disc)

then add the passphrase and mount the lower directory as above. Without the kernel:

  ecarchive restore LEVEL0 LEVEL1 ... LEVELN /where/you/want/it
""".encode()


def snapshot_excludes(snapshot: str, source: str) -> tuple[str, ...]:
    """Never archive the snapshot (nor its temporary) when it lies inside SOURCE."""
    pattern = exclude_pattern(snapshot, source)
    if pattern is None:
        return ()
    head, name = os.path.split(pattern)
    return (pattern, os.path.join(head, f".{name}.*.tmp"))


class SnapshotWriter:
    """Writes the new snapshot to a temporary beside SNAPSHOT and renames it over SNAPSHOT
    only on `commit`: a run that fails or is interrupted leaves the old one in place."""

    def __init__(self, path: str) -> None:
        self.path = path
        directory, name = os.path.split(os.path.abspath(path))
        try:
            fd, self._tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        except OSError as e:
            raise SnapshotError(f"{path}: cannot write the snapshot here: {e.strerror}") from e
        self._file = os.fdopen(fd, "wb")
        self._dir = directory

    def commit(self, snapshot: Snapshot) -> None:
        try:
            with self._file as f:
                for piece in snapshot.render():
                    f.write(piece)
                f.flush()
                os.fchmod(f.fileno(), SNAPSHOT_MODE)
                os.fsync(f.fileno())
            os.replace(self._tmp, self.path)
            dir_fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            self.discard()
            raise SnapshotError(
                f"{self.path}: cannot write the snapshot: {e.strerror}",
                hint="the archive is complete; the next run will be relative to the old snapshot",
            ) from e

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


class Incremental:
    """One `create --listed-incremental` run, in the order create needs it: the level and the
    RESTORE.txt paragraph before the walk, the selection after it, the snapshot at the end."""

    def __init__(
        self, path: str, keying: Keying | None, *, full: bool = False, check_ctime: bool = True
    ) -> None:
        """`keying` None: sizes only (--print-size), the snapshot's own key setup is taken."""
        self.path = path
        previous = None if full else read_snapshot(path)
        if keying is None:
            keying = previous.keying if previous else Keying("", None, 0, b"")
        self.run = Run.start(previous, keying, full=full)
        self.check_ctime = check_ctime
        self.selection: Selection | None = None

    def excludes(self, source: str) -> tuple[str, ...]:
        return snapshot_excludes(self.path, source)

    def restore_note(self) -> bytes:
        return self.run.restore_note()

    def select(self, entries: Sequence[Entry], encrypt: NameCipher) -> tuple[Entry, ...]:
        """What this level archives, MANIFEST.deleted included."""
        self.selection = self.run.select(entries, encrypt, check_ctime=self.check_ctime)
        return with_deleted(self.selection.entries, self.selection.deleted)

    def chain(self) -> bytes:
        """The manifest's chain facts (after `select`)."""
        assert self.selection is not None
        return self.run.facts(self.selection).text()

    @contextlib.contextmanager
    def committing(self) -> Iterator[None]:
        """Replace SNAPSHOT when the body (writing every volume) returns, never otherwise."""
        assert self.selection is not None
        writer = SnapshotWriter(self.path)
        try:
            yield
        except BaseException:
            writer.discard()
            raise
        writer.commit(self.selection.snapshot)
