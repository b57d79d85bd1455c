"""`create --stable-keys`: byte-identical re-runs, one changed block changes one extent, and the
key store fallback on sources where no user xattr can be written.

Read-only sources are real: a read-only bind mount (EROFS), ramfs (no user xattrs at all,
EOPNOTSUPP) and files without write permission for a root that lost CAP_DAC_OVERRIDE (EACCES).
Needs the issue 5 wiring in cli.py (--stable-keys, --key-store, --rotate-keys-on-change).
"""

from __future__ import annotations

import os
import random
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import xattr

from tests.cli.conftest import run_cli
from tests.support.trees import make_case_tree

XATTR = "user.ecarchive.key"
MIB = 1 << 20
EXTENT = 4096
FORMATS = ["tar", "iso"]


def create(src: Path, out: Path, *extra: str, drop_dac: bool = False) -> str:
    r = run_cli(["create", str(src), "-o", str(out), "-q", *extra], drop_dac=drop_dac)
    assert r.returncode == 0, r.stderr.decode()
    return r.stderr.decode()


def fmt_args(fmt: str) -> list[str]:
    return [] if fmt == "tar" else ["--format", "iso"]


def differing_bytes(a: Path, b: Path) -> int:
    """Bytes that differ position by position (plus any length difference)."""
    diff = abs(a.stat().st_size - b.stat().st_size)
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(MIB), fb.read(MIB)
            if not x and not y:
                return diff
            if x != y:
                n = min(len(x), len(y))
                xor = int.from_bytes(x[:n], "big") ^ int.from_bytes(y[:n], "big")
                diff += sum(1 for byte in xor.to_bytes(n, "big") if byte)
            if not x or not y:
                return diff


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stable") / "tree"
    make_case_tree(root, big_mib=1)
    return root


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_runs_are_byte_identical(tree: Path, tmp_path: Path, fmt: str) -> None:
    a, b, fresh = tmp_path / "a", tmp_path / "b", tmp_path / "fresh"
    create(tree, a, "--stable-keys", *fmt_args(fmt))
    create(tree, b, "--stable-keys", *fmt_args(fmt))
    assert a.read_bytes() == b.read_bytes()
    create(tree, fresh, *fmt_args(fmt))  # without stable keys every run differs
    assert differing_bytes(a, fresh) > 0
    r = run_cli(["verify", str(a)])
    assert r.returncode == 0, r.stdout.decode()


def test_keys_live_on_the_inode(tree: Path, tmp_path: Path) -> None:
    create(tree, tmp_path / "a.tar", "--stable-keys")
    one = xattr.getxattr(str(tree / "hard" / "one.txt"), XATTR)
    assert one[:4] == b"ECAK"
    assert xattr.getxattr(str(tree / "three.txt"), XATTR) == one  # hard links share the inode
    assert xattr.getxattr(str(tree / "files" / "size-0"), XATTR)[:4] == b"ECAK"
    with pytest.raises(OSError):
        xattr.getxattr(str(tree / "links" / "relative"), XATTR, symlink=True)


def member_data(tar: Path) -> dict[str, bytes]:
    with tarfile.open(tar) as t:
        return {m.name: t.extractfile(m).read() for m in t if m.isfile()}  # type: ignore[union-attr]


def test_rename_keeps_the_bytes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "before").write_bytes(random.Random(1).randbytes(3 * EXTENT + 7))
    create(src, tmp_path / "a.tar", "--stable-keys")
    os.rename(src / "before", src / "after")
    create(src, tmp_path / "b.tar", "--stable-keys")
    old = [v for k, v in member_data(tmp_path / "a.tar").items() if k.startswith("Private/")]
    new = [v for k, v in member_data(tmp_path / "b.tar").items() if k.startswith("Private/")]
    assert len(old) == len(new) == 1 and old == new


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_block_change_in_100_mib_changes_one_extent(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big.bin"
    with big.open("wb") as f:
        rng = random.Random(5)
        for _ in range(100):
            f.write(rng.randbytes(MIB))
    (src / "small.txt").write_text("unchanged\n")
    args = ["--stable-keys", *fmt_args(fmt)]
    a, b, rotated = tmp_path / "a", tmp_path / "b", tmp_path / "rotated"
    create(src, a, *args)
    with big.open("r+b") as f:  # in place: same inode, same size, new mtime
        f.seek(37 * MIB + 5 * EXTENT)
        f.write(bytes(EXTENT))
    create(src, b, *args)
    changed = differing_bytes(a, b)
    # one extent, plus the archive's own metadata for the file (mtime in its header or
    # directory record) and the manifest (one digest line, the HMAC, its created time)
    assert EXTENT - 64 < changed <= EXTENT + 512, changed
    create(src, rotated, *args, "--rotate-keys-on-change")
    assert differing_bytes(b, rotated) > 90 * MIB  # a new key re-encrypts everything
    for archive in (a, b, rotated):
        assert run_cli(["verify", str(archive)]).returncode == 0


def root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount")


@pytest.fixture
def readonly_tree(tmp_path: Path) -> Iterator[Path]:
    """A read-only bind mount of a small tree: setxattr fails with EROFS."""
    root_only()
    src = tmp_path / "rw"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    (src / "sub").mkdir()
    (src / "sub" / "b.bin").write_bytes(random.Random(2).randbytes(50_000))
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@pytest.fixture
def ramfs_tree(tmp_path: Path) -> Iterator[Path]:
    """A tree on ramfs, which has no user xattrs (EOPNOTSUPP)."""
    root_only()
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "none", str(mnt)], check=True)
    try:
        (mnt / "a.txt").write_text("alpha\n")
        (mnt / "c.bin").write_bytes(random.Random(3).randbytes(20_000))
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("where", ["readonly_tree", "ramfs_tree"])
def test_key_store_makes_unwritable_sources_stable(
    where: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    src: Path = request.getfixturevalue(where)
    store = tmp_path / "keys.db"
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    assert create(src, a, "--stable-keys", "--key-store", str(store)) == ""
    assert create(src, b, "--stable-keys", "--key-store", str(store)) == ""
    assert a.read_bytes() == b.read_bytes() and store.stat().st_size > 0
    assert run_cli(["verify", str(a)]).returncode == 0


def test_without_key_store_one_warning_and_exit_0(readonly_tree: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    err = create(readonly_tree, a, "--stable-keys")
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1, err
    assert "2 files (a.txt, sub/b.bin)" in warnings[0] and "--key-store" in warnings[0]
    create(readonly_tree, b, "--stable-keys")
    assert a.read_bytes() != b.read_bytes()  # the keys could not be kept


def test_no_write_permission_falls_back_to_the_store(tmp_path: Path) -> None:
    """root without CAP_DAC_OVERRIDE meets file modes like anyone: 0444 files refuse xattrs."""
    root_only()
    src = tmp_path / "src"
    src.mkdir()
    (src / "locked.txt").write_text("read only for everyone\n")
    os.chmod(src / "locked.txt", 0o444)
    store = tmp_path / "keys.db"
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    assert create(src, a, "--stable-keys", "--key-store", str(store), drop_dac=True) == ""
    with pytest.raises(OSError):
        xattr.getxattr(str(src / "locked.txt"), XATTR)
    assert create(src, b, "--stable-keys", "--key-store", str(store), drop_dac=True) == ""
    assert a.read_bytes() == b.read_bytes()


def test_options_need_stable_keys(tree: Path, tmp_path: Path) -> None:
    r = run_cli(["create", str(tree), "-o", str(tmp_path / "x.tar"), "--key-store", "k.db"])
    assert r.returncode == 2 and b"--stable-keys" in r.stderr
