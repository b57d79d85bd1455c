"""Restore of an incremental chain: `ecarchive restore FULL INC1 INC2 … DEST`.

Before anything is written, every archive's manifest is read (its HMAC checked with the
passphrase) and the order checked: each archive names the one it follows (ChainFacts.after),
so an archive out of order or from another chain is refused. Then, per archive: remove the
names its MANIFEST.deleted lists (decrypted to plaintext paths; reached through directory file
descriptors without following symlinks), then restore it over DEST as a normal archive.

DEST remembers the last archive of a chain restored into it in the xattr `user.ecarchive.chain`
("CHAIN ARCHIVE LEVEL VOLUME VOLUMES"), so levels can also be restored one command after
another; a level above 0 is refused when DEST does not hold (all of) the archive it follows.
The volumes of one level may come in any order; the levels in the order they were made.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TextIO

from .display import escape_path
from .errors import ArchiveUnreadable, EcarchiveError, Reporter
from .fsio import lstat_at, open_root, open_subdir
from .incremental import DELETED_NAME, ChainFacts, parse_deleted
from .manifest import MANIFEST_NAME, Line, ManifestError, ManifestReader
from .progress import Tally
from .read.decode import DamagedEntry, Keys
from .read.listing import Style
from .read.members import top_level_files
from .read.restore import Existing, restore_archive
from .read.select import Selection

STDIN = "-"
DEST_XATTR = "user.ecarchive.chain"
MAX_SIDE_FILE_BYTES = 1 << 30  # as verify: larger is not ours
_SIDE_FILES = (MANIFEST_NAME, DELETED_NAME)
_BAD_COMPONENTS = (b"", b".", b"..")

Progress = Callable[[int], None]


class ChainRefused(EcarchiveError):
    """The archives do not form a chain that applies to DEST; nothing was written."""


@dataclass(frozen=True, slots=True)
class Level:
    """One archive given to restore, as far as the chain is concerned."""

    source: str
    facts: ChainFacts | None  # None: not an incremental archive
    lower_root: bytes = b""
    deleted: tuple[bytes, ...] = ()  # lower paths from MANIFEST.deleted
    volume: int = 1
    volumes: int = 1

    def describe(self) -> str:
        if self.facts is None:
            return f"{self.source} (not part of a chain)"
        vol = f", volume {self.volume} of {self.volumes}" if self.volumes > 1 else ""
        return f"{self.source} (level {self.facts.level}{vol} of chain {self.facts.chain})"


def _bounded(blocks: Iterator[bytes], what: str) -> bytes:
    data = bytearray()
    for block in blocks:
        data += block
        if len(data) > MAX_SIDE_FILE_BYTES:
            raise ArchiveUnreadable(f"{what}: too large to be ecarchive's")
    return bytes(data)


def _file_blocks(fd: int) -> Iterator[bytes]:
    with os.fdopen(fd, "rb") as f:
        while block := f.read(1 << 20):
            yield block


class _Side:
    """What a chain needs of an archive's side files, read as they pass: the manifest through
    a ManifestReader (its HMAC on the way, its lines not kept: a crafted manifest of millions
    of lines must not cost memory), the line that lists MANIFEST.deleted, and that file."""

    def __init__(self, source: str, keys: Keys) -> None:
        self.source = source
        self.manifest: ManifestReader | None = None
        self.listed: Line | None = None
        self.deleted: bytes | None = None
        self._key = keys.file_key

    def take(self, name: bytes, blocks: Iterator[bytes], what: str) -> None:
        if name == DELETED_NAME:
            self.deleted = _bounded(blocks, what)
            return
        reader = self.manifest = ManifestReader(self._key)
        try:
            for block in blocks:
                for line in reader.feed(block):
                    if self.listed is None and line.path == DELETED_NAME:
                        self.listed = line
        except ManifestError as e:
            raise ArchiveUnreadable(f"{self.source}: {e}") from e


def side_files(source: str, keys: Keys) -> _Side:
    """MANIFEST.ecarchive and MANIFEST.deleted from the top of an archive file or an extracted
    archive directory (one pass over the headers, seeking over member data)."""
    found = _Side(source, keys)
    if os.path.isdir(source):
        for name in _SIDE_FILES:
            try:
                fd = os.open(os.path.join(os.fsencode(source), name), os.O_RDONLY | os.O_NOFOLLOW)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise ArchiveUnreadable(
                    f"{source}: cannot read {name.decode()}: {e.strerror}"
                ) from e
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                continue
            found.take(name, _file_blocks(fd), f"{source}/{name.decode()}")
        return found
    if not os.path.exists(source):
        raise ArchiveUnreadable(f"{source}: no such file or directory")
    # only the formats ecarchive writes (NoArchiveFound for others), as the restore reads them
    for path, blocks in top_level_files(source, _SIDE_FILES):
        found.take(path, blocks, f"{source}: {path.decode()}")
    return found


def read_level(source: str, keys: Keys) -> Level:
    """The chain facts and deletion list of SOURCE, authenticated by the manifest's HMAC."""
    if source == STDIN:
        return Level(source, None)
    found = side_files(source, keys)
    reader = found.manifest
    if reader is None:
        return Level(source, None)
    try:
        m = reader.close()
    except ManifestError as e:
        raise ArchiveUnreadable(f"{source}: {e}") from e
    if m.chain is None:
        return Level(source, None)
    try:
        facts = ChainFacts.parse(m.chain)
    except ValueError as e:
        raise ArchiveUnreadable(f"{source}: manifest: {e}") from e
    if m.file_sig != keys.file_key.sig_hex or not reader.mac_ok():
        raise ChainRefused(
            f"{source}: its manifest does not verify with this passphrase, so its list of "
            "deleted names cannot be trusted",
            hint=f"check the passphrase; 'ecarchive verify {source}' tells what is wrong",
        )
    listed, data = found.listed, found.deleted
    if (listed is None) != (data is None) or (
        listed is not None
        and data is not None
        and (listed.digest is None or hashlib.sha256(data).digest() != listed.digest)
    ):
        raise ChainRefused(f"{source}: {DELETED_NAME.decode()} does not match the manifest")
    try:
        deleted = parse_deleted(data or b"")
    except ValueError as e:
        raise ChainRefused(f"{source}: {e}") from e
    return Level(source, facts, m.lower_root, tuple(deleted), m.volume, m.volumes)


def list_deletions(
    source: str,
    passphrase: bytes,
    reporter: Reporter,
    out: TextIO | None = None,
    selection: Selection | None = None,
    style: Style = Style.SHORT,
) -> None:
    """`list`: one line `x  -  PATH` per name the archive deletes (see read.listing; with
    `style` JSON an object {"type": "x", "path": PATH}), only those `selection` wants."""
    if source == STDIN or not _rereadable(source):
        return
    chosen = selection or Selection()
    keys = Keys(passphrase)
    try:
        level = read_level(source, keys)
    except ArchiveUnreadable:
        return  # its damage is the listing's to report; a chain's deletions need the manifest
    stream = out if out is not None else sys.stdout
    for parts in _deleted_paths(level, keys, reporter, chosen):
        plain = b"/".join(parts)
        if style is Style.JSON:
            stream.write(json.dumps({"type": "x", "path": os.fsdecode(plain)}) + "\n")
        else:
            stream.write(f"x\t-\t{escape_path(plain)}\n")
    stream.flush()


@dataclass(frozen=True, slots=True)
class Held:
    """What a destination holds after an archive of a chain was restored into it."""

    chain: str
    archive: str
    level: int
    volume: int
    volumes: int
    where: str  # for messages

    @classmethod
    def of(cls, level: Level) -> Held:
        assert level.facts is not None
        f = level.facts
        return cls(f.chain, f.archive, f.level, level.volume, level.volumes, level.describe())

    def value(self) -> bytes:
        return f"{self.chain} {self.archive} {self.level} {self.volume} {self.volumes}".encode()


def dest_state(dest: str) -> Held | None:
    """What was last restored into DEST (its xattr), or None."""
    try:
        raw = os.getxattr(dest, DEST_XATTR)
        chain, archive, level, volume, volumes = raw.decode("ascii").split(" ")
        vol = f", volume {volume} of {volumes}" if volumes != "1" else ""
        where = f"what the destination holds (level {level}{vol})"
        return Held(chain, archive, int(level), int(volume), int(volumes), where)
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _record(dest: str, level: Level, reporter: Reporter) -> None:
    try:
        if level.facts is None:
            os.removexattr(dest, DEST_XATTR)
        else:
            os.setxattr(dest, DEST_XATTR, Held.of(level).value())
    except OSError as e:
        if level.facts is not None and e.errno != errno.ENODATA:
            reporter.warn(
                f"{dest}: cannot record the restored level ({e.strerror}); restore the next "
                "levels together with this chain in one command",
                affects_exit=False,
            )


def _refusal(held: Held | None, level: Level) -> ChainRefused | None:
    """Why `level` cannot be applied on top of `held`, or None when it can."""
    f = level.facts
    if f is None or (f.level == 0 and level.volume == 1):
        return None
    if held is None:
        return ChainRefused(
            f"{level.describe()} applies on top of the archive before it, and the "
            "destination holds no restored level of that chain",
            hint="give the whole chain: ecarchive restore FULL INC1 ... DEST",
        )
    if held.chain != f.chain:
        return ChainRefused(f"{level.describe()} is from another chain than {held.where}")
    if level.volume > 1:
        follows = held.archive == f.archive and held.volume == level.volume - 1
    else:
        follows = held.archive == f.after and held.volume == held.volumes
    if follows:
        return None
    return ChainRefused(
        f"{level.describe()} does not follow {held.where}",
        hint="give the archives (and their volumes) in the order they were made, each once",
    )


def volumes_in_order(levels: Sequence[Level]) -> list[Level]:
    """The volumes of one archive may be given in any order (a volume set); the archives of a
    chain keep the order given, which check_order judges."""
    first: dict[str, int] = {}
    for i, level in enumerate(levels):
        if level.facts is not None:
            first.setdefault(level.facts.archive, i)

    def key(item: tuple[int, Level]) -> tuple[int, int]:
        i, level = item
        return (first[level.facts.archive], level.volume) if level.facts else (i, 0)

    return [level for _, level in sorted(enumerate(levels), key=key)]


def check_order(levels: Sequence[Level], state: Held | None) -> None:
    """Refuse archives out of order, from another chain, or not fitting what DEST holds."""
    if len(levels) > 1:
        for level in levels:
            if level.facts is None:
                raise ChainRefused(
                    f"{level.source}: not part of an incremental chain (its manifest names none)",
                    hint="give one archive, or the archives of one chain from level 0 up",
                )
    held = state
    for level in levels:
        refused = _refusal(held, level)
        if refused is not None:
            raise refused
        held = Held.of(level) if level.facts is not None else None


def _plain_components(level: Level, lower: bytes, keys: Keys) -> list[bytes] | None:
    parts = lower.split(b"/")
    if parts[0] != level.lower_root or len(parts) < 2 or any(p in _BAD_COMPONENTS for p in parts):
        return None
    plain = [keys.name(p) for p in parts[1:]]
    if any(p in _BAD_COMPONENTS or b"/" in p or b"\0" in p for p in plain):
        return None
    return plain


def _remove(root_fd: int, parts: list[bytes]) -> str | None:
    """Remove DEST/parts without following a symlink; a reason when it was left alone."""
    *up, name = parts
    try:
        fd = open_subdir(root_fd, b"/".join(up))
    except FileNotFoundError:
        return None  # gone already
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            return "a parent is not a directory"
        raise
    try:
        st = lstat_at(fd, name)
        if st is None:
            return None
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)
        return None
    finally:
        os.close(fd)


def apply_deletions(
    dest: str, level: Level, keys: Keys, reporter: Reporter, selection: Selection | None = None
) -> None:
    if not level.deleted or not os.path.isdir(dest):
        return
    root_fd = open_root(os.fsencode(dest))
    try:
        for parts in _deleted_paths(level, keys, reporter, selection or Selection()):
            try:
                why = _remove(root_fd, parts)
            except OSError as e:
                why = e.strerror or str(e)
            if why is not None:
                reporter.warn(f"{escape_path(b'/'.join(parts))}: not removed: {why}")
    finally:
        os.close(root_fd)


def _deleted_paths(
    level: Level, keys: Keys, reporter: Reporter, selection: Selection
) -> Iterator[list[bytes]]:
    """The plaintext components of each name LEVEL deletes that `selection` wants; a name that
    does not decrypt to a safe relative path is warned about and left alone."""
    for lower in level.deleted:
        shown = f"{level.source}: deleted name {escape_path(lower)}"
        try:
            parts = _plain_components(level, lower, keys)
        except DamagedEntry as e:
            reporter.warn(f"{shown} does not decrypt: {e}")
            continue
        if parts is None:
            reporter.warn(f"{shown} is not a safe path; ignored")
            continue
        if selection.wants(b"/".join(parts)):
            yield parts


def _rereadable(source: str) -> bool:
    """A file, directory or block device: its side files can be read ahead of the restore (a
    pipe or terminal could not be read twice)."""
    try:
        mode = os.stat(source).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISBLK(mode)


def _probe(sources: Sequence[str], keys: Keys) -> list[Level] | None:
    """The chain facts of SOURCES, or None when none of them is an incremental archive (then
    they restore as a volume set, read.restore). An unreadable manifest only counts when
    another archive is of a chain: a damaged plain archive is read.restore's to report."""
    levels: list[Level] = []
    problem: ArchiveUnreadable | None = None
    for source in sources:
        if source == STDIN or not _rereadable(source):
            levels.append(Level(source, None))
            continue
        try:
            levels.append(read_level(source, keys))
        except ArchiveUnreadable as e:
            problem = problem or e
            levels.append(Level(source, None))
    if all(level.facts is None for level in levels):
        return None
    if problem is not None and len(sources) > 1:
        raise problem
    if len(sources) > 1 and STDIN in sources:
        raise ChainRefused("a chain is read from archive files or directories, not stdin")
    return levels


def _forget(dest: str) -> None:
    """DEST no longer holds (only) a level of a chain."""
    with contextlib.suppress(OSError):
        os.removexattr(dest, DEST_XATTR)


def _archives(levels: Sequence[Level]) -> Iterator[list[Level]]:
    """The levels grouped by archive: the volumes of one archive restore in one run."""
    group: list[Level] = []
    for level in levels:
        same = (
            group
            and level.facts is not None
            and group[0].facts is not None
            and level.facts.archive == group[0].facts.archive
        )
        if group and not same:
            yield group
            group = []
        group.append(level)
    if group:
        yield group


def restore_chain(
    sources: Sequence[str],
    dest: str,
    passphrase: bytes,
    reporter: Reporter,
    *,
    progress: Progress | None = None,
    tally: Tally | None = None,
    existing: Existing = Existing.REPLACE,
    selection: Selection | None = None,
) -> None:
    """Restore SOURCES, in order, into DEST (see the module docstring). Archives none of which
    is incremental restore exactly as `read.restore.restore_archive` (a volume set)."""
    keys = Keys(passphrase)
    chosen = selection or Selection()

    def restore(volumes: Sequence[str], *, check_selection: bool) -> None:
        restore_archive(
            volumes,
            dest,
            passphrase,
            reporter,
            progress=progress,
            tally=tally,
            existing=existing,
            selection=chosen,
            check_selection=check_selection,
        )

    levels = _probe(sources, keys)
    if levels is None:
        restore(sources, check_selection=True)
        if os.path.isdir(dest) and any(s != STDIN for s in sources):
            _forget(dest)
        return
    levels = volumes_in_order(levels)
    check_order(levels, dest_state(dest) if os.path.isdir(dest) else None)
    for group in _archives(levels):
        apply_deletions(dest, group[0], keys, reporter, chosen)
        # a PATH need only be in one level: checked once, over the chain
        restore([level.source for level in group], check_selection=False)
        _record(dest, group[-1], reporter)
    chosen.check_found()
