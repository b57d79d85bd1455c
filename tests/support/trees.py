"""Standard round-trip source tree, tree snapshots and their comparison.

Pure stdlib on purpose: the kernel harness runs this module *inside* the qemu guest (chrooted
into the host root) to walk the decrypted view, so it must not import ecarchive or any
third-party package.  Run as a script it prints a snapshot as JSON:

    python3 tests/support/trees.py snapshot DIR > snap.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TextIO

HASH_CHUNK = 1 << 20
MIB = 1 << 20
RANDOM_SEED = 0xEC_A2C4
# eCryptfs refuses plaintext names longer than this (ENAMETOOLONG at 144).
MAX_NAME_BYTES = 143
# Extent numbers past 9 matter: the per-extent IV uses the *decimal* extent number.
EDGE_SIZES = (0, 1, 4095, 4096, 4097, 40960, 45056)
# 1971-03-04 and 2090-06-07: before/after every 32-bit and 2038 boundary ecarchive might trip.
PAST_NS = 36_460_800 * 10**9 + 123_456_789
FUTURE_NS = 3_800_000_000 * 10**9 + 987_654_321
BASE_NS = 1_700_000_000 * 10**9 + 111_111_111

MtimeMode = Literal["s", "ns"] | None

TYPE_CODES = (
    (stat.S_ISREG, "f"),
    (stat.S_ISDIR, "d"),
    (stat.S_ISLNK, "l"),
    (stat.S_ISFIFO, "p"),
    (stat.S_ISCHR, "c"),
    (stat.S_ISBLK, "b"),
    (stat.S_ISSOCK, "s"),
)


@dataclasses.dataclass(frozen=True)
class Record:
    """What a round trip must preserve about one entry (paths are relative, '/'-separated)."""

    path: str
    type: str
    mode: int
    size: int
    mtime_ns: int
    mtime_s: int
    sha256: str | None
    target: str | None
    hlgroup: str | None
    nlink: int
    uid: int
    gid: int


# ---------------------------------------------------------------------------------------------
# The standard tree


def _write_pattern(path: Path, size: int, rng: random.Random | None = None) -> None:
    """Write `size` bytes: random from `rng`, else a position-dependent pattern (not all zero,
    so a hole or a zero-filled extent would show as a hash mismatch)."""
    with path.open("wb") as out:
        written = 0
        while written < size:
            n = min(HASH_CHUNK, size - written)
            if rng is not None:
                out.write(rng.randbytes(n))
            else:
                out.write(bytes((written + i) * 7 % 251 for i in range(n)))
            written += n


def _long_name() -> str:
    stem = "long-"
    suffix = ".txt"
    return stem + "n" * (MAX_NAME_BYTES - len(stem) - len(suffix)) + suffix


def make_case_tree(root: Path, *, big_mib: int = 3) -> None:
    """Build the standard round-trip source tree under `root` (created if missing).

    Covers: empty/1-byte/extent-edge sizes, a `big_mib` MiB random file (fixed seed), UTF-8
    and 143-byte names, nested and empty directories, relative/absolute/dangling symlinks, a
    hard-link triple across directories, modes 0400/0600/0755/4755, a fifo, and nanosecond
    mtimes from 1971 to 2090. Must run as root only for the 4755 mode to stick on every fs.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(RANDOM_SEED)
    files = root / "files"
    files.mkdir()
    for size in EDGE_SIZES:
        _write_pattern(files / f"size-{size}", size)
    _write_pattern(root / "big.bin", big_mib * MIB, rng)

    names = root / "names"
    names.mkdir()
    for name in ("café-ünïcødé.txt", "emoji-🔐-key.txt", "space and 'quote'.txt", _long_name()):
        (names / name).write_text(f"content of {name}\n", encoding="utf-8")

    deep = root / "deep" / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "leaf.txt").write_text("deep leaf\n")
    (root / "deep" / "empty").mkdir()
    (root / "empty-dir").mkdir()

    links = root / "links"
    links.mkdir()
    os.symlink("../files/size-4097", links / "relative")
    os.symlink("/etc/hostname", links / "absolute")
    os.symlink("does/not/exist", links / "dangling")
    os.symlink("../deep", links / "to-dir")

    (root / "hard").mkdir()
    first = root / "hard" / "one.txt"
    first.write_text("three names, one inode\n")
    os.link(first, root / "deep" / "a" / "two.txt")
    os.link(first, root / "three.txt")

    modes = root / "modes"
    modes.mkdir()
    for mode in (0o400, 0o600, 0o755, 0o4755):
        path = modes / f"mode-{mode:04o}"
        path.write_text(f"mode {mode:04o}\n")
        os.chmod(path, mode)
    os.mkfifo(root / "fifo")

    _set_times(root)


def _set_times(root: Path) -> None:
    """Give every entry a distinct nanosecond mtime; children before parents so directory
    times survive, and a few entries in 1971 and 2090."""
    entries = sorted(_walk(root), key=lambda p: (-len(p.parts), str(p)))
    special = {
        "files/size-0": PAST_NS,
        "files/size-1": FUTURE_NS,
        "links/relative": PAST_NS + 1,
        "empty-dir": FUTURE_NS + 1,
        "fifo": PAST_NS + 2,
    }
    for index, path in enumerate(entries):
        rel = path.relative_to(root).as_posix()
        ns = special.get(rel, BASE_NS + index * 1_000_000_007)
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    os.utime(root, ns=(BASE_NS, BASE_NS))


# ---------------------------------------------------------------------------------------------
# Snapshots


def _walk(root: Path) -> Iterator[Path]:
    """Every entry below `root`, without following symlinks, in no particular order."""
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                path = Path(entry.path)
                yield path
                if entry.is_dir(follow_symlinks=False):
                    stack.append(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _type_code(mode: int) -> str:
    for test, code in TYPE_CODES:
        if test(mode):
            return code
    return "?"


def _rel(root: Path, path: Path) -> str:
    # os.fsdecode keeps undecodable bytes as surrogates, so odd names still compare.
    return os.fsdecode(os.path.relpath(os.fsencode(path), os.fsencode(root))).replace(os.sep, "/")


def snapshot(root: Path) -> dict[str, Record]:
    """Describe every entry below `root` (root itself excluded), keyed by relative path."""
    raw: list[tuple[str, os.stat_result]] = [(_rel(root, p), p.lstat()) for p in _walk(root)]
    groups: dict[tuple[int, int], str] = {}
    for rel, st in raw:
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            groups[key] = min(groups.get(key, rel), rel)
    records: dict[str, Record] = {}
    for rel, st in sorted(raw):
        kind = _type_code(st.st_mode)
        path = root / rel
        records[rel] = Record(
            path=rel,
            type=kind,
            mode=stat.S_IMODE(st.st_mode),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            mtime_s=st.st_mtime_ns // 10**9,
            sha256=_sha256(path) if kind == "f" else None,
            target=os.readlink(path) if kind == "l" else None,
            hlgroup=groups.get((st.st_dev, st.st_ino)),
            nlink=st.st_nlink,
            uid=st.st_uid,
            gid=st.st_gid,
        )
    return records


def compare(
    a: dict[str, Record],
    b: dict[str, Record],
    *,
    mtime: MtimeMode = "s",
    hardlinks: bool = True,
    owners: bool = False,
) -> list[str]:
    """Human-readable differences between two snapshots; an empty list means equal.

    Directory sizes and link counts are file-system artefacts and never compared; file sizes
    are. Symlink sizes are implied by the target.
    """
    diffs: list[str] = []
    if len(a) != len(b):
        diffs.append(f"entry count: {len(a)} != {len(b)}")
    diffs += [f"{p!r}: only in first" for p in sorted(a.keys() - b.keys())]
    diffs += [f"{p!r}: only in second" for p in sorted(b.keys() - a.keys())]
    for path in sorted(a.keys() & b.keys()):
        found = _record_diffs(a[path], b[path], mtime, hardlinks, owners)
        diffs += [f"{path!r}: {d}" for d in found]
    return diffs


def _record_diffs(
    x: Record, y: Record, mtime: MtimeMode, hardlinks: bool, owners: bool
) -> Iterable[str]:
    if x.type != y.type:
        yield f"type {x.type} != {y.type}"
        return
    fields = ["mode", "sha256", "target"]
    if x.type == "f":
        fields.append("size")
    if mtime == "s":
        fields.append("mtime_s")
    elif mtime == "ns":
        fields.append("mtime_ns")
    if hardlinks and x.type != "d":
        fields += ["hlgroup", "nlink"]
    if owners:
        fields += ["uid", "gid"]
    for name in fields:
        left, right = getattr(x, name), getattr(y, name)
        if left != right:
            shown = (oct(left), oct(right)) if name == "mode" else (repr(left), repr(right))
            yield f"{name} {shown[0]} != {shown[1]}"


# ---------------------------------------------------------------------------------------------
# JSON transport (guest -> host)


def dump(records: dict[str, Record], out: TextIO) -> None:
    """Write a snapshot as JSON; surrogate-escaped names survive via ensure_ascii."""
    json.dump([dataclasses.asdict(r) for r in records.values()], out, indent=0)


def load(source: TextIO) -> dict[str, Record]:
    items: list[dict[str, Any]] = json.load(source)
    return {item["path"]: Record(**item) for item in items}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("snapshot", "make-tree"):
        print("usage: trees.py snapshot DIR | make-tree DIR", file=sys.stderr)
        return 2
    if argv[1] == "make-tree":
        make_case_tree(Path(argv[2]))
    else:
        dump(snapshot(Path(argv[2])), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
