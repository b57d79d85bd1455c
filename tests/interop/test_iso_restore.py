"""ecarchive's own reader on ISO images: `ecarchive restore` and `ecarchive list` accept them.

The lower tree comes from ecarchive's tar (extracted with GNU tar), is written as an ISO by the
streaming writer, and must restore to the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.test_iso_trees import build_iso, plan_from_tree
from tests.support.trees import compare, make_case_tree, snapshot

PASSPHRASE = "correct horse battery staple"
REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), ECARCHIVE_PASSPHRASE=PASSPHRASE)
    return subprocess.run([sys.executable, "-m", "ecarchive", *args], env=env, cwd=REPO,
                          capture_output=True, check=False)


@pytest.fixture(scope="module")
def iso_and_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("iso-restore")
    source = work / "src"
    make_case_tree(source, big_mib=1)
    tar = work / "lower.tar"
    done = _cli("create", str(source), "-o", str(tar))
    assert done.returncode == 0, done.stderr.decode()
    lower = work / "lower"
    lower.mkdir()
    subprocess.run(["tar", "-xpf", str(tar), "-C", str(lower), "--numeric-owner"], check=True,
                   capture_output=True)
    image = work / "image.iso"
    build_iso(plan_from_tree(lower / "Private", (lower / "RESTORE.txt").read_bytes()), image)
    return image, source


def test_restore_reads_the_iso(iso_and_source: tuple[Path, Path], tmp_path: Path) -> None:
    image, source = iso_and_source
    dest = tmp_path / "dest"
    done = _cli("restore", str(image), str(dest))
    assert done.returncode == 0, done.stderr.decode()
    restored = dest if not (dest / "Private").exists() else dest / "Private"
    assert compare(snapshot(source), snapshot(restored), mtime="s") == []


def test_list_reads_the_iso(iso_and_source: tuple[Path, Path]) -> None:
    image, source = iso_and_source
    done = _cli("list", str(image))
    assert done.returncode == 0, done.stderr.decode()
    # TYPE, SIZE, PATH[, TARGET], tab separated; PATH includes the lower directory's name.
    rows = [line.split("\t") for line in done.stdout.decode().splitlines() if line]
    listed = {row[2].removeprefix("Private/"): row for row in rows if row[2] != "Private"}
    records = snapshot(source)
    assert set(listed) == set(records)
    for path, record in records.items():
        if record.type == "f" and listed[path][0] == "f":  # hard links ('h') show no size
            assert listed[path][1] == str(record.size), path
