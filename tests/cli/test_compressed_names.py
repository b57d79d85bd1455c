"""`-o name.tgz` and friends: ciphertext does not compress, so refuse the name up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import run_cli


@pytest.mark.parametrize(
    "name", ["home.tgz", "home.tar.gz", "home.tar.zst", "HOME.TAR.XZ", "v-%02d.tar.bz2"]
)
def test_compressed_output_name_is_refused_before_the_passphrase(tmp_path: Path, name: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    out = tmp_path / name
    # no passphrase source and no terminal: if the name were not refused first, the error
    # would be about the passphrase
    r = run_cli(["create", str(src), "-o", str(out)], passphrase=None, no_terminal=True)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "does not compress" in err and "hint: name it .tar or .iso" in err, err
    assert list(tmp_path.iterdir()) == [src]


def test_plain_names_are_still_written(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    for name in ("a.tar", "b.iso", "c.backup"):
        r = run_cli(["create", str(src), "-o", str(tmp_path / name), "-q"])
        assert r.returncode == 0, r.stderr.decode()
        assert (tmp_path / name).stat().st_size > 0
