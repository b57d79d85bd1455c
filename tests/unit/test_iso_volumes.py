"""Media spanning: whole files per volume, each volume a complete tree within capacity."""

from __future__ import annotations

import itertools

import pytest

from ecarchive.iso import image_size
from ecarchive.model import Entry, Kind
from ecarchive.volumes import (
    MEDIA,
    FileTooLargeForVolume,
    VolumeError,
    parse_media,
    split_volumes,
)

T0 = 1_600_000_000 * 10**9
MIB = 1 << 20


def E(kind: Kind, path: bytes, **kw: object) -> Entry:
    base: dict[str, object] = dict(mode=0o644, uid=0, gid=0, uname="", gname="", mtime_ns=T0)
    base.update(kw)
    return Entry(kind, path, **base)  # type: ignore[arg-type]


def plan() -> list[Entry]:
    """RESTORE.txt, a lower root with nested directories, files, hard links and an empty dir."""
    out = [
        E(Kind.FILE, b"RESTORE.txt", size=100, data=b"r" * 100),
        E(Kind.DIR, b"Private"),
    ]
    for d in range(6):
        top = b"Private/d%d" % d
        out.append(E(Kind.DIR, top))
        out.append(E(Kind.DIR, top + b"/sub"))
        for f in range(5):
            out.append(E(Kind.FILE, top + b"/sub/f%d" % f, size=(f + 1) * MIB // 3,
                         source=b"/x"))
        out.append(E(Kind.SYMLINK, top + b"/link", link_target=b"sub/f0"))
    out.append(E(Kind.DIR, b"Private/empty"))
    out.insert(5, E(Kind.FILE, b"Private/d0/sub/hl-src", size=MIB, nlink=2, source=b"/x"))
    out.append(E(Kind.HARDLINK, b"Private/empty-sibling-link", link_target=b"Private/d0/sub/hl-src",
                 nlink=2))
    return out


def size_of(entries: list[Entry]) -> int:
    return image_size(entries)


def test_media_capacities() -> None:
    assert MEDIA["dvd"] == 4_700_372_992
    assert MEDIA["cd"] < MEDIA["dvd"] < MEDIA["dvd-dl"] < MEDIA["bd"] < MEDIA["bd-dl"]
    assert all(v % 2048 == 0 for v in MEDIA.values())
    assert parse_media("bd") == MEDIA["bd"] and parse_media("123456") == 123456
    with pytest.raises(VolumeError, match="unknown media"):
        parse_media("floppy")


@pytest.mark.parametrize("capacity", [3 * MIB, 4 * MIB, 7 * MIB, 64 * MIB])
def test_volumes_are_complete_and_fit(capacity: int) -> None:
    entries = plan()
    volumes = split_volumes(entries, capacity, size_of)
    assert volumes == split_volumes(entries, capacity, size_of)  # deterministic
    seen: list[bytes] = []
    for volume in volumes:
        assert size_of(list(volume)) <= capacity
        paths = [e.path for e in volume]
        assert paths[0] == b"RESTORE.txt"
        order = {e.path: i for i, e in enumerate(entries)}
        assert [order[p] for p in paths] == sorted(order[p] for p in paths)  # plan order
        present = set(paths)
        for e in volume:
            if b"/" in e.path:
                assert e.path.rpartition(b"/")[0] in present, "parent missing"
            if e.kind is Kind.HARDLINK:
                assert e.link_target in present, "hard link without its file"
        seen += [e.path for e in volume if e.kind is not Kind.DIR and e.path != b"RESTORE.txt"]
    expected = [e.path for e in entries if e.kind is not Kind.DIR and e.path != b"RESTORE.txt"]
    assert sorted(seen) == sorted(expected)  # every non-directory exactly once
    all_dirs = {e.path for e in entries if e.kind is Kind.DIR}
    assert all_dirs == {e.path for v in volumes for e in v if e.kind is Kind.DIR}
    if capacity >= 64 * MIB:
        assert len(volumes) == 1


def test_volumes_are_filled_greedily() -> None:
    """The first file of each volume would not have fit into the previous one."""
    entries = plan()
    capacity = 4 * MIB
    volumes = split_volumes(entries, capacity, size_of)
    assert len(volumes) > 2
    for previous, current in itertools.pairwise(volumes):
        before = {e.path for e in previous}
        first = next(e for e in current if e.path not in before)
        grown = sorted({*previous, first}, key=entries.index)
        assert size_of(grown) > capacity


def test_file_larger_than_a_volume() -> None:
    entries = [E(Kind.DIR, b"Private"), E(Kind.FILE, b"Private/huge", size=10 * MIB, rel=b"huge")]
    with pytest.raises(FileTooLargeForVolume, match="huge: needs a volume of at least"):
        split_volumes(entries, 5 * MIB, size_of)


def test_file_that_fits_only_without_metadata() -> None:
    """Data alone fits, the image around it does not: still refused, with the needed size."""
    entries = [E(Kind.DIR, b"Private"), E(Kind.FILE, b"Private/f", size=4 * MIB, source=b"/x")]
    with pytest.raises(FileTooLargeForVolume) as info:
        split_volumes(entries, 4 * MIB, size_of)
    assert info.value.needed == size_of(entries)


def test_empty_plan_gives_one_volume() -> None:
    only_restore = [E(Kind.FILE, b"RESTORE.txt", size=1, data=b"r")]
    assert split_volumes(only_restore, MIB, size_of) == [tuple(only_restore)]
