"""Restore, list and verify against inputs made to hurt: every archive is crafted here.

Each test reproduces one attack or one kind of damage from issue 9 and checks what must hold:
nothing outside DEST changes, a foreign input is one clear error, one damaged member costs
that member only, and every name printed is escaped.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from ecarchive.ecryptfs.constants import EXTENT_SIZE, HEADER_SIZE
from ecarchive.ecryptfs.extent import encrypt_extents, root_iv
from ecarchive.ecryptfs.header import build_header, key_packets, wrap_fek
from ecarchive.ecryptfs.keys import FnekMode, derive_keyset
from ecarchive.errors import NoArchiveFound, Reporter
from ecarchive.read.restore import Existing, restore_archive
from tests.cli.conftest import PASSPHRASE, run_cli
from tests.unit.test_restore import LowerTree

SECRET = PASSPHRASE.encode()
CLEAR = derive_keyset(SECRET, FnekMode.OFF)  # clear names: crafted paths stay readable
IS_ROOT = os.geteuid() == 0


def _quiet() -> Reporter:
    return Reporter(stream=io.StringIO())


def _tar_of(root: Path, out: Path, *names: str, append: bool = False) -> Path:
    subprocess.run(
        ["tar", "--format=pax", "-rf" if append else "-cf", str(out), *names],
        cwd=root,
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real ecarchive tar and ISO of a small tree (manifest included)."""
    work = tmp_path_factory.mktemp("made")
    src = work / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "a.txt").write_bytes(b"alpha\n" * 1000)
    (src / "b.bin").write_bytes(bytes(range(256)) * 64)
    out = {}
    for fmt in ("tar", "iso"):
        path = work / f"made.{fmt}"
        r = run_cli(["create", "--format", fmt, "-o", str(path), str(src)])
        assert r.returncode == 0, r.stderr.decode()
        out[fmt] = path
    out["src"] = src
    return out


# --- item 1: nothing outside DEST ----------------------------------------------------------


def _craft(out: Path, members: list[tuple[str, str, object]]) -> Path:
    """A pax tar of (type, name, value): 'd' mode, 'l' symlink target, 'h' link target,
    'f' path of a lower file to store."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        for kind, name, value in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, int(value)  # type: ignore[call-overload]
                t.addfile(info)
            elif kind in "lh":
                info.type = tarfile.SYMTYPE if kind == "l" else tarfile.LNKTYPE
                info.linkname = str(value)
                t.addfile(info)
            else:
                data = Path(str(value)).read_bytes()
                info.size, info.mode = len(data), 0o644
                t.addfile(info, io.BytesIO(data))
    return out


def test_deferred_directory_attributes_do_not_follow_a_later_symlink(tmp_path: Path) -> None:
    """a/, a/b/ (mode 0777), a failing member that removes a/b, a symlink a -> OUTSIDE: the
    attributes saved for a/b must not land on OUTSIDE/b (in one try this made ~/.ssh 0777)."""
    outside = tmp_path / "outside"
    (outside / "b").mkdir(parents=True)
    os.chmod(outside / "b", 0o700)
    os.utime(outside / "b", ns=(1_000_000_000, 1_000_000_000))
    before = os.lstat(outside / "b")
    tree = LowerTree(tmp_path / "lower", CLEAR, 16)
    good = tree.file("z-file", b"the passphrase is confirmed by this header")
    tar = _craft(
        tmp_path / "evil.tar",
        [
            ("f", "z-file", good),
            ("d", "a", 0o755),
            ("d", "a/b", 0o777),
            ("h", "a/b", "not-in-the-archive"),  # removes a/b, then fails
            ("l", "a", str(outside)),
        ],
    )
    dest = tmp_path / "dest"
    restore_archive(str(tar), str(dest), SECRET, _quiet())
    after = os.lstat(outside / "b")
    assert stat.S_IMODE(after.st_mode) == 0o700
    assert (after.st_uid, after.st_gid, after.st_mtime_ns) == (
        before.st_uid,
        before.st_gid,
        before.st_mtime_ns,
    )
    assert os.readlink(dest / "a") == str(outside)


def test_member_below_a_planted_symlink_stays_in_dest(tmp_path: Path) -> None:
    """A symlink `s` -> OUTSIDE, then a file `s/x`: x is made in DEST/s/ (a new directory)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    first = LowerTree(tmp_path / "one", CLEAR, 16)
    first.symlink("s", str(outside))
    second = LowerTree(tmp_path / "two", CLEAR, 16)
    second.dir("s")
    second.file("s/x", b"must stay inside")
    tar = _tar_of(first.root, tmp_path / "evil.tar", "s")
    _tar_of(second.root, tar, "s/x", append=True)  # s/x without its directory member
    dest = tmp_path / "dest"
    restore_archive(str(tar), str(dest), SECRET, _quiet())
    assert list(outside.iterdir()) == []
    assert (dest / "s" / "x").read_bytes() == b"must stay inside"


# --- item 2: blank or foreign input --------------------------------------------------------


def _iso_cut(made: dict[str, Path], tmp_path: Path) -> Path:
    data = made["iso"].read_bytes()
    cut = tmp_path / "cut.iso"
    cut.write_bytes(data[: 17 * 2048])  # system area + the primary volume descriptor
    return cut


def _iso_bad_size(made: dict[str, Path], tmp_path: Path) -> Path:
    data = bytearray(made["iso"].read_bytes())
    pvd = 16 * 2048
    data[pvd + 80 : pvd + 88] = (1).to_bytes(4, "little") + (1).to_bytes(4, "big")
    out = tmp_path / "bad-size.iso"
    out.write_bytes(bytes(data))
    return out


def _foreign(kind: str, made: dict[str, Path], tmp_path: Path) -> Path:
    if kind == "empty":
        p = tmp_path / "empty.tar"
        p.write_bytes(b"")
    elif kind == "zeros":
        p = tmp_path / "blank.iso"
        p.write_bytes(bytes(1 << 20))
    elif kind == "passwd":
        p = tmp_path / "passwd"
        p.write_bytes(b"".join(b"user%d:x:%d:%d::/home/u:/bin/sh\n" % (i, i, i) for i in range(50)))
    elif kind == "plain-tar":
        src = tmp_path / "plain"
        src.mkdir()
        for i in range(5):
            (src / f"file{i}.txt").write_text("ordinary text\n" * 100)
        p = _tar_of(src, tmp_path / "plain.tar", ".")
    elif kind == "plain-dir":
        p = tmp_path / "plaindir"
        (p / "sub").mkdir(parents=True)
        (p / "sub" / "notes.txt").write_text("hello\n")
    elif kind == "iso-cut":
        p = _iso_cut(made, tmp_path)
    else:
        p = _iso_bad_size(made, tmp_path)
    return p


FOREIGN = ["empty", "zeros", "passwd", "plain-tar", "plain-dir", "iso-cut", "iso-bad-size"]


@pytest.mark.parametrize("kind", FOREIGN)
def test_foreign_input_is_one_error_and_no_dest(
    kind: str, made: dict[str, Path], tmp_path: Path
) -> None:
    source = _foreign(kind, made, tmp_path)
    dest = tmp_path / "dest"
    r = run_cli(["restore", str(source), str(dest)])
    lines = r.stderr.decode().splitlines()
    assert r.returncode == 2, lines
    assert len(lines) == 1 and lines[0].startswith("ecarchive: error: "), lines
    assert "no ecarchive archive found" in lines[0]
    assert not dest.exists()


def test_empty_stdin_is_an_error(tmp_path: Path) -> None:
    """`ssh host cat x.tar | ecarchive restore - DEST` where ssh failed."""
    r = run_cli(["restore", "-", str(tmp_path / "dest")], stdin=b"")
    assert r.returncode == 2
    assert r.stderr.decode() == "ecarchive: error: -: no ecarchive archive found\n"
    assert not (tmp_path / "dest").exists()


# --- item 3: restore checks what it writes -------------------------------------------------


def _member_offset(tar: Path, suffix_len: int = 0) -> tuple[int, int]:
    """(data offset, size) of the largest lower file in a tar."""
    with tarfile.open(tar) as t:
        files = [m for m in t.getmembers() if m.isfile() and m.name.startswith("Private/")]
        big = max(files, key=lambda m: m.size)
        return big.offset_data, big.size


def test_flipped_bit_is_named_by_restore(made: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(made["tar"].read_bytes())
    offset, size = _member_offset(made["tar"])
    assert size > HEADER_SIZE + EXTENT_SIZE
    data[offset + HEADER_SIZE + 100] ^= 0x01
    bad = tmp_path / "flipped.tar"
    bad.write_bytes(bytes(data))
    r = run_cli(["restore", str(bad), str(tmp_path / "dest")])
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "b.bin: restored content differs from the manifest (SHA-256 mismatch)" in err
    assert (tmp_path / "dest" / "dir" / "a.txt").read_bytes() == b"alpha\n" * 1000


def test_clean_archive_restores_without_a_word(made: dict[str, Path], tmp_path: Path) -> None:
    for fmt in ("tar", "iso"):
        r = run_cli(["restore", "-q", str(made[fmt]), str(tmp_path / fmt)])
        assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
        assert (tmp_path / fmt / "b.bin").read_bytes() == (made["src"] / "b.bin").read_bytes()


# --- item 4: one damaged member never costs the rest ---------------------------------------


@pytest.mark.parametrize("efek_bytes", [17, 24, 48])
def test_wrapped_key_of_no_aes_size_costs_one_file(efek_bytes: int, tmp_path: Path) -> None:
    tree = LowerTree(tmp_path / "lower", CLEAR, 16)
    tree.file("a-good", b"fine")
    packets = key_packets(bytes(efek_bytes), 16, CLEAR.file_key.sig)
    header = build_header(4, 1, packets, filenames_encrypted=False)
    (tree.root / "b-odd-key").write_bytes(header + bytes(EXTENT_SIZE))
    tree.file("c-good", b"also fine")
    reporter = _quiet()
    restore_archive(str(tree.root), str(tmp_path / "out"), SECRET, reporter)
    assert reporter.exit_code == 1
    assert len(reporter.warnings) == 1 and "b-odd-key" in reporter.warnings[0]
    assert (tmp_path / "out" / "c-good").read_bytes() == b"also fine"


@pytest.mark.skipif(not IS_ROOT, reason="owners are only set as root")
def test_owner_beyond_32_bits_keeps_the_file(tmp_path: Path) -> None:
    tree = LowerTree(tmp_path / "lower", CLEAR, 16)
    tree.file("a-odd-owner", b"content")
    tree.file("b-good", b"fine")
    tar = tmp_path / "owners.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        for name in ("a-odd-owner", "b-good"):
            info = t.gettarinfo(str(tree.root / name), arcname=name)
            info.uname = info.gname = ""
            if name == "a-odd-owner":
                info.uid = info.gid = 1 << 32
            with open(tree.root / name, "rb") as f:
                t.addfile(info, f)
    reporter = _quiet()
    restore_archive(str(tar), str(tmp_path / "out"), SECRET, reporter)
    assert reporter.exit_code == 1
    assert [w for w in reporter.warnings if "a-odd-owner" in w]
    assert (tmp_path / "out" / "a-odd-owner").read_bytes() == b"content"
    assert (tmp_path / "out" / "b-good").read_bytes() == b"fine"


# --- item 5: the passphrase is judged over the archive ------------------------------------


def test_one_foreign_first_member_is_damage_not_a_wrong_passphrase(tmp_path: Path) -> None:
    other = LowerTree(tmp_path / "other", derive_keyset(b"someone else", FnekMode.OFF), 16)
    other.file("a-foreign", b"not ours")
    tree = LowerTree(tmp_path / "lower", CLEAR, 16)
    os.rename(other.root / "a-foreign", tree.root / "a-foreign")
    tree.file("b-good", b"ours")
    tree.file("c-good", b"ours too")
    reporter = _quiet()
    restore_archive(str(tree.root), str(tmp_path / "out"), SECRET, reporter)
    assert reporter.exit_code == 1
    assert len(reporter.warnings) == 1
    assert "a-foreign" in reporter.warnings[0] and "another key" in reporter.warnings[0]
    assert sorted(os.listdir(tmp_path / "out")) == ["b-good", "c-good"]


# --- item 8: output ------------------------------------------------------------------------


def test_crafted_name_cannot_fake_output_or_reach_the_terminal(tmp_path: Path) -> None:
    tree = LowerTree(tmp_path / "lower", CLEAR, 16)
    evil = "x\necarchive: restore complete\x1b[2J"
    path = tree.lower(evil)
    path.write_bytes(b"no eCryptfs header at all, so restore warns about it" * 200)
    tree.file("good", b"fine")
    r = run_cli(["restore", "-q", str(tree.root), str(tmp_path / "out")])
    err = r.stderr.decode()
    assert r.returncode == 1
    assert "\x1b" not in err and err.count("\n") == 1, err
    assert "x\\necarchive: restore complete\\x1b[2J" in err


def test_list_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    tree = LowerTree(tmp_path / "lower", CLEAR, 16)
    tree.file("file", b"confirms the passphrase")
    for i in range(3000):
        tree.dir(f"directory-with-a-rather-long-name-{i:05d}")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    env["ECARCHIVE_PASSPHRASE"] = PASSPHRASE
    proc = subprocess.Popen(
        ["python3", "-m", "ecarchive", "list", str(tree.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert err == "", err


# --- item 12: existing files ---------------------------------------------------------------


def _existing(tmp_path: Path) -> tuple[Path, Path]:
    tree = LowerTree(tmp_path / "lower", CLEAR, 16)
    tree.file("kept", b"from the archive")
    tree.file("new", b"new")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "kept").write_bytes(b"the user's")
    return tree.root, dest


@pytest.mark.parametrize(
    ("flag", "rc", "content", "warned"),
    [
        (None, 0, b"from the archive", False),
        ("--keep-old-files", 1, b"the user's", True),
        ("--skip-old-files", 0, b"the user's", False),
    ],
)
def test_existing_file_policy(
    flag: str | None, rc: int, content: bytes, warned: bool, tmp_path: Path
) -> None:
    source, dest = _existing(tmp_path)
    r = run_cli(["restore", *([flag] if flag else []), str(source), str(dest)])
    assert r.returncode == rc, r.stderr.decode()
    assert (dest / "kept").read_bytes() == content
    assert (dest / "new").read_bytes() == b"new"
    assert (b"kept: already exists" in r.stderr) is warned


def test_existing_policy_in_the_api(tmp_path: Path) -> None:
    source, dest = _existing(tmp_path)
    reporter = _quiet()
    restore_archive(str(source), str(dest), SECRET, reporter, existing=Existing.SKIP)
    assert reporter.warnings == [] and (dest / "kept").read_bytes() == b"the user's"


def test_no_archive_error_class(tmp_path: Path) -> None:
    (tmp_path / "zeros").write_bytes(bytes(4096))
    with pytest.raises(NoArchiveFound):
        restore_archive(str(tmp_path / "zeros"), str(tmp_path / "out"), SECRET, _quiet())


# --- item 6: bounded work ----------------------------------------------------------------------


def test_sparse_member_is_damage_not_a_huge_file(tmp_path: Path) -> None:
    """A small tar whose sparse map claims far more than it holds: the claimed size must not be
    "decrypted" from the holes' zeros into a fully allocated file."""
    claimed = 64 << 20
    lower = tmp_path / "lower"
    lower.mkdir()
    key = CLEAR.file_key
    fek = bytes(range(16))
    packets = key_packets(wrap_fek(fek, key), 16, key.sig)
    first = bytearray(EXTENT_SIZE)
    encrypt_extents(fek, root_iv(fek), 0, bytes(EXTENT_SIZE), first)
    with open(lower / "a-sparse", "wb") as f:
        f.write(build_header(claimed, 7, packets, filenames_encrypted=False) + first)
        f.truncate(HEADER_SIZE + claimed)
    LowerTree(lower, CLEAR, 16).file("b-good", b"fine")
    tar = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", "--format=pax", "-S", "-cf", str(tar), "a-sparse", "b-good"],
        cwd=lower,
        check=True,
    )
    assert tar.stat().st_size < 1 << 20
    reporter = _quiet()
    restore_archive(str(tar), str(tmp_path / "out"), SECRET, reporter)
    assert reporter.exit_code == 1
    assert [w for w in reporter.warnings if "a-sparse: sparse member" in w]
    assert not (tmp_path / "out" / "a-sparse").exists()
    assert (tmp_path / "out" / "b-good").read_bytes() == b"fine"


# --- item 9: DEST that already has content ---------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar", "iso"])
def test_restore_merges_into_dest_and_leaves_its_private_alone(
    fmt: str, made: dict[str, Path], tmp_path: Path
) -> None:
    """An ISO lists its lower directory before RESTORE.txt: the tree must still land at the
    top of DEST, and a DEST/Private/ of the user's is neither written into nor dissolved."""
    dest = tmp_path / "dest"
    (dest / "Private").mkdir(parents=True)
    (dest / "Private" / "mine.txt").write_bytes(b"the user's own")
    (dest / "b.bin").write_bytes(b"replaced, as tar does")
    r = run_cli(["restore", "-q", str(made[fmt]), str(dest)])
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    assert sorted(os.listdir(dest)) == ["Private", "b.bin", "dir"]
    assert os.listdir(dest / "Private") == ["mine.txt"]
    assert (dest / "Private" / "mine.txt").read_bytes() == b"the user's own"
    assert (dest / "b.bin").read_bytes() == (made["src"] / "b.bin").read_bytes()


def test_piped_iso_lands_at_the_top_of_dest(made: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    r = run_cli(["restore", "-q", "-", str(dest)], stdin=made["iso"].read_bytes())
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    assert sorted(os.listdir(dest)) == ["b.bin", "dir"]


def test_altered_manifest_fails_its_hmac(made: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(made["tar"].read_bytes())
    with tarfile.open(made["tar"]) as t:
        member = t.getmember("MANIFEST.ecarchive")
    text = bytes(data[member.offset_data : member.offset_data + member.size])
    at = member.offset_data + text.index(b"\ncreated ") + len(b"\ncreated ")
    data[at] = ord("1") if data[at] != ord("1") else ord("2")  # same length, other time
    bad = tmp_path / "altered.tar"
    bad.write_bytes(bytes(data))
    r = run_cli(["restore", str(bad), str(tmp_path / "dest")])
    assert r.returncode == 1
    assert b"MANIFEST.ecarchive: HMAC does not verify" in r.stderr
