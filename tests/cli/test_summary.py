"""The closing summary of `create` and `restore` on stderr (not with -q), and the progress
bar's file count."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ecarchive.progress import Progress
from tests.cli.conftest import run_cli

SUMMARY = re.compile(
    r"^ecarchive: (?P<verb>created|restored) (?P<files>\d+) files, (?P<dirs>\d+) directories"
    r"(?:, (?P<other>\d+) other)?; read (?P<read>[\d,]+) bytes, "
    r"wrote (?P<wrote>[\d,]+) bytes in (?P<secs>[\d.]+) s "
    r"\((?P<rate>[\d.]+) MB/s\); (?P<warnings>\d+) warnings?$",
    re.M,
)


def _bytes(text: str) -> int:
    return int(text.replace(",", ""))


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "one").write_bytes(os.urandom(2_000_000))
    (src / "a" / "two").write_bytes(b"two")
    (src / "a" / "b" / "three").write_bytes(b"")
    os.link(src / "a" / "two", src / "a" / "two-again")
    os.symlink("one", src / "link")
    return src


def test_create_and_restore_print_a_summary(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    for name in ("a.tar", "a.iso"):
        out = tmp_path / name
        r = run_cli(["create", str(src), "-o", str(out)])
        assert r.returncode == 0, r.stderr.decode()
        m = SUMMARY.search(r.stderr.decode())
        assert m, r.stderr.decode()
        # 3 regular files; SOURCE itself, a, a/b; a further hard link and a symlink
        assert (m["verb"], m["files"], m["dirs"], m["other"]) == ("created", "3", "3", "2")
        assert m["warnings"] == "0"
        assert _bytes(m["read"]) == 2_000_003  # a hard link's content is read once
        assert _bytes(m["wrote"]) == out.stat().st_size
        assert float(m["rate"]) > 0

        dest = tmp_path / f"out-{name}"
        r = run_cli(["restore", str(out), str(dest)])
        assert r.returncode == 0, r.stderr.decode()
        m = SUMMARY.search(r.stderr.decode())
        assert m, r.stderr.decode()
        assert (m["verb"], m["files"], m["other"], m["warnings"]) == ("restored", "3", "2", "0")
        assert _bytes(m["read"]) == out.stat().st_size
        assert _bytes(m["wrote"]) == 2_000_003


def test_quiet_means_no_summary(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    r = run_cli(["create", str(src), "-o", str(tmp_path / "a.tar"), "-q"])
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    r = run_cli(["restore", str(tmp_path / "a.tar"), str(tmp_path / "out"), "-q"])
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()


def test_warnings_are_counted(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    fifo_dir = src / "sock"
    fifo_dir.mkdir()
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(fifo_dir / "s"))  # sockets are skipped with a warning
    try:
        r = run_cli(["create", str(src), "-o", str(tmp_path / "a.tar")])
    finally:
        s.close()
    m = SUMMARY.search(r.stderr.decode())
    assert m and m["warnings"] == "1", r.stderr.decode()


def test_progress_bar_shows_files_done_of_total(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    # big enough that the bar is redrawn while it runs (tqdm redraws every 0.1 s at most)
    (src / "zz-big").write_bytes(os.urandom(48 << 20))
    r = run_cli(["create", str(src), "-o", str(tmp_path / "a.tar"), "--progress"])
    assert r.returncode == 0, r.stderr.decode()
    assert re.search(r"B/s, [1-4]/4 files\]", r.stderr.decode()), r.stderr.decode()
    r = run_cli(["restore", str(tmp_path / "a.tar"), str(tmp_path / "out"), "--progress"])
    assert r.returncode == 0, r.stderr.decode()
    assert re.search(r"B/s, [1-4] files\]", r.stderr.decode()), r.stderr.decode()


def test_progress_counts_files_beside_bytes() -> None:
    bar = Progress(1000, True, files=4)
    try:
        bar.update(500)
        bar.file_done()
        bar.file_done()
        assert "2/4 files" in str(bar._bar)
    finally:
        bar.close()
