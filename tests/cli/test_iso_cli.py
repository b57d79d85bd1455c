"""`create --format iso` through the CLI: exact sizes, readers, volumes, restore."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import PASSPHRASE, run_cli
from tests.support.trees import compare, make_case_tree, snapshot

needs_bsdtar = pytest.mark.skipif(shutil.which("bsdtar") is None, reason="bsdtar missing")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("iso") / "src"
    make_case_tree(root, big_mib=1)
    return root


def _print_size(src: Path, *extra: str) -> int:
    # no passphrase: the size does not depend on the key, so it is not asked for
    r = run_cli(["create", str(src), "--format", "iso", "--print-size", *extra], passphrase=None)
    assert r.returncode == 0, r.stderr.decode()
    first = r.stdout.decode().split()
    assert int(first[0]) % 2048 == 0 and int(first[2]) * 2048 == int(first[0])
    return int(first[0])


def test_print_size_equals_bytes_written(tree: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"
    (small / "d").mkdir(parents=True)
    (small / "d" / "f").write_bytes(b"x" * 5000)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(300):
        (many / f"file-{i:04d}").write_bytes(os.urandom(i * 37))
    for src in (tree, small, many):
        predicted = _print_size(src)
        r = run_cli(["create", str(src), "--format", "iso", "-q"])
        assert r.returncode == 0, r.stderr.decode()
        assert len(r.stdout) == predicted


def test_format_from_extension_and_restore(tree: Path, tmp_path: Path) -> None:
    image = tmp_path / "backup.iso"
    r = run_cli(["create", str(tree), "-o", str(image), "-q"])
    assert r.returncode == 0, r.stderr.decode()
    assert image.read_bytes()[32769:32774] == b"CD001"
    dest = tmp_path / "out"
    r = run_cli(["restore", str(image), str(dest)])
    assert r.returncode == 0, r.stderr.decode()
    # Rock Ridge TF keeps whole seconds (the long form is misread by Linux before 6.16)
    assert compare(snapshot(tree), snapshot(dest), mtime="s") == []
    r = run_cli(["verify", str(image)])
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


@needs_bsdtar
def test_bsdtar_and_isoinfo_list_the_lower_tree(tree: Path, tmp_path: Path) -> None:
    image = tmp_path / "a.iso"
    tar = tmp_path / "a.tar"
    assert run_cli(["create", str(tree), "-o", str(image), "-q", "--fnek", "off"]).returncode == 0
    assert run_cli(["create", str(tree), "-o", str(tar), "-q", "--fnek", "off"]).returncode == 0

    def names(archive: Path) -> set[str]:
        out = subprocess.run(["bsdtar", "-tf", str(archive)], capture_output=True, check=True)
        return {line.rstrip("/") for line in out.stdout.decode().splitlines()} - {"."}

    assert names(image) == names(tar)
    if shutil.which("isoinfo"):
        out = subprocess.run(["isoinfo", "-R", "-f", "-i", str(image)], capture_output=True, check=True)
        listed = {line.lstrip("/") for line in out.stdout.decode().splitlines()}
        assert listed == names(tar)


def test_no_temporary_file_while_piping(tree: Path, tmp_path: Path) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace missing")
    trace = tmp_path / "trace"
    env = dict(os.environ, ECARCHIVE_PASSPHRASE="p")
    cmd = f"strace -f -qq -e trace=openat,creat,lseek -o {trace} python3 -m ecarchive create {tree} --format iso -q | cat > /dev/null"
    subprocess.run(cmd, shell=True, check=True, env=env, cwd=Path(__file__).resolve().parents[2])
    lines = trace.read_text().splitlines()
    writes = [line for line in lines if "openat" in line and ("O_WRONLY" in line or "O_RDWR" in line or "O_CREAT" in line)
              and "/dev/" not in line and "__pycache__" not in line]
    assert writes == []
    assert not [line for line in lines if "lseek(1," in line and "SEEK_CUR" not in line]


def test_media_spanning_every_volume_restores(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for d in range(3):
        (src / f"dir{d}").mkdir(parents=True)
        for i in range(4):
            (src / f"dir{d}" / f"f{i}").write_bytes(os.urandom(300_000))
    capacity = 1_600_000
    r = run_cli(["create", str(src), "--media", str(capacity), "-o", str(tmp_path / "vol-%02d.iso"), "-q"])
    assert r.returncode == 0, r.stderr.decode()
    volumes = sorted(tmp_path.glob("vol-*.iso"))
    assert len(volumes) >= 3
    assert all(v.stat().st_size <= capacity for v in volumes)
    merged = tmp_path / "merged"
    for v in volumes:
        out = tmp_path / ("out-" + v.stem)
        rr = run_cli(["restore", str(v), str(out)])
        assert rr.returncode == 0, rr.stderr.decode()
        assert run_cli(["verify", str(v)]).returncode == 0
        shutil.copytree(out, merged, dirs_exist_ok=True)
    assert compare(snapshot(src), snapshot(merged), mtime=None) == []
    # --volume N writes exactly that volume again, byte for byte (stable sizes and dates)
    r = run_cli(["create", str(src), "--media", str(capacity), "--volume", "2", "-o", str(tmp_path / "two.iso"), "-q"])
    assert r.returncode == 0 and (tmp_path / "two.iso").stat().st_size == volumes[1].stat().st_size


def test_volume_command_receives_each_volume(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(os.urandom(500_000))
    cmd = f"cat > {tmp_path}/cmd-$ECARCHIVE_VOLUME.iso"
    # between volumes the tool waits for Enter on /dev/tty: give it one via `script`
    if shutil.which("script") is None:
        pytest.skip("script (util-linux) missing")
    env = dict(os.environ, ECARCHIVE_PASSPHRASE=PASSPHRASE, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    inner = f"python3 -m ecarchive create {src} --media 1200000 --volume-command '{cmd}' -q"
    p = subprocess.run(["script", "-qec", inner, "/dev/null"], input=b"\n\n\n\n", env=env,
                       capture_output=True, timeout=300)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    made = sorted(tmp_path.glob("cmd-*.iso"))
    assert len(made) >= 2
    for m in made:
        assert run_cli(["verify", str(m)]).returncode == 0


def test_too_large_file_fails_before_writing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(2_000_000))
    r = run_cli(["create", str(src), "--media", "1000000", "-o", str(tmp_path / "v-%d.iso")])
    assert r.returncode == 2 and b"big" in r.stderr
    assert not list(tmp_path.glob("v-*"))


def test_multiple_volumes_need_a_destination(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(os.urandom(600_000))
    r = run_cli(["create", str(src), "--media", "1000000", "-o", str(tmp_path / "one.iso")])
    assert r.returncode == 2 and b"volumes" in r.stderr
    assert not (tmp_path / "one.iso").exists()
