"""Stable key sources on real files: user xattrs on ext4/tmpfs, the SQLite key store on ramfs
(which has no user xattrs at all), and the validity of the headers built from reused material."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import xattr

from ecarchive.ecryptfs.constants import AES_CODES
from ecarchive.ecryptfs.header import build_header, parse_header, unwrap_fek
from ecarchive.ecryptfs.keys import KeyringKey, derive_key
from ecarchive.errors import Reporter
from ecarchive.keystore import (
    XATTR_NAME,
    StableKeys,
    StoredMaterial,
    pack_material,
    unpack_material,
    usable_material,
)
from ecarchive.model import Entry, Kind


@pytest.fixture(scope="module")
def key() -> KeyringKey:
    return derive_key(b"stable keys test")


@pytest.fixture(scope="module")
def other_key() -> KeyringKey:
    return derive_key(b"another passphrase")


def entry_for(path: Path, rel: str | None = None) -> Entry:
    st = os.lstat(path)
    return Entry(
        kind=Kind.FILE,
        path=b"Private/x",
        mode=0o644,
        uid=0,
        gid=0,
        uname="",
        gname="",
        mtime_ns=st.st_mtime_ns,
        source=os.fsencode(path),
        plain_size=st.st_size,
        rel=os.fsencode(rel or path.name),
    )


def quiet() -> tuple[Reporter, io.StringIO]:
    stream = io.StringIO()
    return Reporter("ecarchive", stream), stream


def test_blob_round_trip() -> None:
    stored = StoredMaterial(16, 0x07, 0xDEADBEEF, 12345, -5, b"\x8c" + bytes(40))
    assert unpack_material(pack_material(stored)) == stored


def test_xattr_reused_across_runs_and_header_is_valid(tmp_path: Path, key: KeyringKey) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"hello")
    reporter, _ = quiet()
    first = StableKeys(key, 16, reporter).material(entry_for(f))
    blob = xattr.getxattr(str(f), XATTR_NAME)
    second_source = StableKeys(key, 16, reporter)
    second = second_source.material(entry_for(f))
    assert second == first
    assert second_source.stats.reused == 1 and second_source.stats.fresh == 0
    assert xattr.getxattr(str(f), XATTR_NAME) == blob
    header = parse_header(build_header(5, second.marker, second.packets, filenames_encrypted=True))
    packet = header.packet_for(key.sig)
    assert packet is not None
    assert unwrap_fek(packet.efek, packet.cipher_code, key) == first.fek


def test_hard_link_and_rename_share_the_inode_key(tmp_path: Path, key: KeyringKey) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"x" * 5000)
    reporter, _ = quiet()
    first = StableKeys(key, 32, reporter).material(entry_for(f))
    os.link(f, tmp_path / "b")
    os.rename(f, tmp_path / "c")
    src = StableKeys(key, 32, reporter)
    assert src.material(entry_for(tmp_path / "b")) == first
    assert src.material(entry_for(tmp_path / "c")) == first


def test_other_passphrase_or_key_size_gets_fresh_material(
    tmp_path: Path, key: KeyringKey, other_key: KeyringKey
) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"data")
    reporter, _ = quiet()
    first = StableKeys(key, 16, reporter).material(entry_for(f))
    by_other = StableKeys(other_key, 16, reporter).material(entry_for(f))
    assert by_other.fek != first.fek and by_other.packets != first.packets
    # the xattr now holds the other key's material: the first key must not reuse it
    again = StableKeys(key, 16, reporter).material(entry_for(f))
    assert again.fek != first.fek and again.fek != by_other.fek
    bigger = StableKeys(key, 24, reporter).material(entry_for(f))
    assert len(bigger.fek) == 24
    assert parse_header(build_header(4, bigger.marker, bigger.packets, filenames_encrypted=False))


def test_rotate_on_change(tmp_path: Path, key: KeyringKey) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"one")
    reporter, _ = quiet()
    first = StableKeys(key, 16, reporter).material(entry_for(f))
    os.utime(f, ns=(1, 2_000_000_000))
    kept = StableKeys(key, 16, reporter).material(entry_for(f))
    assert kept == first
    rotated = StableKeys(key, 16, reporter, rotate_on_change=True).material(entry_for(f))
    assert rotated.fek != first.fek
    # the new key was stored for the new state: the next run reuses it
    assert StableKeys(key, 16, reporter, rotate_on_change=True).material(entry_for(f)) == rotated
    f.write_bytes(b"one more")
    assert StableKeys(key, 16, reporter, rotate_on_change=True).material(entry_for(f)) != rotated


@pytest.mark.parametrize("blob", [b"", b"garbage", b"ECAK\x02" + bytes(40)])
def test_foreign_xattr_is_replaced(tmp_path: Path, key: KeyringKey, blob: bytes) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"z")
    xattr.setxattr(str(f), XATTR_NAME, blob)
    reporter, _ = quiet()
    src = StableKeys(key, 16, reporter)
    material = src.material(entry_for(f))
    assert src.stats.fresh == 1
    stored = unpack_material(xattr.getxattr(str(f), XATTR_NAME))
    assert usable_material(stored, key, 16) == material


def test_tampered_packets_are_not_reused(tmp_path: Path, key: KeyringKey) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"z")
    reporter, _ = quiet()
    material = StableKeys(key, 16, reporter).material(entry_for(f))
    stored = unpack_material(xattr.getxattr(str(f), XATTR_NAME))
    bad = StoredMaterial(
        16, AES_CODES[32], stored.marker, stored.plain_size, stored.mtime_ns, stored.packets
    )
    assert usable_material(bad, key, 16) is None
    truncated = StoredMaterial(16, stored.cipher_code, stored.marker, 1, 1, stored.packets[:-3])
    assert usable_material(truncated, key, 16) is None
    assert usable_material(stored, key, 16) == material


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    """A file system without user xattrs (ramfs refuses them with EOPNOTSUPP)."""
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "ramfs", "none", str(mnt)]).returncode:
        pytest.skip("cannot mount ramfs (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_no_xattr_fs_without_store_warns_once(ramfs: Path, key: KeyringKey) -> None:
    for name in ("a", "b", "c"):
        (ramfs / name).write_bytes(name.encode())
    with pytest.raises(OSError):
        xattr.setxattr(str(ramfs / "a"), "user.probe", b"1")
    reporter, stream = quiet()
    src = StableKeys(key, 16, reporter)
    first = [src.material(entry_for(ramfs / n)) for n in ("a", "b", "c")]
    src.close()
    text = stream.getvalue()
    assert text.count("warning") == 1 and "3 files (a, b, c)" in text
    assert reporter.exit_code == 0  # never fails the backup
    again = StableKeys(key, 16, reporter).material(entry_for(ramfs / "a"))
    assert again.fek != first[0].fek


def test_key_store_fallback_survives_rename_and_restore(
    ramfs: Path, tmp_path: Path, key: KeyringKey
) -> None:
    store = tmp_path / "keys.db"
    (ramfs / "a").write_bytes(b"a" * 10000)
    (ramfs / "b").write_bytes(b"b")
    reporter, stream = quiet()
    src = StableKeys(key, 16, reporter, store_path=str(store))
    first_a = src.material(entry_for(ramfs / "a"))
    first_b = src.material(entry_for(ramfs / "b"))
    src.close()
    assert stream.getvalue() == ""
    assert oct(store.stat().st_mode & 0o777) == "0o600"
    assert len(sqlite3.connect(store).execute("SELECT * FROM ecarchive_keys").fetchall()) == 2

    os.rename(ramfs / "a", ramfs / "renamed")  # same inode, same size and mtime
    shutil.copy2(ramfs / "b", ramfs / "b.new")  # a copy with preserved mtime replaces b
    os.replace(ramfs / "b.new", ramfs / "b")
    src = StableKeys(key, 16, reporter, store_path=str(store))
    assert src.material(entry_for(ramfs / "renamed")) == first_a
    assert src.material(entry_for(ramfs / "b")) == first_b
    assert src.stats.reused == 2 and not src.stats.unstable
    src.close()
    rows = sqlite3.connect(store).execute("SELECT path FROM ecarchive_keys ORDER BY path")
    assert [bytes(r[0]) for r in rows] == [b"b", b"renamed"]


def test_key_store_keys_move_to_the_xattr_when_it_becomes_writable(
    ramfs: Path, tmp_path: Path, key: KeyringKey
) -> None:
    store = tmp_path / "keys.db"
    (ramfs / "a").write_bytes(b"payload")
    reporter, _ = quiet()
    src = StableKeys(key, 16, reporter, store_path=str(store))
    first = src.material(entry_for(ramfs / "a"))
    src.close()
    moved = tmp_path / "a"
    shutil.copy2(ramfs / "a", moved)  # now on a file system with user xattrs
    src = StableKeys(key, 16, reporter, store_path=str(store))
    assert src.material(entry_for(moved, rel="a")) == first
    src.close()
    assert (
        usable_material(unpack_material(xattr.getxattr(str(moved), XATTR_NAME)), key, 16) == first
    )


def test_unusable_key_store_only_warns(tmp_path: Path, key: KeyringKey) -> None:
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not sqlite" * 100)
    reporter, stream = quiet()
    src = StableKeys(key, 16, reporter, store_path=str(bad))
    f = tmp_path / "f"
    f.write_bytes(b"1")
    src.material(entry_for(f))
    src.close()
    assert "key store" in stream.getvalue()


def test_copied_xattr_does_not_share_a_key(tmp_path: Path, key: KeyringKey) -> None:
    """`cp -a` copies user xattrs: the copy must get its own key, and keep it afterwards."""
    original = tmp_path / "a"
    original.write_bytes(b"same content")
    reporter, _ = quiet()
    first = StableKeys(key, 16, reporter).material(entry_for(original))
    subprocess.run(["cp", "-a", str(original), str(tmp_path / "b")], check=True)
    assert xattr.getxattr(str(tmp_path / "b"), XATTR_NAME) == xattr.getxattr(
        str(original), XATTR_NAME
    )
    src = StableKeys(key, 16, reporter)
    a_run1, b_run1 = src.material(entry_for(original)), src.material(entry_for(tmp_path / "b"))
    assert a_run1 == first and b_run1.fek != first.fek
    src = StableKeys(key, 16, reporter)
    assert src.material(entry_for(original)) == a_run1
    assert src.material(entry_for(tmp_path / "b")) == b_run1


def test_unchanged_key_store_is_not_rewritten(ramfs: Path, tmp_path: Path, key: KeyringKey) -> None:
    """A second run over an unchanged tree leaves the store byte for byte as it was."""
    store = tmp_path / "keys.db"
    for name in ("a", "b"):
        (ramfs / name).write_bytes(name.encode() * 100)
    states = []
    for _run in range(2):
        reporter, _stream = quiet()
        src = StableKeys(key, 16, reporter, store_path=str(store))
        for name in ("a", "b"):
            src.material(entry_for(ramfs / name))
        src.close()
        states.append((store.read_bytes(), store.stat().st_mtime_ns))
    assert states[0] == states[1]
