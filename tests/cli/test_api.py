"""The Python API works without argparse or sys.exit; sub-command usage names the verb."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

import ecarchive
from ecarchive.errors import UsageError, WrongPassphrase
from tests.cli.conftest import run_cli

PASSPHRASE = b"api passphrase"


def _tree(root: Path) -> Path:
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "a.txt").write_bytes(b"alpha\n" * 1000)
    (root / "src" / "sub" / "b.bin").write_bytes(bytes(range(256)) * 40)
    return root / "src"


@pytest.mark.parametrize("fmt", ["tar", "iso"])
def test_create_restore_verify_list(tmp_path: Path, fmt: str) -> None:
    source = _tree(tmp_path)
    archive = tmp_path / f"out.{fmt}"
    assert ecarchive.create(str(source), str(archive), passphrase=PASSPHRASE, format=fmt) == 0
    if fmt == "iso":
        sizes = ecarchive.image_sizes(str(source), format="iso")
        assert sizes == [archive.stat().st_size]
    else:
        with tarfile.open(archive) as tf:
            assert any(n.endswith("RESTORE.txt") for n in tf.getnames())

    dest = tmp_path / "dest"
    assert ecarchive.restore(str(archive), str(dest), passphrase=PASSPHRASE) == 0
    assert (dest / "a.txt").read_bytes() == (source / "a.txt").read_bytes()
    assert (dest / "sub" / "b.bin").read_bytes() == (source / "sub" / "b.bin").read_bytes()

    out = io.StringIO()
    assert ecarchive.verify(str(archive), passphrase=PASSPHRASE, out=out) == 0
    assert "OK" in out.getvalue()

    listing = io.StringIO()
    assert ecarchive.list_archive(str(archive), passphrase=PASSPHRASE, out=listing) == 0
    paths = {
        line.split("\t")[2].removeprefix("Private/") for line in listing.getvalue().splitlines()
    }
    assert {"a.txt", "sub", "sub/b.bin"} <= paths


def test_errors_are_exceptions_with_exit_codes(tmp_path: Path) -> None:
    source = _tree(tmp_path)
    archive = tmp_path / "out.tar"
    ecarchive.create(str(source), str(archive), passphrase=PASSPHRASE)
    with pytest.raises(WrongPassphrase) as wrong:
        ecarchive.restore(str(archive), str(tmp_path / "d"), passphrase=b"other")
    assert wrong.value.exit_code == 2
    with pytest.raises(UsageError):
        ecarchive.create(str(source), str(tmp_path / "x.tar"), passphrase=PASSPHRASE, volume=2)


@pytest.mark.parametrize("verb", ["create", "restore", "list", "verify", "keys"])
def test_subcommand_usage_names_the_verb(verb: str) -> None:
    r = run_cli([verb, "--no-such-option"])
    assert r.returncode == 2
    err = r.stderr.decode()
    assert err.startswith(f"usage: ecarchive {verb} [-h]"), err
    assert f"ecarchive {verb}: error:" in err
