"""`--media` means discs: images by default, and a missing terminal found before volume 1."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.cli.conftest import run_cli

ISO_MAGIC_OFFSET = 16 * 2048 + 1  # "CD001" of the primary volume descriptor


def _tree(root: Path, files: int, size: int) -> Path:
    root.mkdir()
    for i in range(files):
        (root / f"f{i}").write_bytes(os.urandom(size))
    return root


def _isoinfo_ok(image: Path) -> bool:
    r = subprocess.run(["isoinfo", "-d", "-i", str(image)], capture_output=True)
    return r.returncode == 0 and b"Volume id: ECARCHIVE" in r.stdout


def test_media_without_output_writes_iso_images(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", 2, 100_000)
    # the --help example: no -o, each volume piped into a burner (here: a file per volume)
    cmd = f"cat > {tmp_path}/disc-$ECARCHIVE_VOLUME"
    r = run_cli(["create", str(src), "--media", "dvd", "--volume-command", cmd, "-q"])
    assert r.returncode == 0, r.stderr.decode()
    disc = tmp_path / "disc-1"
    with disc.open("rb") as f:
        f.seek(ISO_MAGIC_OFFSET)
        assert f.read(5) == b"CD001"
    assert _isoinfo_ok(disc)
    assert run_cli(["restore", str(disc), str(tmp_path / "out")]).returncode == 0
    assert (tmp_path / "out" / "f1").read_bytes() == (src / "f1").read_bytes()


def test_media_with_numbered_output_and_no_extension_writes_iso(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", 1, 1000)
    r = run_cli(["create", str(src), "--media", "cd", "-o", str(tmp_path / "vol-%d"), "-q"])
    assert r.returncode == 0, r.stderr.decode()
    assert _isoinfo_ok(tmp_path / "vol-1")


def test_explicit_tar_name_or_format_still_wins(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", 1, 1000)
    r = run_cli(["create", str(src), "--media", "cd", "-o", str(tmp_path / "a-%d.tar"), "-q"])
    assert r.returncode == 0, r.stderr.decode()
    out = tmp_path / "b"
    r2 = run_cli(["create", str(src), "--media", "cd", "--format", "tar", "-o", str(out), "-q"])
    assert r2.returncode == 0, r2.stderr.decode()
    for tar in (tmp_path / "a-1.tar", out):
        listing = subprocess.run(["tar", "tf", str(tar)], capture_output=True, check=True)
        assert b"RESTORE.txt" in listing.stdout


def test_no_terminal_for_disc_changes_fails_before_volume_one(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", 3, 600_000)
    cmd = f"cat > {tmp_path}/disc-$ECARCHIVE_VOLUME"
    r = run_cli(
        ["create", str(src), "--media", "1000000", "--volume-command", cmd],
        no_terminal=True,
    )
    assert r.returncode == 2, r.stderr.decode()
    assert b"terminal" in r.stderr
    assert not list(tmp_path.glob("disc-*")), "volume 1 was written before the check"


def test_one_volume_needs_no_terminal(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", 1, 1000)
    cmd = f"cat > {tmp_path}/disc-$ECARCHIVE_VOLUME"
    r = run_cli(["create", str(src), "--media", "cd", "--volume-command", cmd], no_terminal=True)
    assert r.returncode == 0, r.stderr.decode()
    assert _isoinfo_ok(tmp_path / "disc-1")


def test_volume_command_environment_is_given_and_documented(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", 1, 1000)
    seen = tmp_path / "seen"
    cmd = f'echo "$ECARCHIVE_VOLUME of $ECARCHIVE_VOLUMES" > {seen}; cat > /dev/null'
    r = run_cli(["create", str(src), "--media", "cd", "--volume-command", cmd])
    assert r.returncode == 0, r.stderr.decode()
    assert seen.read_text() == "1 of 1\n"
    help_text = run_cli(["create", "--help"]).stdout.decode()
    man = (Path(__file__).resolve().parents[2] / "man" / "ecarchive.1").read_text()
    for doc in (help_text, man):
        assert "ECARCHIVE_VOLUME" in doc and "ECARCHIVE_VOLUMES" in doc
