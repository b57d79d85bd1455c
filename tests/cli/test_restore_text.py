"""RESTORE.txt as a user finds it years later: which volume, where to get ecarchive, and what a
wrong passphrase looks like in the kernel path."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ecarchive import __version__
from tests.cli.conftest import run_cli


def _member(archive: Path, name: str = "RESTORE.txt") -> str:
    # bsdtar reads tar and ISO 9660 alike: the text as any user's tool shows it
    r = subprocess.run(["bsdtar", "-xOf", str(archive), name], capture_output=True, check=True)
    return r.stdout.decode()


def test_each_volume_says_which_it_is(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(os.urandom(600_000))
    capacity = 1_000_000
    r = run_cli(
        ["create", str(src), "--media", str(capacity), "-o", str(tmp_path / "v-%d.iso"), "-q"]
    )
    assert r.returncode == 0, r.stderr.decode()
    volumes = sorted(tmp_path.glob("v-*.iso"))
    assert len(volumes) == 3
    texts = [_member(v) for v in volumes]
    for n, (volume, text) in enumerate(zip(volumes, texts, strict=True), 1):
        assert f"This is volume {n} of 3;" in text
        assert volume.stat().st_size <= capacity
        # the manifest (hashes of every member, RESTORE.txt included) matches what was written
        assert run_cli(["verify", str(volume)]).returncode == 0
    assert len({len(t) for t in texts}) == 1, "volume texts differ in length: the split is off"


def test_single_archive_text_names_package_home_and_wrong_passphrase(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    out = tmp_path / "a.tar"
    assert run_cli(["create", str(src), "-o", str(out), "-q"]).returncode == 0
    text = _member(out)
    assert "This is volume 1 of 1;" in text
    assert f"pip install 'ecarchive=={__version__}'" in text
    assert "https://pypi.org/project/ecarchive/" in text
    assert "A wrong passphrase is not refused" in text and "keyctl show @u" in text
    # the text must not confuse the kernel tests' parsing: only commands start with these
    for line in text.splitlines():
        if line.strip().startswith(("mount ", "printf")):
            assert line.startswith("  "), line
