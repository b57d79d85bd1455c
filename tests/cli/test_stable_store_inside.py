"""A key store inside SOURCE is never archived (it changes while the archive is written)."""

from __future__ import annotations

from pathlib import Path

import libarchive

from tests.cli.conftest import run_cli


def test_key_store_inside_source_is_left_out(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data[1].txt").write_text("x")
    store = src / "keys[1].db"
    out = tmp_path / "o.tar"
    for _ in range(2):
        r = run_cli(["create", str(src), "-o", str(out), "--fnek", "off", "--stable-keys",
                     "--key-store", str(store), "-q"])
        assert r.returncode == 0, r.stderr.decode()
    with libarchive.file_reader(str(out)) as archive:
        names = [e.pathname for e in archive]
    assert "Private/data[1].txt" in names
    assert not [n for n in names if "keys[1].db" in n]
