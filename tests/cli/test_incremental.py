"""`create --listed-incremental` and `restore FULL INC1 INC2 DEST` through the real command line:
the chain restores the tree as it was at the last level (tar and ISO), order is enforced, a
level after no change is only directories, an interrupted run keeps the snapshot."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.cli.conftest import PASSPHRASE, REPO, run_cli
from tests.support.chain_tree import change_level1, change_level2, make_level0
from tests.support.trees import Record, compare, snapshot

SIDE = {"RESTORE.txt", "MANIFEST.ecarchive"}


def create(src: Path, out: Path, snap: Path, *extra: str) -> None:
    r = run_cli(
        ["create", str(src), "-o", str(out), "-q", "--listed-incremental", str(snap), *extra]
    )
    assert r.returncode == 0, r.stderr.decode()


def restore(*args: Path) -> subprocess.CompletedProcess[bytes]:
    return run_cli(["restore", "-q", *map(str, args)])


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as t:
        return {m.name: m for m in t.getmembers()}


Chain = tuple[Path, list[Path], list[dict[str, Record]]]


def _make_chain(work: Path, fmt: str) -> Chain:
    """Levels 0, 1, 2 of tests.support.chain_tree, and the source tree right after each."""
    src, snap = work / "src", work / "snapshot"
    src.mkdir()
    make_level0(src)
    archives, states = [], []
    for level, change in enumerate((None, change_level1, change_level2)):
        if change is not None:
            change(src)
        out = work / f"level{level}.{fmt}"
        create(src, out, snap)
        archives.append(out)
        states.append(snapshot(src))
    return work, archives, states


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return _make_chain(tmp_path_factory.mktemp("chain-tar"), "tar")


@pytest.fixture(scope="module")
def iso_chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return _make_chain(tmp_path_factory.mktemp("chain-iso"), "iso")


@pytest.mark.parametrize("fixture", ["chain", "iso_chain"])
def test_chain_restores_the_tree_of_the_last_level(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    work, archives, states = request.getfixturevalue(fixture)
    mtime = "ns" if archives[0].suffix == ".tar" else "s"  # ISO 9660 keeps seconds
    for upto in (1, 2, 3):
        dest = work / f"all-{upto}"
        r = restore(*archives[:upto], dest)
        assert r.returncode == 0, r.stderr.decode()
        assert compare(states[upto - 1], snapshot(dest), mtime=mtime, owners=True) == []
    one_by_one = work / "one-by-one"
    for archive in archives:
        r = restore(archive, one_by_one)
        assert r.returncode == 0, r.stderr.decode()
    assert compare(states[2], snapshot(one_by_one), mtime=mtime, owners=True) == []


def test_chain_order_is_enforced(chain: Chain) -> None:
    work, (l0, l1, l2), _ = chain
    for wrong, why in (
        ((l0, l2), "does not follow"),
        ((l0, l2, l1), "does not follow"),
        ((l0, l1, l1), "does not follow"),
        ((l1, l2), "holds no restored level"),
    ):
        dest = work / "refused"
        r = restore(*wrong, dest)
        assert r.returncode == 2 and why in r.stderr.decode(), r.stderr.decode()
        assert not dest.exists()
    held = work / "held"
    assert restore(l0, held).returncode == 0
    r = restore(l2, held)
    assert (
        r.returncode == 2
        and "does not follow what the destination holds (level 0)" in r.stderr.decode()
    )


def test_each_level_verifies_on_its_own_and_lists_deletions(
    chain: Chain,
) -> None:
    _, archives, _ = chain
    for archive in archives:
        r = run_cli(["verify", str(archive)])
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        assert b"OK" in r.stdout
    r = run_cli(["list", str(archives[1])])
    assert r.returncode == 0, r.stderr.decode()
    deleted = sorted(line for line in r.stdout.decode().splitlines() if line.startswith("x\t"))
    assert deleted == [
        "x\t-\tdocs/old",
        "x\t-\tphotos",
        "x\t-\tto-delete.txt",
        "x\t-\tto-rename.txt",
    ]


def test_another_chain_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"1")
    create(src, tmp_path / "a0.tar", tmp_path / "a.snap")
    create(src, tmp_path / "b0.tar", tmp_path / "b.snap")
    (src / "f").write_bytes(b"2")
    create(src, tmp_path / "b1.tar", tmp_path / "b.snap")
    r = restore(tmp_path / "a0.tar", tmp_path / "b1.tar", tmp_path / "dest")
    assert r.returncode == 2 and "another chain" in r.stderr.decode(), r.stderr.decode()


def test_level_after_no_change_is_only_directories(tmp_path: Path) -> None:
    src = tmp_path / "src"
    snap = src / "keep" / "backup.snap"  # inside SOURCE: never archived itself
    src.mkdir()
    make_level0(src)
    create(src, tmp_path / "l0.tar", snap)
    create(src, tmp_path / "l1.tar", snap)
    m = members(tmp_path / "l1.tar")
    assert {name for name, info in m.items() if not info.isdir()} == SIDE
    dirs = {name for name, info in m.items() if info.isdir()}
    assert dirs == {name for name, info in members(tmp_path / "l0.tar").items() if info.isdir()}
    r = run_cli(
        [
            "create",
            str(src),
            "-o",
            str(tmp_path / "full.tar"),
            "-q",
            "-g",
            str(snap),
            "--level",
            "0",
        ]
    )
    assert r.returncode == 0, r.stderr.decode()
    assert members(tmp_path / "full.tar").keys() == members(tmp_path / "l0.tar").keys()


def test_interrupted_level_keeps_the_snapshot_and_a_rerun_is_the_same(tmp_path: Path) -> None:
    src, snap = tmp_path / "src", tmp_path / "snap"
    src.mkdir()
    make_level0(src)
    create(src, tmp_path / "l0.tar", snap, "--stable-keys")
    (src / "photos" / "big.bin").write_bytes(os.urandom(8 << 20))
    (src / "new.txt").write_bytes(b"new")
    before = snap.read_bytes()
    env = dict(os.environ, PYTHONPATH=str(REPO), ECARCHIVE_PASSPHRASE=PASSPHRASE)
    args = ["create", str(src), "-q", "-g", str(snap), "--stable-keys"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecarchive", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    assert len(proc.stdout.read(1 << 20)) == 1 << 20  # it is writing level 1 ...
    proc.send_signal(signal.SIGINT)  # ... when Ctrl-C comes
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert snap.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l0.tar", "snap", "src"]
    shutil.copy(snap, tmp_path / "snap.before")
    create(src, tmp_path / "l1.tar", snap, "--stable-keys")
    after = snap.read_bytes()
    assert after != before
    shutil.copy(tmp_path / "snap.before", snap)
    create(src, tmp_path / "l1-again.tar", snap, "--stable-keys")
    assert (tmp_path / "l1.tar").read_bytes() == (tmp_path / "l1-again.tar").read_bytes()
    assert snap.read_bytes() == after


def test_stable_keys_keep_bytes_across_levels(tmp_path: Path) -> None:
    """A file archived again for a mode change has the same lower bytes on both discs."""
    src, snap = tmp_path / "src", tmp_path / "snap"
    src.mkdir()
    make_level0(src)
    create(src, tmp_path / "l0.tar", snap, "--stable-keys", "--fnek", "off")
    os.chmod(src / "keep" / "mode.sh", 0o700)
    create(src, tmp_path / "l1.tar", snap, "--stable-keys", "--fnek", "off")
    name = "Private/keep/mode.sh"
    files = [n for n, i in members(tmp_path / "l1.tar").items() if i.isfile() and n not in SIDE]
    assert files == [name]
    with tarfile.open(tmp_path / "l0.tar") as a, tarfile.open(tmp_path / "l1.tar") as b:
        fa, fb = a.extractfile(name), b.extractfile(name)
        assert fa is not None and fb is not None
        assert fa.read() == fb.read()
        assert b.getmember(name).mode == 0o700


def test_snapshot_is_left_alone_unless_the_archive_is_written(tmp_path: Path) -> None:
    src, snap = tmp_path / "src", tmp_path / "snap"
    src.mkdir()
    (src / "f").write_bytes(b"1")
    create(src, tmp_path / "l0.iso", snap)
    before = snap.read_bytes()
    (src / "g").write_bytes(b"2")
    r = run_cli(["create", str(src), "-g", str(snap), "--format", "iso", "--print-size"])
    assert r.returncode == 0 and snap.read_bytes() == before
    r = run_cli(
        [
            "create",
            str(src),
            "-g",
            str(snap),
            "--media",
            "cd",
            "--volume",
            "1",
            "-o",
            str(tmp_path / "v.iso"),
        ]
    )
    assert r.returncode == 2 and b"--volume" in r.stderr and snap.read_bytes() == before
    r = run_cli(
        ["create", str(src), "-g", str(snap), "-o", str(tmp_path / "x.tar")],
        passphrase="another passphrase",
    )
    assert r.returncode == 2 and b"another key setup" in r.stderr
    assert snap.read_bytes() == before and not (tmp_path / "x.tar").exists()
    snap.write_bytes(before[:-10])
    r = run_cli(["create", str(src), "-g", str(snap), "-o", str(tmp_path / "y.tar")])
    assert r.returncode == 2 and b"--level 0" in r.stderr, r.stderr


def test_chain_of_spanned_levels(tmp_path: Path) -> None:
    """Each level spans discs; MANIFEST.deleted is on volume 1 only, so a name whose type
    changed is removed before the level, never after a volume restored it."""
    src, snap = tmp_path / "src", tmp_path / "snap"
    for d in range(4):
        (src / f"d{d}").mkdir(parents=True)
        (src / f"d{d}" / "f").write_bytes(os.urandom(600_000))
    (src / "d0" / "x").mkdir()
    (src / "d0" / "x" / "in").write_bytes(b"1")
    media = ["--media", "1500000", "--format", "iso"]
    create(src, tmp_path / "l0-%02d.iso", snap, *media)
    (src / "d0" / "x" / "in").unlink()
    (src / "d0" / "x").rmdir()
    (src / "d0" / "x").write_bytes(b"a file now")
    (src / "d3" / "f").write_bytes(os.urandom(700_000))
    shutil.rmtree(src / "d2")
    for d in range(4, 6):
        (src / f"d{d}").mkdir()
        (src / f"d{d}" / "g").write_bytes(os.urandom(600_000))
    create(src, tmp_path / "l1-%02d.iso", snap, *media)
    l0 = sorted(tmp_path.glob("l0-*.iso"))
    l1 = sorted(tmp_path.glob("l1-*.iso"))
    assert len(l0) > 1 and len(l1) > 1
    with_list = [v.name for v in l1 if b"MANIFEST.deleted" in _iso_names(v)]
    assert with_list == ["l1-01.iso"]
    r = restore(*l0, *l1, tmp_path / "dest")
    assert r.returncode == 0, r.stderr.decode()
    assert compare(snapshot(src), snapshot(tmp_path / "dest"), mtime="s") == []
    r = restore(*reversed(l0), *reversed(l1), tmp_path / "any-volume-order")
    assert r.returncode == 0, r.stderr.decode()
    assert compare(snapshot(src), snapshot(tmp_path / "any-volume-order"), mtime="s") == []
    r = restore(*l1, *l0, tmp_path / "refused")
    assert r.returncode == 2 and b"holds no restored level" in r.stderr, r.stderr


def _iso_names(image: Path) -> bytes:
    out = subprocess.run(["bsdtar", "-tf", str(image)], capture_output=True, check=True)
    return out.stdout


def test_altered_deletion_list_or_chain_line_is_refused(
    chain: Chain,
) -> None:
    """Whoever can write the disc must not make a restore delete other names, or pass a level
    off as another: the manifest's HMAC covers both."""
    work, (l0, l1, _), _ = chain
    with tarfile.open(l0) as t:
        victim = next(m.name for m in t.getmembers() if m.isfile() and "/" in m.name)
    for name, edit in (
        ("MANIFEST.deleted", lambda data: data + victim.encode() + b"\0"),
        ("MANIFEST.ecarchive", lambda data: data.replace(b" level 1 ", b" level 7 ")),
    ):
        altered = work / f"altered-{name}.tar"
        with tarfile.open(l1) as t, tarfile.open(altered, "w") as out:
            for member in t.getmembers():
                source = t.extractfile(member) if member.isfile() else None
                if member.name == name:
                    assert source is not None
                    data = source.read()
                    new = edit(data)
                    assert new != data
                    member.size = len(new)
                    source = io.BytesIO(new)
                out.addfile(member, source)
        dest = work / f"dest-{name}"
        r = restore(l0, altered, dest)
        assert r.returncode == 2, r.stderr.decode()
        assert b"does not match the manifest" in r.stderr or b"does not verify" in r.stderr
        assert not dest.exists()
