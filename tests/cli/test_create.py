"""`ecarchive create` end to end: output shape, GNU tar + bsdtar, every error path."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import libarchive
import pytest

from tests.cli.conftest import PASSPHRASE, run_cli
from tests.support.trees import make_case_tree

needs_tar = pytest.mark.skipif(
    shutil.which("bsdtar") is None, reason="bsdtar (libarchive-tools) missing"
)


def members(tar: Path) -> dict[str, libarchive.ArchiveEntry]:
    out = {}
    with libarchive.file_reader(str(tar)) as archive:
        for entry in archive:
            out[entry.pathname.rstrip("/")] = (entry.filetype, entry.size, entry.linkpath)
    return out


@pytest.fixture(scope="module")
def case_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("src")
    make_case_tree(root, big_mib=1)
    return root


def test_create_layout_and_sizes(case_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.tar"
    r = run_cli(["create", str(case_tree), "-o", str(out), "-q"])
    assert r.returncode == 0, r.stderr.decode()
    m = members(out)
    assert "RESTORE.txt" in m and "Private" in m
    lower = [p for p in m if p.startswith("Private/")]
    assert all(
        part.startswith("ECRYPTFS_FNEK_ENCRYPTED.") for p in lower for part in p.split("/")[1:]
    )
    src_count = sum(1 for _ in case_tree.rglob("*"))
    assert len(lower) == src_count
    assert {p for p in m if "/" not in p} == {"RESTORE.txt", "Private", "MANIFEST.ecarchive"}
    lower_files = [size for p, (ftype, size, link) in m.items()
                   if p.startswith("Private/") and ftype == stat.S_IFREG and not link]
    assert lower_files and all(size >= 8192 and size % 4096 == 0 for size in lower_files)
    restore = subprocess.run(
        ["tar", "-xOf", str(out), "RESTORE.txt"], capture_output=True, check=True
    ).stdout
    assert b"mount -i -t ecryptfs" in restore and b"ecryptfs_fnek_sig=dfe2081a9780d1ee" in restore
    assert PASSPHRASE.encode() not in out.read_bytes()


@needs_tar
@pytest.mark.parametrize("tool", [["tar", "--numeric-owner", "-xpf"], ["bsdtar", "-xpf"]])
def test_real_tar_tools_extract(case_tree: Path, tmp_path: Path, tool: list[str]) -> None:
    out = tmp_path / "a.tar"
    assert run_cli(["create", str(case_tree), "-o", str(out), "-q"]).returncode == 0
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run([*tool, str(out), "-C", str(dest)], check=True, capture_output=True)
    m = members(out)
    for path, (_ftype, size, link) in m.items():
        p = dest / path
        assert os.path.lexists(p), path
        if size and not link:
            assert p.stat().st_size == size


def test_stdout_and_dash(case_tree: Path, tmp_path: Path) -> None:
    implicit = run_cli(["create", str(case_tree), "-q"])
    dash = run_cli(["create", str(case_tree), "-o", "-", "-q"])
    assert implicit.returncode == dash.returncode == 0, implicit.stderr
    (tmp_path / "i.tar").write_bytes(implicit.stdout)
    (tmp_path / "d.tar").write_bytes(dash.stdout)
    listed = members(tmp_path / "i.tar")
    assert listed.keys() == members(tmp_path / "d.tar").keys()
    assert len(listed) == 3 + sum(1 for _ in case_tree.rglob("*"))  # RESTORE, MANIFEST, Private


def test_refuses_terminal(case_tree: Path) -> None:
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child: stdout is the pty
        env = dict(os.environ, ECARCHIVE_PASSPHRASE=PASSPHRASE)
        os.execvpe("python3", ["python3", "-m", "ecarchive", "create", str(case_tree)], env)
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2
    assert b"refusing to write a binary archive to a terminal" in output


def test_long_names_all_listed_nothing_written(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / ("a" * 144)).write_text("x")
    (src / "d" / ("b" * 200)).write_text("y")
    (src / "ok").write_text("fine")
    out = tmp_path / "out.tar"
    r = run_cli(["create", str(src), "-o", str(out)])
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "a" * 144 in err and "d/" + "b" * 200 in err and "2 problems" in err
    assert not out.exists()


def test_long_names_skip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / ("a" * 150)).write_text("x")
    (src / ("c" * 143)).write_text("fits")
    out = tmp_path / "out.tar"
    r = run_cli(["create", str(src), "-o", str(out), "--long-names", "skip"])
    assert r.returncode == 1, r.stderr
    assert b"skipped" in r.stderr
    lower = [p for p in members(out) if p.startswith("Private/")]
    assert len(lower) == 1 and len(lower[0].split("/")[1]) == 252


def test_fnek_off_allows_255_byte_names(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / ("n" * 200)).write_text("x")
    out = tmp_path / "out.tar"
    r = run_cli(["create", str(src), "-o", str(out), "--fnek", "off"])
    assert r.returncode == 0, r.stderr
    assert "Private/" + "n" * 200 in members(out)


def test_unreadable_paths_reported_together(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    (src / "locked" / "inner").write_text("x")
    (src / "secret").write_text("s")
    (src / "long-target").symlink_to("t" * 3008)
    os.chmod(src / "secret", 0)
    os.chmod(src / "locked", 0)
    out = tmp_path / "out.tar"
    try:
        r = run_cli(["create", str(src), "-o", str(out)], drop_dac=True)
    finally:
        os.chmod(src / "locked", 0o755)
    assert r.returncode == 2, r.stderr
    err = r.stderr.decode()
    assert "secret: cannot open" in err and "locked: cannot read directory" in err
    assert "long-target: symlink target is 3008 bytes" in err
    assert not out.exists()


def test_exclude_and_exclude_from(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "build" / "deep").mkdir(parents=True)
    (src / "build" / "deep" / "x.o").write_text("o")
    (src / "keep.c").write_text("c")
    (src / "sub").mkdir()
    (src / "sub" / "y.o").write_text("o")
    (src / "sub" / "notes.txt").write_text("n")
    pats = tmp_path / "ex"
    pats.write_text("*.txt\n")
    out = tmp_path / "o.tar"
    r = run_cli(
        [
            "create",
            str(src),
            "-o",
            str(out),
            "--fnek",
            "off",
            "--exclude",
            "build",
            "--exclude",
            "*.o",
            "--exclude-from",
            str(pats),
        ]
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p for p in members(out) if p.startswith("Private/")) == [
        "Private/keep.c",
        "Private/sub",
    ]


def test_socket_skipped_with_warning(tmp_path: Path) -> None:
    import socket

    src = tmp_path / "src"
    src.mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(src / "sock"))
    (src / "f").write_text("f")
    out = tmp_path / "o.tar"
    r = run_cli(["create", str(src), "-o", str(out), "--fnek", "off"])
    s.close()
    assert r.returncode == 0 and b"sock: socket ignored" in r.stderr
    assert "Private/sock" not in members(out)


def test_broken_pipe_is_one_line(case_tree: Path) -> None:
    env = dict(os.environ, ECARCHIVE_PASSPHRASE=PASSPHRASE)
    p = subprocess.run(
        f"python3 -m ecarchive create {case_tree} -q | head -c 1000 >/dev/null; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "Broken pipe" in lines[0] and "Traceback" not in p.stderr.decode()


@pytest.fixture
def small_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs (not root?)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_full_disk_one_line_no_partial_file(tmp_path: Path, small_fs: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(1_000_000))
    out = small_fs / "o.tar"
    r = run_cli(["create", str(src), "-o", str(out)])
    assert r.returncode == 2
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("bad", ["", "x" * 65, "a\0b"])
def test_bad_passphrases_refused(tmp_path: Path, bad: str) -> None:
    src = tmp_path / "s"
    src.mkdir()
    pf = tmp_path / "pf"
    pf.write_bytes(bad.encode() + b"\n")
    r = run_cli(
        ["create", str(src), "-o", str(tmp_path / "o.tar"), "--passphrase-file", str(pf)],
        passphrase=None,
    )
    assert r.returncode == 2 and b"passphrase" in r.stderr
    assert not (tmp_path / "o.tar").exists()


def test_passphrase_sources_agree(tmp_path: Path) -> None:
    pf = tmp_path / "pf"
    pf.write_text(PASSPHRASE + "\n")
    by_env = run_cli(["keys"]).stdout
    by_file = run_cli(["keys", "--passphrase-file", str(pf)], passphrase=None).stdout
    by_fd = run_cli(
        ["keys", "--passphrase-fd", "0"], passphrase=None, stdin=PASSPHRASE.encode()
    ).stdout
    assert by_env == by_file == by_fd
    assert b"3ab38bb4917daae6" in by_env and b"dfe2081a9780d1ee" in by_env


def test_no_passphrase_without_tty_is_clear(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    r = subprocess.run(
        ["setsid", "python3", "-m", "ecarchive", "create", str(src), "-o", str(tmp_path / "o")],
        capture_output=True,
        env={k: v for k, v in os.environ.items() if k != "ECARCHIVE_PASSPHRASE"},
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2 and b"--passphrase-file" in r.stderr
