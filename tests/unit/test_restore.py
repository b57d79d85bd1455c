"""Userspace restore on lower trees built here with the format package, and on pecryptfs files.

The kernel-made trees are in tests/interop/test_fixtures.py; these cases cover what those
trees lack: several 1 MiB decryption chunks, setuid, fifos, devices, read-only directories,
nanosecond mtimes, 24-byte keys, unsafe member paths, and the order a wrong passphrase is
found in.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecarchive.ecryptfs.constants import EXTENT_SIZE
from ecarchive.ecryptfs.extent import encrypt_extents, root_iv
from ecarchive.ecryptfs.header import build_header, key_packets, wrap_fek
from ecarchive.ecryptfs.keys import FnekMode, KeySet, derive_keyset
from ecarchive.ecryptfs.names import encrypt_name
from ecarchive.errors import NoArchiveFound, Reporter, WrongPassphrase
from ecarchive.read.decode import CHUNK
from ecarchive.read.listing import escape_path, list_archive
from ecarchive.read.members import UnsafePath, split_member_path
from ecarchive.read.restore import restore_archive
from tests.support.restore_stdin import restore_from_stdin

REPO = Path(__file__).resolve().parents[2]
PECRYPTFS = REPO / "tests" / "data" / "pecryptfs"
PASSPHRASE = b"unit test passphrase"
MTIME_NS = 1_234_567_890_123_456_789
BIG = 2 * CHUNK + EXTENT_SIZE + 1  # three decryption chunks, the last one partial
IS_ROOT = os.geteuid() == 0


def _quiet() -> Reporter:
    return Reporter(stream=io.StringIO())


class LowerTree:
    """Writes a lower directory the way the kernel lays it out (header, extents, tag 70 names)."""

    def __init__(self, root: Path, keys: KeySet, key_bytes: int) -> None:
        self.root = root
        self.keys = keys
        self.key_bytes = key_bytes
        root.mkdir(parents=True, exist_ok=True)

    def lower(self, rel: str) -> Path:
        if self.keys.fnek is None:
            return self.root / rel
        parts = [
            encrypt_name(p.encode(), self.keys.fnek, self.key_bytes).decode()
            for p in rel.split("/")
        ]
        return self.root.joinpath(*parts)

    def target(self, target: str) -> str:
        if self.keys.fnek is None:
            return target
        return encrypt_name(target.encode(), self.keys.fnek, self.key_bytes).decode()

    def file(self, rel: str, data: bytes, mode: int = 0o644) -> Path:
        key = self.keys.file_key
        fek = secrets.token_bytes(self.key_bytes)
        packets = key_packets(wrap_fek(fek, key), self.key_bytes, key.sig)
        header = build_header(
            len(data), secrets.randbits(32), packets, filenames_encrypted=self.keys.fnek is not None
        )
        padded = data + bytes(-len(data) % EXTENT_SIZE)
        body = bytearray(len(padded))
        encrypt_extents(fek, root_iv(fek), 0, padded, body)
        path = self.lower(rel)
        path.write_bytes(header + body)
        path.chmod(mode)
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
        return path

    def dir(self, rel: str, mode: int = 0o755) -> Path:
        path = self.lower(rel)
        path.mkdir()
        return path

    def symlink(self, rel: str, target: str) -> Path:
        path = self.lower(rel)
        path.symlink_to(self.target(target))
        return path

    def seal_dirs(self, modes: dict[str, int]) -> None:
        """Directory modes and times last, deepest first, as a restore must also do."""
        for rel in sorted(modes, key=lambda r: -r.count("/")):
            path = self.lower(rel)
            path.chmod(modes[rel])
            os.utime(path, ns=(MTIME_NS, MTIME_NS))


def _pattern(n: int) -> bytes:
    block = bytes(range(251))  # period prime to the extent size: every extent differs
    return (block * (n // len(block) + 1))[:n]


@pytest.mark.parametrize("key_bytes", [16, 24, 32])
def test_pecryptfs_files_decrypt_to_hello_world(key_bytes: int, tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    shutil.copyfile(PECRYPTFS / f"aes-{key_bytes}.raw", lower / "hello")
    reporter = _quiet()
    restore_archive(str(lower), str(tmp_path / "out"), b"Test", reporter)
    assert reporter.warnings == []
    assert (tmp_path / "out" / "hello").read_bytes() == b"Hello World\n"


@pytest.mark.parametrize(
    ("mode", "key_bytes"),
    [(FnekMode.SEPARATE, 24), (FnekMode.SAME, 32), (FnekMode.OFF, 16)],
)
def test_synthetic_tree_round_trips(mode: FnekMode, key_bytes: int, tmp_path: Path) -> None:
    tree = LowerTree(tmp_path / "lower", derive_keyset(PASSPHRASE, mode), key_bytes)
    # names come before any header here, so the name key size must be found from names alone
    tree.dir("a")
    tree.dir("a/ro")
    tree.file("a/ro/inside", b"x" * 5)
    tree.file("a/big.bin", _pattern(BIG))
    tree.file("setuid", b"#!/bin/sh\n", mode=0o4755)
    tree.file("sticky-sgid", b"", mode=0o2640)
    tree.symlink("a/up", "../setuid")
    os.mkfifo(tree.lower("fifo"), 0o640)
    os.utime(tree.lower("fifo"), ns=(MTIME_NS, MTIME_NS))
    hard = tree.lower("a/big-link")
    os.link(tree.lower("a/big.bin"), hard)
    tree.seal_dirs({"a/ro": 0o555, "a": 0o750})

    reporter = _quiet()
    out = tmp_path / "out"
    restore_archive(str(tree.root), str(out), PASSPHRASE, reporter)
    assert reporter.warnings == []

    assert (out / "a" / "big.bin").read_bytes() == _pattern(BIG)
    assert (out / "a" / "ro" / "inside").read_bytes() == b"xxxxx"
    assert (out / "a" / "big-link").stat().st_ino == (out / "a" / "big.bin").stat().st_ino
    assert os.readlink(out / "a" / "up") == "../setuid"
    assert stat.S_IMODE((out / "setuid").stat().st_mode) == 0o4755
    assert stat.S_IMODE((out / "sticky-sgid").stat().st_mode) == 0o2640
    assert stat.S_ISFIFO((out / "fifo").lstat().st_mode)
    assert stat.S_IMODE((out / "fifo").lstat().st_mode) == 0o640
    assert stat.S_IMODE((out / "a" / "ro").stat().st_mode) == 0o555
    assert stat.S_IMODE((out / "a").stat().st_mode) == 0o750
    for rel in ("a", "a/ro", "a/big.bin", "setuid", "fifo"):
        assert (out / rel).lstat().st_mtime_ns == MTIME_NS, rel
    assert (out / "a" / "up").lstat().st_mtime_ns == (tree.lower("a/up")).lstat().st_mtime_ns


@pytest.mark.skipif(not IS_ROOT, reason="mknod and chown need root")
def test_devices_and_owners_as_root(tmp_path: Path) -> None:
    tree = LowerTree(tmp_path / "lower", derive_keyset(PASSPHRASE, FnekMode.SEPARATE), 16)
    os.mknod(tree.lower("null"), 0o620 | stat.S_IFCHR, os.makedev(1, 3))
    path = tree.file("owned", b"data")
    os.chown(path, 1234, 5678)
    path.chmod(0o4750)  # after chown, which clears setuid
    reporter = _quiet()
    restore_archive(str(tree.root), str(tmp_path / "out"), PASSPHRASE, reporter)
    assert reporter.warnings == []
    st = (tmp_path / "out" / "null").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    st = (tmp_path / "out" / "owned").stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert stat.S_IMODE(st.st_mode) == 0o4750  # setuid survives because chown came first


def test_wrong_passphrase_found_before_any_directory_is_made(tmp_path: Path) -> None:
    """Clear names carry no signature: directories wait until a header confirms the key."""
    tree = LowerTree(tmp_path / "lower", derive_keyset(PASSPHRASE, FnekMode.OFF), 16)
    tree.dir("a")
    tree.dir("a/b")
    tree.symlink("a/b/link", "x")
    tree.file("a/b/z-file", b"content")
    dest = tmp_path / "out"
    with pytest.raises(
        WrongPassphrase, match=derive_keyset(PASSPHRASE, FnekMode.OFF).file_key.sig_hex
    ):
        restore_archive(str(tree.root), str(dest), b"another passphrase", _quiet())
    assert not dest.exists()
    reporter = _quiet()
    restore_archive(str(tree.root), str(dest), PASSPHRASE, reporter)
    assert (dest / "a" / "b" / "z-file").read_bytes() == b"content"
    assert os.readlink(dest / "a" / "b" / "link") == "x"


def test_tree_without_files_or_encrypted_names_restores_beside_restore_txt(
    tmp_path: Path,
) -> None:
    """Nothing in it carries a signature: the plain RESTORE.txt beside it makes it an archive."""
    tree = LowerTree(tmp_path / "archive" / "Private", derive_keyset(PASSPHRASE, FnekMode.OFF), 16)
    tree.dir("only-dirs")
    (tmp_path / "archive" / "RESTORE.txt").write_bytes(b"how to restore\n")
    reporter = _quiet()
    restore_archive(str(tmp_path / "archive"), str(tmp_path / "out"), PASSPHRASE, reporter)
    assert (tmp_path / "out" / "only-dirs").is_dir()


def test_empty_directory_is_no_archive(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoArchiveFound, match="no ecarchive archive found"):
        restore_archive(str(empty), str(tmp_path / "out"), PASSPHRASE, _quiet())
    assert not (tmp_path / "out").exists()


def test_plain_restore_txt_is_ignored_but_an_ecryptfs_one_is_restored(tmp_path: Path) -> None:
    tree = LowerTree(tmp_path / "lower", derive_keyset(PASSPHRASE, FnekMode.OFF), 16)
    tree.file("RESTORE.txt", b"a user's own file called RESTORE.txt")
    tree.file("MANIFEST", b"and another")
    tree.dir("d")
    reporter = _quiet()
    restore_archive(str(tree.root), str(tmp_path / "out"), PASSPHRASE, reporter)
    assert reporter.warnings == []
    assert (
        tmp_path / "out" / "RESTORE.txt"
    ).read_bytes() == b"a user's own file called RESTORE.txt"
    assert (tmp_path / "out" / "MANIFEST").read_bytes() == b"and another"


def test_hard_link_to_skipped_file_is_warned(tmp_path: Path) -> None:
    # clear names, so the walk (sorted by lower name) meets a-first before b-second
    tree = LowerTree(tmp_path / "lower", derive_keyset(PASSPHRASE, FnekMode.OFF), 16)
    first = tree.file("a-first", b"abc")
    os.link(first, tree.lower("b-second"))
    tree.file("c-good", b"fine")
    with first.open("r+b") as f:
        f.seek(8)
        f.write(b"\0\0\0\0")
    reporter = _quiet()
    restore_archive(str(tree.root), str(tmp_path / "out"), PASSPHRASE, reporter)
    assert reporter.exit_code == 1
    assert len(reporter.warnings) == 2
    assert "a-first" in reporter.warnings[0] and "marker" in reporter.warnings[0]
    assert "b-second" in reporter.warnings[1] and "not restored" in reporter.warnings[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c-good"]


def test_damaged_directory_name_skips_its_subtree_once(tmp_path: Path) -> None:
    keys = derive_keyset(PASSPHRASE, FnekMode.SEPARATE)
    tree = LowerTree(tmp_path / "lower", keys, 16)
    tree.file("a-good", b"first, so the key is confirmed")
    other = derive_keyset(b"someone else", FnekMode.SEPARATE)
    assert other.fnek is not None
    foreign = tree.root / encrypt_name(b"theirs", other.fnek, 16).decode()
    foreign.mkdir()
    (foreign / "child").mkdir()
    (foreign / "child" / "file").write_bytes(b"never read")
    reporter = _quiet()
    restore_archive(str(tree.root), str(tmp_path / "out"), PASSPHRASE, reporter)
    assert len(reporter.warnings) == 1
    assert "names encrypted with another key" in reporter.warnings[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a-good"]


def _tar(args: list[str], cwd: Path) -> None:
    subprocess.run(["tar", "--format=pax", *args], cwd=cwd, check=True, capture_output=True)


def test_unsafe_member_paths_are_refused(tmp_path: Path) -> None:
    tree = LowerTree(tmp_path / "lower", derive_keyset(PASSPHRASE, FnekMode.OFF), 16)
    tree.file("evil", b"would land outside")
    tree.file("fine", b"ok")
    tar = tmp_path / "evil.tar"
    _tar(["-cf", str(tar), "fine"], tree.root)
    _tar(["-rf", str(tar), "--transform=s,^,../,", "evil"], tree.root)
    _tar(["-rf", str(tar), "-P", "--transform=s,^," + str(tmp_path) + "/abs-,", "evil"], tree.root)
    listing = subprocess.run(["tar", "-tPf", str(tar)], capture_output=True, text=True, check=True)
    assert "../evil" in listing.stdout and f"{tmp_path}/abs-evil" in listing.stdout

    reporter = _quiet()
    restore_archive(str(tar), str(tmp_path / "dest" / "out"), PASSPHRASE, reporter)
    assert reporter.exit_code == 1
    assert len(reporter.warnings) == 2
    assert "'..'" in reporter.warnings[0] and "absolute" in reporter.warnings[1]
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "dest" / "out").iterdir()) == ["fine"]
    assert not (tmp_path / "abs-evil").exists()


def test_symlink_then_directory_of_same_name_stays_inside(tmp_path: Path) -> None:
    """A member may not write through a symlink an earlier member planted."""
    keys = derive_keyset(PASSPHRASE, FnekMode.SEPARATE)
    outside = tmp_path / "outside"
    outside.mkdir()
    first = LowerTree(tmp_path / "one", keys, 16)
    first.symlink("link", str(outside))
    first.file("a-key-confirming-file", b"")
    second = LowerTree(tmp_path / "two", keys, 16)
    second.dir("link")
    second.file("link/payload", b"must stay in DEST")
    tar = tmp_path / "two-parts.tar"
    _tar(["-cf", str(tar), "."], first.root)
    _tar(["-rf", str(tar), "."], second.root)
    reporter = _quiet()
    restore_archive(str(tar), str(tmp_path / "out"), PASSPHRASE, reporter)
    assert reporter.warnings == []
    assert list(outside.iterdir()) == []
    assert (tmp_path / "out" / "link" / "payload").read_bytes() == b"must stay in DEST"
    assert not (tmp_path / "out" / "link").is_symlink()


def test_dest_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    from ecarchive.errors import OutputFailed

    tree = LowerTree(tmp_path / "lower", derive_keyset(PASSPHRASE, FnekMode.SEPARATE), 16)
    tree.file("f", b"x")
    dest = tmp_path / "dest"
    dest.write_bytes(b"")
    with pytest.raises(OutputFailed, match="not a directory"):
        restore_archive(str(tree.root), str(dest), PASSPHRASE, _quiet())


def test_unreadable_source_is_archive_unreadable(tmp_path: Path) -> None:
    from ecarchive.errors import ArchiveUnreadable

    junk = tmp_path / "junk.bin"
    junk.write_bytes(secrets.token_bytes(10_000))
    with pytest.raises(ArchiveUnreadable):
        restore_archive(str(junk), str(tmp_path / "out"), PASSPHRASE, _quiet())
    with pytest.raises(ArchiveUnreadable, match="no such file"):
        restore_archive(str(tmp_path / "missing.tar"), str(tmp_path / "out"), PASSPHRASE, _quiet())
    assert not (tmp_path / "out").exists()


def test_truncated_tar_stream_keeps_what_came_before(tmp_path: Path) -> None:
    tree = LowerTree(tmp_path / "lower", derive_keyset(PASSPHRASE, FnekMode.OFF), 16)
    tree.file("a-small", b"small")
    tree.file("b-big", _pattern(BIG))
    tar = tmp_path / "t.tar"
    _tar(["--sort=name", "-cf", str(tar), "a-small", "b-big"], tree.root)
    os.truncate(tar, tar.stat().st_size // 2)
    result = restore_from_stdin(tar, tmp_path / "out", PASSPHRASE)
    assert result.returncode == 2, result.stderr
    assert b"b-big" in result.stderr and b"FATAL" in result.stderr
    assert (tmp_path / "out" / "a-small").read_bytes() == b"small"
    assert not (tmp_path / "out" / "b-big").exists()

    from ecarchive.errors import ArchiveUnreadable

    reporter = _quiet()
    with pytest.raises(ArchiveUnreadable, match="Truncated"):
        restore_archive(str(tar), str(tmp_path / "from-file"), PASSPHRASE, reporter)
    assert reporter.warnings and "b-big" in reporter.warnings[0]
    assert (tmp_path / "from-file" / "a-small").read_bytes() == b"small"
    assert not (tmp_path / "from-file" / "b-big").exists()


def test_list_format(tmp_path: Path) -> None:
    tree = LowerTree(tmp_path / "lower", derive_keyset(PASSPHRASE, FnekMode.SEPARATE), 16)
    tree.dir("d")
    tree.file("d/tab\there", b"12345")
    tree.symlink("d/l", "tab\there")
    out = io.StringIO()
    list_archive(str(tree.root), PASSPHRASE, _quiet(), out=out)
    assert out.getvalue().splitlines() == [
        "d\t-\td",
        "l\t-\td/l\ttab\\there",
        "f\t5\td/tab\\there",
    ]


def test_escape_path() -> None:
    assert escape_path("ünï 😀".encode()) == "ünï 😀"
    assert escape_path(b"a\\b\tc\nd") == "a\\\\b\\tc\\nd"
    assert escape_path(b"\x01\x7f\xff") == "\\x01\\x7f\\xff"


def test_split_member_path() -> None:
    assert split_member_path(b"./a//b/./c/") == (b"a", b"b", b"c")
    assert split_member_path(b"./") == ()
    with pytest.raises(UnsafePath):
        split_member_path(b"a/../../b")
    with pytest.raises(UnsafePath):
        split_member_path(b"/etc/passwd")


def _flip_marker(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(8)
        f.write(b"\0\0\0\0")


def _break_packet(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(26)  # the tag 3 packet's type byte, right after the fixed header fields
        f.write(b"\x00")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_flip_marker, "no eCryptfs marker"),
        (_break_packet, "no key packet"),
        (lambda p: os.truncate(p, 100), "truncated inside the eCryptfs header"),
        (lambda p: os.truncate(p, 8192 + EXTENT_SIZE), "truncated: 4096 of 12288 bytes"),
    ],
    ids=["marker", "packet", "short-header", "short-data"],
)
def test_each_kind_of_damage_skips_one_file(
    damage: Callable[[Path], None], message: str, tmp_path: Path
) -> None:
    tree = LowerTree(tmp_path / "lower", derive_keyset(PASSPHRASE, FnekMode.SEPARATE), 16)
    tree.file("good-1", b"one")
    victim = tree.file("victim", _pattern(3 * EXTENT_SIZE))
    tree.file("good-2", b"two")
    damage(victim)
    for via in ("directory", "tar"):
        source = tree.root
        if via == "tar":
            source = tmp_path / "t.tar"
            _tar(["--sort=name", "-cf", str(source), "."], tree.root)
        reporter = _quiet()
        out = tmp_path / f"out-{via}"
        restore_archive(str(source), str(out), PASSPHRASE, reporter)
        assert reporter.exit_code == 1
        assert len(reporter.warnings) == 1, reporter.warnings
        assert reporter.warnings[0].startswith("victim: ") and message in reporter.warnings[0]
        assert sorted(p.name for p in out.iterdir()) == ["good-1", "good-2"]
        assert (out / "good-2").read_bytes() == b"two"


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=70 * 1024), min_size=1, max_size=4),
    name=st.binary(min_size=1, max_size=143).filter(lambda n: b"/" not in n and b"\0" not in n),
    key_bytes=st.sampled_from([16, 24, 32]),
)
def test_property_sizes_and_names(
    sizes: list[int], name: bytes, key_bytes: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if name in (b".", b".."):
        name = b"dot" + name
    base = tmp_path_factory.mktemp("prop")
    keys = derive_keyset(PASSPHRASE, FnekMode.SEPARATE)
    tree = LowerTree(base / "lower", keys, key_bytes)
    assert keys.fnek is not None
    subdir = tree.root / encrypt_name(name, keys.fnek, key_bytes).decode()
    subdir.mkdir()
    contents = [secrets.token_bytes(n) for n in sizes]
    for i, data in enumerate(contents):
        sub = LowerTree(subdir, keys, key_bytes)
        sub.file(f"f{i}", data)
    out = base / "out"
    reporter = _quiet()
    restore_archive(str(tree.root), str(out), PASSPHRASE, reporter)
    assert reporter.warnings == []
    restored = out / os.fsdecode(name)
    for i, data in enumerate(contents):
        assert (restored / f"f{i}").read_bytes() == data


def test_zero_extents_come_back_as_holes(tmp_path: Path) -> None:
    """A sparse VM image: runs of all-zero plaintext extents are seeked over, not written."""
    tree = LowerTree(tmp_path / "lower", derive_keyset(PASSPHRASE, FnekMode.OFF), 16)
    head, tail = _pattern(CHUNK + 100), _pattern(3 * EXTENT_SIZE + 5)
    data = head + bytes(16 * CHUNK + 123) + tail
    tree.file("vm.img", data)
    tree.file("zeros-at-the-end", _pattern(10) + bytes(4 * CHUNK))
    reporter = _quiet()
    restore_archive(str(tree.root), str(tmp_path / "out"), PASSPHRASE, reporter)
    assert reporter.warnings == []
    image = tmp_path / "out" / "vm.img"
    assert image.read_bytes() == data
    assert image.stat().st_blocks * 512 < 4 * CHUNK
    ending = tmp_path / "out" / "zeros-at-the-end"
    assert ending.read_bytes() == _pattern(10) + bytes(4 * CHUNK)
    assert ending.stat().st_blocks * 512 < CHUNK
