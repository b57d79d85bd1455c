"""create → restore round trips over the standard tree: the full tree must come back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import run_cli
from tests.support.trees import compare, make_case_tree, snapshot


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rt") / "src"
    make_case_tree(root, big_mib=2)
    return root


def _restore_and_compare(source: Path, archive_args: list[str], dest: Path, stdin: bytes | None = None) -> None:
    r = run_cli(["restore", *archive_args, str(dest)], stdin=stdin)
    assert r.returncode == 0, r.stderr.decode()
    diffs = compare(snapshot(source), snapshot(dest), mtime="ns", owners=True)
    assert diffs == []


@pytest.mark.parametrize("fnek", ["separate", "same", "off"])
@pytest.mark.parametrize("key_bytes", ["16", "24", "32"])
def test_round_trip(source: Path, tmp_path: Path, fnek: str, key_bytes: str) -> None:
    tar = tmp_path / "a.tar"
    r = run_cli(["create", str(source), "-o", str(tar), "-q", "--fnek", fnek, "--key-bytes", key_bytes])
    assert r.returncode == 0, r.stderr.decode()
    _restore_and_compare(source, [str(tar)], tmp_path / "out")


def test_round_trip_stdin_and_extracted_dir(source: Path, tmp_path: Path) -> None:
    tar = tmp_path / "a.tar"
    assert run_cli(["create", str(source), "-o", str(tar), "-q"]).returncode == 0
    _restore_and_compare(source, ["-"], tmp_path / "from-stdin", stdin=tar.read_bytes())
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(tar), "-C", str(extracted)], check=True)
    _restore_and_compare(source, [str(extracted)], tmp_path / "from-dir")


def test_wrong_passphrase_writes_nothing(source: Path, tmp_path: Path) -> None:
    tar = tmp_path / "a.tar"
    assert run_cli(["create", str(source), "-o", str(tar), "-q"]).returncode == 0
    dest = tmp_path / "out"
    r = run_cli(["restore", str(tar), str(dest)], passphrase="not the passphrase")
    assert r.returncode == 2
    assert b"passphrase" in r.stderr.lower()
    assert not dest.exists() or not any(dest.iterdir())


def test_list_shows_plaintext(source: Path, tmp_path: Path) -> None:
    tar = tmp_path / "a.tar"
    assert run_cli(["create", str(source), "-o", str(tar), "-q"]).returncode == 0
    r = run_cli(["list", str(tar)])
    assert r.returncode == 0, r.stderr.decode()
    text = r.stdout.decode()
    assert "big.bin" in text and "deep/a/b/c/leaf.txt" in text and str(2 * 1024 * 1024) in text
