"""Incremental archives: snapshot format, GNU-tar change rules, deletion lists, chain order."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import pytest

from ecarchive.chain import (
    ChainRefused,
    Held,
    Level,
    apply_deletions,
    check_order,
    volumes_in_order,
)
from ecarchive.ecryptfs.keys import derive_key
from ecarchive.errors import Reporter
from ecarchive.incremental import (
    DELETED_NAME,
    ChainFacts,
    Incremental,
    Keying,
    Record,
    Snapshot,
    SnapshotError,
    parse_deleted,
    parse_snapshot,
    read_snapshot,
)
from ecarchive.manifest import Facts, manifest_size, parse, render
from ecarchive.model import Entry, Kind
from ecarchive.plan import PlanOptions, build_plan
from ecarchive.read.decode import Keys

KEYING = Keying("0123456789abcdef", None, 16, b"Private")


def _clear(name: bytes) -> bytes:
    return b"E." + name  # stands for the name cipher: visibly applied to every component


def _plan(source: Path) -> tuple[Entry, ...]:
    opts = PlanOptions(
        source=os.fsencode(source),
        encrypt=_clear,
        names_encrypted=False,
        top_files=((b"RESTORE.txt", b"text"),),
    )
    plan = build_plan(opts, Reporter(stream=io.StringIO()))
    assert plan.problems == ()
    return plan.entries


def _rels(entries: tuple[Entry, ...]) -> set[bytes]:
    return {e.rel for e in entries if e.kind is not Kind.DIR and e.rel}


def _tree(root: Path) -> None:
    (root / "d" / "sub").mkdir(parents=True)
    (root / "e").mkdir()
    (root / "a.txt").write_bytes(b"a" * 100)
    (root / "b.txt").write_bytes(b"b" * 100)
    (root / "d" / "c.txt").write_bytes(b"c")
    (root / "d" / "sub" / "x").write_bytes(b"x")
    (root / "e" / "y").write_bytes(b"y")
    os.link(root / "a.txt", root / "e" / "a-link")
    os.symlink("a.txt", root / "s")


def _level(root: Path, snap: Path, *, full: bool = False, ctime: bool = True) -> Incremental:
    inc = Incremental(str(snap), KEYING, full=full, check_ctime=ctime)
    inc.select(_plan(root), _clear)
    assert inc.selection is not None
    with inc.committing():
        pass
    return inc


def test_level_0_archives_everything_and_no_change_gives_only_directories(tmp_path: Path) -> None:
    src, snap = tmp_path / "src", tmp_path / "snap"
    src.mkdir()
    _tree(src)
    full = _level(src, snap)
    assert full.run.level == 0 and full.selection is not None
    assert _rels(full.selection.entries) == {
        b"a.txt",
        b"b.txt",
        b"d/c.txt",
        b"d/sub/x",
        b"e/a-link",
        b"e/y",
        b"s",
    }
    assert oct(snap.stat().st_mode & 0o777) == "0o600"
    again = _level(src, snap)
    assert again.run.level == 1 and again.run.chain == full.run.chain
    assert again.selection is not None
    assert _rels(again.selection.entries) == set()
    assert again.selection.deleted == ()
    kinds = {e.kind for e in again.selection.entries if e.rel}
    assert kinds == {Kind.DIR}
    assert any(e.path == b"RESTORE.txt" for e in again.selection.entries)
    facts = ChainFacts.parse(again.chain())
    assert facts.after == full.selection.snapshot.archive and facts.level == 1


def test_changes_deletions_renames_and_modes(tmp_path: Path) -> None:
    src, snap = tmp_path / "src", tmp_path / "snap"
    src.mkdir()
    _tree(src)
    _level(src, snap)
    (src / "b.txt").write_bytes(b"B" * 100)  # same size: mtime/ctime tell
    os.utime(src / "b.txt", ns=(0, 10**18))
    (src / "new.txt").write_bytes(b"n")
    (src / "d" / "c.txt").unlink()
    (src / "e").rename(src / "e2")  # a renamed directory: all of it again, the old name gone
    os.chmod(src / "d" / "sub" / "x", 0o600)  # mode only
    (src / "s").unlink()
    (src / "s").mkdir()  # symlink became a directory
    inc = _level(src, snap)
    assert inc.selection is not None
    assert _rels(inc.selection.entries) == {
        b"b.txt",
        b"new.txt",
        b"d/sub/x",
        b"e2/a-link",
        b"e2/y",
        b"a.txt",
    }  # a.txt: its link count changed with e/a-link, and a hard-link group goes whole
    assert inc.selection.deleted == (b"Private/E.d/E.c.txt", b"Private/E.e", b"Private/E.s")
    content = (DELETED_NAME, b"".join(p + b"\0" for p in inc.selection.deleted))
    entries = inc.select(_plan(src), _clear)
    listed = [e for e in entries if e.path == DELETED_NAME]
    assert len(listed) == 1 and listed[0].data == content[1]
    assert parse_deleted(content[1]) == list(inc.selection.deleted)


def test_deleted_directory_is_listed_once(tmp_path: Path) -> None:
    src, snap = tmp_path / "src", tmp_path / "snap"
    src.mkdir()
    _tree(src)
    _level(src, snap)
    for p in (src / "d" / "sub" / "x", src / "d" / "c.txt"):
        p.unlink()
    (src / "d" / "sub").rmdir()
    (src / "d").rmdir()
    (src / "d").write_bytes(b"now a file")
    inc = _level(src, snap)
    assert inc.selection is not None
    assert inc.selection.deleted == (b"Private/E.d",)
    assert b"d" in _rels(inc.selection.entries)


def test_ctime_only_change(tmp_path: Path) -> None:
    """An xattr (what --stable-keys writes) moves only ctime: archived again under GNU tar's
    rule, not when ctime is not compared; a mode change is caught either way."""
    src, snap = tmp_path / "src", tmp_path / "snap"
    src.mkdir()
    _tree(src)
    _level(src, snap)
    os.setxattr(src / "b.txt", "user.test", b"1")
    inc = _level(src, snap, ctime=False)
    assert inc.selection is not None and _rels(inc.selection.entries) == set()
    os.setxattr(src / "b.txt", "user.test", b"2")
    inc = _level(src, snap)
    assert inc.selection is not None and _rels(inc.selection.entries) == {b"b.txt"}
    os.chmod(src / "b.txt", 0o640)
    inc = _level(src, snap, ctime=False)
    assert inc.selection is not None and _rels(inc.selection.entries) == {b"b.txt"}


def test_level_0_forced_starts_a_new_chain(tmp_path: Path) -> None:
    src, snap = tmp_path / "src", tmp_path / "snap"
    src.mkdir()
    _tree(src)
    first = _level(src, snap)
    forced = _level(src, snap, full=True)
    assert forced.run.level == 0 and forced.run.chain != first.run.chain
    assert forced.selection is not None and len(_rels(forced.selection.entries)) == 7


def test_interrupted_run_leaves_the_snapshot(tmp_path: Path) -> None:
    src, snap = tmp_path / "src", tmp_path / "snap"
    src.mkdir()
    _tree(src)
    _level(src, snap)
    before = snap.read_bytes()
    (src / "a.txt").write_bytes(b"changed")
    inc = Incremental(str(snap), KEYING)
    inc.select(_plan(src), _clear)
    with pytest.raises(KeyboardInterrupt), inc.committing():
        raise KeyboardInterrupt
    assert snap.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap", "src"]


def test_other_key_setup_is_refused(tmp_path: Path) -> None:
    src, snap = tmp_path / "src", tmp_path / "snap"
    src.mkdir()
    _level(src, snap)
    other = Keying("fedcba9876543210", None, 16, b"Private")
    with pytest.raises(SnapshotError, match="another key setup"):
        Incremental(str(snap), other)
    Incremental(str(snap), other, full=True)  # a new chain is fine


def test_snapshot_round_trip_with_hostile_names() -> None:
    records = {
        name: Record(Kind.FILE, 1, 2, 3, -4, 5, 0o4755, 6, 7)
        for name in (b"a b", b"new\nline", b"100%", b"\xff\xfe", b"d/e")
    }
    snap = Snapshot("0" * 32, 3, "1" * 16, Keying("a" * 16, "b" * 16, 32, b"V a"), records)
    data = b"".join(snap.render())
    assert parse_snapshot(data) == snap
    assert b"new\nline" not in data


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:-1],  # no final newline
        lambda d: d.rsplit(b"\n", 2)[0] + b"\n",  # a line lost: count mismatch
        lambda d: b"x" + d,
        lambda d: d.replace(b"level 3", b"level three"),
        lambda d: d.replace(b" a%20b\n", b" /abs\n"),
    ],
)
def test_damaged_snapshot_is_refused(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    records = {
        b"a b": Record(Kind.FILE, 1, 2, 3, 4, 5, 0o644, 6, 7),
        b"c": Record(Kind.DIR, 1, 2, 3, 4, 5, 0o755, 6, 7),
    }
    snap = Snapshot("0" * 32, 3, "1" * 16, KEYING, records)
    path = tmp_path / "snap"
    path.write_bytes(damage(b"".join(snap.render())))
    with pytest.raises(SnapshotError):
        read_snapshot(str(path))


def test_manifest_carries_the_chain() -> None:
    facts = ChainFacts("ab" * 16, 2, "cd" * 8, "ef" * 8)
    assert ChainFacts.parse(facts.text()) == facts
    for bad in (b"", b"x level 1 archive y after z", facts.text() + b" x"):
        with pytest.raises(ValueError):
            ChainFacts.parse(bad)
    key = derive_key(b"pw")
    mfacts = Facts("aes", 16, key.sig_hex, None, b"Private", 0, chain=facts.text())
    root = Entry(Kind.DIR, b"Private", 0o755, 0, 0, "", "", 0)
    data = render([root], {}, mfacts, key)
    assert len(data) == manifest_size([root], mfacts)
    assert parse(data).facts.chain == facts.text()
    plain = Facts("aes", 16, key.sig_hex, None, b"Private", 0)
    assert parse(render([root], {}, plain, key)).facts.chain is None


def _lv(name: str, level: int, archive: str, after: str, chain: str = "c" * 32) -> Level:
    return Level(name, ChainFacts(chain, level, archive, after))


def _held(archive: str, level: int, volume: int = 1, volumes: int = 1) -> Held:
    return Held("c" * 32, archive, level, volume, volumes, "the destination")


def test_chain_order() -> None:
    l0, l1, l2 = (
        _lv("L0", 0, "0" * 16, "-"),
        _lv("L1", 1, "1" * 16, "0" * 16),
        _lv("L2", 2, "2" * 16, "1" * 16),
    )
    check_order([l0, l1, l2], None)
    check_order([l2], _held("1" * 16, 1))  # one after another into the same DEST
    with pytest.raises(ChainRefused, match="does not follow"):
        check_order([l0, l2, l1], None)
    with pytest.raises(ChainRefused, match="does not follow"):
        check_order([l0, l1, l1], None)
    with pytest.raises(ChainRefused, match="another chain"):
        check_order([l0, _lv("X", 1, "1" * 16, "0" * 16, chain="d" * 32)], None)
    with pytest.raises(ChainRefused, match="holds no restored level"):
        check_order([l1, l2], None)
    with pytest.raises(ChainRefused, match="does not follow the destination"):
        check_order([l2], _held("2" * 16, 2))
    with pytest.raises(ChainRefused, match="does not follow the destination"):
        check_order([l2], _held("1" * 16, 1, volume=1, volumes=2))  # level 1 incomplete
    with pytest.raises(ChainRefused, match="not part of an incremental chain"):
        check_order([l0, Level("plain", None)], None)


def test_chain_order_of_volumes() -> None:
    v1 = Level("L0.1", ChainFacts("c" * 32, 0, "0" * 16, "-"), volume=1, volumes=2)
    v2 = dataclasses.replace(v1, source="L0.2", volume=2)
    l1 = _lv("L1", 1, "1" * 16, "0" * 16)
    check_order([v1, v2, l1], None)
    check_order([v2], _held("0" * 16, 0, volume=1, volumes=2))
    assert volumes_in_order([v2, v1, l1]) == [v1, v2, l1]
    assert volumes_in_order([l1, v2, v1]) == [l1, v1, v2]  # still refused: l1 comes first
    for wrong in ([l1, v1, v2], [v1, l1], [v2]):
        with pytest.raises(ChainRefused):
            check_order(wrong, None)


def test_deletions_never_follow_symlinks(tmp_path: Path) -> None:
    """A hostile list, or a DEST where a directory became a symlink, must not reach outside."""
    outside, dest = tmp_path / "outside", tmp_path / "dest"
    outside.mkdir()
    (outside / "b").write_bytes(b"keep")
    dest.mkdir()
    (dest / "a").symlink_to(outside)
    (dest / "gone").mkdir()
    (dest / "gone" / "f").write_bytes(b"")
    (dest / "file").write_bytes(b"")
    deleted = (
        b"Private/a/b",
        b"Private/../outside/b",
        b"Other/file",
        b"Private/gone",
        b"Private/file",
    )
    err = io.StringIO()
    apply_deletions(
        str(dest), Level("L1", None, b"Private", deleted), Keys(b"pw"), Reporter(stream=err)
    )
    assert (outside / "b").read_bytes() == b"keep"
    assert sorted(os.listdir(dest)) == ["a"]
    assert "a/b: not removed" in err.getvalue()
    assert err.getvalue().count("not a safe path") == 2
