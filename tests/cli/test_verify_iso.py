"""`ecarchive verify` on ISO images: the image file, the image on stdin, the tree bsdtar extracts
from it, and a flipped byte inside a file extent. Needs `create --format iso` writing the
manifest as the image's last file (issue 4 + 5 wiring in cli.py)."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.cli.conftest import run_cli
from tests.cli.test_verify import lower, problems
from tests.support.trees import make_case_tree

pytestmark = pytest.mark.skipif(shutil.which("bsdtar") is None, reason="bsdtar missing")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    work = tmp_path_factory.mktemp("iso")
    source = work / "tree"
    make_case_tree(source, big_mib=1)
    tar, iso = work / "a.tar", work / "a.iso"
    # stable keys: the tar's member bytes are the ISO's file extents, so offsets can be found
    for out, extra in ((tar, []), (iso, ["--format", "iso"])):
        r = run_cli(["create", str(source), "-o", str(out), "-q", "--stable-keys", *extra])
        assert r.returncode == 0, r.stderr.decode()
    return source, tar, iso


def test_clean_image_file_stdin_and_extracted(
    made: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    source, _tar, iso = made
    r = run_cli(["verify", str(iso), "--against", str(source)])
    assert r.returncode == 0 and "OK" in r.stdout.decode(), r.stdout.decode() + r.stderr.decode()
    r = run_cli(["verify", "-"], stdin=iso.read_bytes(), passphrase=None)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    x = tmp_path / "x"
    x.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(iso), "-C", str(x)], check=True)
    r = run_cli(["verify", str(x), "--against", str(source)])
    assert r.returncode == 0, r.stdout.decode()


def test_flipped_byte_in_an_extent(made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _source, tar, iso = made
    target = lower("files/size-45056")
    with tarfile.open(tar) as t:
        data = t.extractfile(target).read()  # type: ignore[union-attr]
    image = bytearray(iso.read_bytes())
    offset = image.find(data)
    assert offset > 0 and offset % 2048 == 0
    image[offset + 8192 + 4096 * 3 + 17] ^= 0x80
    bad = tmp_path / "bad.iso"
    bad.write_bytes(image)
    r = run_cli(["verify", str(bad)], passphrase=None)
    assert r.returncode == 1
    assert problems(r.stdout.decode()) == [
        f"{target}: content differs from the manifest (SHA-256 mismatch)"
    ]
    r = run_cli(["verify", str(bad)])
    assert r.returncode == 1
    assert problems(r.stdout.decode()) == [
        f"files/size-45056 [{target}]: content differs from the manifest (SHA-256 mismatch)"
    ]
