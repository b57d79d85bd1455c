"""genisoimage -R moves directories deeper than 8 levels to rr_moved (Rock Ridge RE/CL): the
ISO reader puts them back where their CL record says, from a file and from a pipe, and does
not show rr_moved."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.cli.conftest import run_cli

DEPTH = 12


def _deep(root: Path) -> dict[str, bytes]:
    files = {}
    path = root
    for level in range(DEPTH):
        path = path / f"level{level:02d}"
        path.mkdir(parents=True)
        name = path.relative_to(root) / f"file{level:02d}.txt"
        files[str(name)] = f"at depth {level}\n".encode() * (level + 1)
        (root / name).write_bytes(files[str(name)])
    return files


@pytest.mark.skipif(shutil.which("genisoimage") is None, reason="genisoimage not installed")
@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
def test_relocated_directories_come_back_in_place(stdin: bool, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _deep(src)
    tar = tmp_path / "lower.tar"
    r = run_cli(["create", "--format", "tar", "--fnek", "off", "-o", str(tar), str(src)])
    assert r.returncode == 0, r.stderr.decode()
    lower = tmp_path / "lower"
    with tarfile.open(tar) as t:
        t.extractall(lower, filter="tar")
    iso = tmp_path / "lower.iso"
    made = subprocess.run(["genisoimage", "-quiet", "-R", "-o", str(iso), str(lower)],
                          capture_output=True, check=True)
    assert b"rr_moved" in iso.read_bytes(), made.stderr  # the image does relocate
    dest = tmp_path / "dest"
    if stdin:
        r = run_cli(["restore", "-q", "-", str(dest)], stdin=iso.read_bytes())
    else:
        r = run_cli(["restore", "-q", str(iso), str(dest)])
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    assert "rr_moved" not in os.listdir(dest)
    for name, data in files.items():
        assert (dest / name).read_bytes() == data, name
