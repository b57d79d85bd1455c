"""Kernel-made lower trees (tests/data/fixtures) restore to exactly plaintext.manifest.

The four tars were written by the real kernel eCryptfs (see tests/data/fixtures/README.md);
their names must also be reproduced byte for byte by our name encryption.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from ecarchive.ecryptfs.keys import FnekMode, derive_keyset
from ecarchive.ecryptfs.names import encrypt_name
from ecarchive.errors import Reporter, WrongPassphrase
from ecarchive.read.decode import Keys
from ecarchive.read.restore import list_archive, restore_archive
from tests.support.restore_stdin import restore_from_stdin

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "data" / "fixtures"
PASSPHRASE = b"correct horse battery staple"
HASH_CHUNK = 1 << 20
# fixture name -> (FNEK convention, key bytes), from tests/data/fixtures/README.md
VARIANTS = {
    "aes128-fnek-separate": (FnekMode.SEPARATE, 16),
    "aes256-fnek-separate": (FnekMode.SEPARATE, 32),
    "aes128-fnek-same": (FnekMode.SAME, 16),
    "aes128-fnek-off": (FnekMode.OFF, 16),
}
FILE_KEY_SIG = "3ab38bb4917daae6"
SEPARATE_FNEK_SIG = "dfe2081a9780d1ee"
MANIFEST_FIELDS = ("path", "type", "mode", "size", "mtime", "nlink", "sha256", "target", "hlgroup")

Row = dict[str, str]


def _quiet() -> Reporter:
    return Reporter(stream=io.StringIO())


def _read_manifest(path: Path) -> dict[str, Row]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0]
    assert header.startswith("# oracle-manifest v1 fields=")
    assert tuple(header.split("fields=")[1].split(",")) == MANIFEST_FIELDS
    rows = [dict(zip(MANIFEST_FIELDS, line.split("\t"), strict=True)) for line in lines[1:]]
    return {row["path"]: row for row in rows}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _snapshot(root: Path) -> dict[str, Row]:
    """The restored tree in the manifest's own terms (hard-link group = first name in order)."""
    rows: dict[str, Row] = {}
    first_of_inode: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            row: Row = dict.fromkeys(MANIFEST_FIELDS, "-")
            row.update(
                path=rel, mode=f"{stat.S_IMODE(st.st_mode):04o}", mtime=str(int(st.st_mtime))
            )
            if stat.S_ISDIR(st.st_mode):
                row["type"] = "d"
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                row.update(type="l", size=str(len(os.fsencode(target))), nlink="1", target=target)
            else:
                row.update(
                    type="f", size=str(st.st_size), nlink=str(st.st_nlink), sha256=_sha256(p)
                )
                if st.st_nlink > 1:
                    row["hlgroup"] = first_of_inode.setdefault(st.st_ino, rel)
            rows[rel] = row
    # the manifest names a group by its first path in sorted order
    groups: dict[str, str] = {}
    for rel in sorted(rows):
        g = rows[rel]["hlgroup"]
        if g != "-":
            rows[rel]["hlgroup"] = groups.setdefault(g, rel)
    return rows


@pytest.fixture(scope="module")
def expected() -> dict[str, Row]:
    return _read_manifest(FIXTURES / "plaintext.manifest")


@pytest.fixture(params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _extract(tar: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(tar), "-C", str(into)], check=True)
    return into


def test_manifest_is_not_trivial(expected: dict[str, Row]) -> None:
    # guards the comparisons below against an empty or misparsed manifest
    assert len(expected) == 23
    assert {r["type"] for r in expected.values()} == {"f", "d", "l"}
    assert any(r["hlgroup"] != "-" for r in expected.values())


def test_restore_tar_matches_manifest(
    variant: str, tmp_path: Path, expected: dict[str, Row]
) -> None:
    reporter = _quiet()
    dest = tmp_path / "out"
    restore_archive(str(FIXTURES / f"{variant}.tar"), str(dest), PASSPHRASE, reporter)
    assert reporter.warnings == []
    assert reporter.exit_code == 0
    assert _snapshot(dest) == expected


def test_restore_extracted_directory(
    variant: str, tmp_path: Path, expected: dict[str, Row]
) -> None:
    lower = _extract(FIXTURES / f"{variant}.tar", tmp_path / "lower")
    reporter = _quiet()
    restore_archive(str(lower), str(tmp_path / "out"), PASSPHRASE, reporter)
    assert reporter.warnings == []
    assert _snapshot(tmp_path / "out") == expected


def test_restore_wrapped_layout_directory_and_stdin(
    tmp_path: Path, expected: dict[str, Row]
) -> None:
    """The layout ecarchive writes: RESTORE.txt first, then NAME/ with the lower tree."""
    wrapped = tmp_path / "wrapped"
    _extract(FIXTURES / "aes128-fnek-separate.tar", wrapped / "Private")
    (wrapped / "RESTORE.txt").write_text("plain text, not an eCryptfs file\n")
    (wrapped / "MANIFEST.sha256").write_text("not restored either\n")
    reporter = _quiet()
    restore_archive(str(wrapped), str(tmp_path / "from-dir"), PASSPHRASE, reporter)
    assert reporter.warnings == []
    assert _snapshot(tmp_path / "from-dir") == expected

    tar = tmp_path / "wrapped.tar"
    subprocess.run(
        ["tar", "--format=pax", "-cf", str(tar), "-C", str(wrapped), "RESTORE.txt", "Private"],
        check=True,
    )
    reporter = _quiet()
    restore_archive(str(tar), str(tmp_path / "from-tar"), PASSPHRASE, reporter)
    assert reporter.warnings == []
    assert _snapshot(tmp_path / "from-tar") == expected

    out = tmp_path / "from-stdin"
    _restore_via_stdin(tar, out)
    assert _snapshot(out) == expected

    # a tar that lists files only: the lower directory is implied by the member paths
    members = sorted(
        p.relative_to(wrapped).as_posix()
        for p in (wrapped / "Private").rglob("*")
        if not p.is_dir()
    )
    files_only = tmp_path / "files-only.tar"
    subprocess.run(
        [
            "tar",
            "--format=pax",
            "--no-recursion",
            "-cf",
            str(files_only),
            "-C",
            str(wrapped),
            "RESTORE.txt",
            *members,
        ],
        check=True,
    )
    reporter = _quiet()
    restore_archive(str(files_only), str(tmp_path / "files-only"), PASSPHRASE, reporter)
    assert reporter.warnings == []
    restored = _snapshot(tmp_path / "files-only")
    assert {k: v for k, v in restored.items() if v["type"] != "d"} == {
        k: v for k, v in expected.items() if v["type"] != "d"
    }


def _restore_via_stdin(
    tar: Path, dest: Path, passphrase: bytes = PASSPHRASE
) -> subprocess.CompletedProcess[bytes]:
    return restore_from_stdin(tar, dest, passphrase)


def test_restore_from_stdin(variant: str, tmp_path: Path, expected: dict[str, Row]) -> None:
    dest = tmp_path / "out"
    result = _restore_via_stdin(FIXTURES / f"{variant}.tar", dest)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    assert _snapshot(dest) == expected


def test_restore_bsdtar_and_iso_repacks(tmp_path: Path, expected: dict[str, Row]) -> None:
    """Other writers of the same lower tree: bsdtar (GNU format) and an ISO 9660 + Rock Ridge image."""
    lower = _extract(FIXTURES / "aes256-fnek-separate.tar", tmp_path / "lower")
    gnutar = tmp_path / "lower.tar"
    subprocess.run(
        ["bsdtar", "--format=gnutar", "-cf", str(gnutar), "-C", str(lower), "."], check=True
    )
    reporter = _quiet()
    restore_archive(str(gnutar), str(tmp_path / "from-gnutar"), PASSPHRASE, reporter)
    assert reporter.warnings == []
    assert _snapshot(tmp_path / "from-gnutar") == expected

    if shutil.which("xorriso") is None:
        pytest.skip("xorriso not installed")
    iso = tmp_path / "lower.iso"
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-R", "-o", str(iso), str(lower)],
        check=True,
        capture_output=True,
    )
    reporter = _quiet()
    restore_archive(str(iso), str(tmp_path / "from-iso"), PASSPHRASE, reporter)
    assert reporter.warnings == []
    assert _snapshot(tmp_path / "from-iso") == expected


@pytest.mark.parametrize("how", ["tar", "directory", "stdin"])
def test_wrong_passphrase_writes_nothing(variant: str, how: str, tmp_path: Path) -> None:
    tar = FIXTURES / f"{variant}.tar"
    dest = tmp_path / "out"
    if how == "stdin":
        result = _restore_via_stdin(tar, dest, b"wrong horse")
        assert result.returncode == 2
        assert b"WrongPassphrase" in result.stderr
        assert not dest.exists()
        return
    source = str(tar) if how == "tar" else str(_extract(tar, tmp_path / "lower"))
    with pytest.raises(WrongPassphrase, match="wrong passphrase") as info:
        restore_archive(source, str(dest), b"wrong horse", _quiet())
    assert info.value.exit_code == 2
    assert not dest.exists()
    dest.mkdir()
    with pytest.raises(WrongPassphrase):
        restore_archive(source, str(dest), b"wrong horse", _quiet())
    assert list(dest.iterdir()) == []


def _lower_path_of(variant: str, plain: str) -> str:
    for line in (FIXTURES / f"{variant}.name-map").read_text(encoding="utf-8").splitlines():
        p, lower = line.split("\t")
        if p == plain:
            return lower
    raise AssertionError(f"{plain} not in the name map")


def _retar(lower: Path, tar: Path) -> None:
    subprocess.run(
        ["tar", "--format=pax", "--sort=name", "-cf", str(tar), "-C", str(lower), "."], check=True
    )


@pytest.mark.parametrize("via", ["tar", "directory"])
def test_flipped_marker_skips_only_that_file(
    variant: str, via: str, tmp_path: Path, expected: dict[str, Row]
) -> None:
    lower = _extract(FIXTURES / f"{variant}.tar", tmp_path / "lower")
    victim = lower / _lower_path_of(variant, "nested/level1/sibling.txt")
    with victim.open("r+b") as f:
        f.seek(8)  # the first marker word (ecryptfs_validate_marker)
        word = f.read(4)
        f.seek(8)
        f.write(bytes(b ^ 0xFF for b in word))
    source = lower
    if via == "tar":
        source = tmp_path / "damaged.tar"
        _retar(lower, source)
    reporter = _quiet()
    dest = tmp_path / "out"
    restore_archive(str(source), str(dest), PASSPHRASE, reporter)
    assert reporter.exit_code == 1
    assert len(reporter.warnings) == 1
    assert "nested/level1/sibling.txt" in reporter.warnings[0]
    assert "marker" in reporter.warnings[0]
    assert _snapshot(dest) == {
        k: v for k, v in expected.items() if k != "nested/level1/sibling.txt"
    }


def test_truncated_and_foreign_files_are_skipped(tmp_path: Path, expected: dict[str, Row]) -> None:
    variant = "aes128-fnek-same"
    lower = _extract(FIXTURES / f"{variant}.tar", tmp_path / "lower")
    big = lower / _lower_path_of(variant, "random-1MiB.bin")
    os.truncate(big, 8192 + 100 * 4096)
    # a file whose key packet names another key: its tag 11 sig is the last 8 bytes before
    # the packet set's end; copy a pecryptfs file (passphrase "Test") in under a known name
    foreign = lower / _lower_path_of(variant, "one-byte")
    shutil.copyfile(REPO / "tests" / "data" / "pecryptfs" / "aes-16.raw", foreign)
    reporter = _quiet()
    dest = tmp_path / "out"
    restore_archive(str(lower), str(dest), PASSPHRASE, reporter)
    assert reporter.exit_code == 1
    warned = "\n".join(reporter.warnings)
    assert len(reporter.warnings) == 2, warned
    assert "random-1MiB.bin: truncated" in warned
    assert "one-byte: files encrypted with another key (3515cca9baaea1f4)" in warned
    # the symlink to the skipped file is still restored; its target just dangles
    skipped = {"random-1MiB.bin", "one-byte"}
    assert _snapshot(dest) == {k: v for k, v in expected.items() if k not in skipped}


def test_list_archive_matches_manifest(variant: str, expected: dict[str, Row]) -> None:
    out = io.StringIO()
    reporter = _quiet()
    list_archive(str(FIXTURES / f"{variant}.tar"), PASSPHRASE, reporter, out=out)
    assert reporter.warnings == []
    listed: dict[str, list[str]] = {}
    for line in out.getvalue().splitlines():
        fields = line.split("\t")
        listed[fields[2]] = fields
    assert set(listed) == set(expected)
    for path, row in expected.items():
        fields = listed[path]
        kind, size = fields[0], fields[1]
        if row["type"] == "f":
            assert (kind, size) in {("f", row["size"]), ("h", "-")}, path
        elif row["type"] == "l":
            assert fields == ["l", "-", path, row["target"]]
        else:
            assert fields == ["d", "-", path]
    # the hard-link pair: one file, one link naming it
    pair = sorted(listed[p][0] for p in ("hardlink-a.txt", "hardlink-b.txt"))
    assert pair == ["f", "h"]


def test_list_wrong_passphrase_prints_nothing(variant: str) -> None:
    out = io.StringIO()
    with pytest.raises(WrongPassphrase):
        list_archive(str(FIXTURES / f"{variant}.tar"), b"nope", _quiet(), out=out)
    assert out.getvalue() == ""


def test_name_map_reproduced_byte_for_byte(variant: str) -> None:
    mode, key_bytes = VARIANTS[variant]
    keys = derive_keyset(PASSPHRASE, mode)
    assert keys.file_key.sig_hex == FILE_KEY_SIG
    pairs = 0
    for line in (FIXTURES / f"{variant}.name-map").read_text(encoding="utf-8").splitlines():
        plain, lower = line.split("\t")
        for p, low in zip(plain.split("/"), lower.split("/"), strict=True):
            if keys.fnek is None:
                assert low == p
            else:
                assert encrypt_name(p.encode(), keys.fnek, key_bytes) == low.encode()
            pairs += 1
    assert pairs >= 23


def test_symlink_targets_reproduced_byte_for_byte(variant: str, expected: dict[str, Row]) -> None:
    mode, key_bytes = VARIANTS[variant]
    keys = derive_keyset(PASSPHRASE, mode)
    lower_rows = _read_manifest(FIXTURES / f"{variant}.lower-manifest")
    lower_targets = sorted(r["target"] for r in lower_rows.values() if r["type"] == "l")
    plain_targets = [r["target"].encode() for r in expected.values() if r["type"] == "l"]
    if keys.fnek is None:
        ours = sorted(t.decode() for t in plain_targets)
    else:
        ours = sorted(encrypt_name(t, keys.fnek, key_bytes).decode() for t in plain_targets)
    assert ours == lower_targets
    assert len(ours) == 3


def test_key_detection_reports_the_convention(variant: str, tmp_path: Path) -> None:
    """What the decoder learned from the archive: FNEK convention and name key size."""
    from ecarchive.read.decode import Decoder
    from ecarchive.read.members import open_lower_tree

    mode, key_bytes = VARIANTS[variant]
    keys = Keys(PASSPHRASE)
    assert keys.separate_fnek.sig_hex == SEPARATE_FNEK_SIG
    reporter = _quiet()
    with open_lower_tree(str(FIXTURES / f"{variant}.tar"), reporter) as lower:
        entries = list(Decoder(keys, reporter).entries(lower.entries))
    assert len(entries) == 23
    assert keys.fnek_mode is (None if mode is FnekMode.OFF else mode)
    assert keys.name_key_bytes == key_bytes


def test_restore_ecarchive_iso_image(tmp_path: Path, expected: dict[str, Row]) -> None:
    """ecarchive's own ISO writer around a kernel lower tree: RESTORE.txt + Private/, from the
    image file (two passes) and from a pipe (one pass)."""
    from tests.interop.test_iso_trees import build_iso, plan_from_tree

    lower = _extract(FIXTURES / "aes128-fnek-same.tar", tmp_path / "lower")
    iso = tmp_path / "image.iso"
    build_iso(plan_from_tree(lower), iso)
    reporter = _quiet()
    restore_archive(str(iso), str(tmp_path / "from-file"), PASSPHRASE, reporter)
    assert reporter.warnings == []
    assert _snapshot(tmp_path / "from-file") == expected
    result = _restore_via_stdin(iso, tmp_path / "from-stdin")
    assert result.returncode == 0, result.stderr.decode()
    assert _snapshot(tmp_path / "from-stdin") == expected
