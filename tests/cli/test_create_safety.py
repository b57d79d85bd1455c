"""Output that never destroys (issue 10, safety 3-5) and `--jobs` determinism, end to end.

Each test reproduces what used to go wrong: a FIFO given as -o removed after a broken pipe, a
previous archive truncated by a re-run that was killed, SIGTERM leaving a truncated archive
silently, the archive dumped into itself, the passphrase handed to the burner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import PASSPHRASE, REPO, run_cli
from tests.support.trees import make_case_tree

GIB = 1 << 30
MIB = 1 << 20
STARTED_BYTES = 4 * MIB  # the run is under way once its output has this much
DEADLINE_S = 120


def _env() -> dict[str, str]:
    env = dict(os.environ, ECARCHIVE_PASSPHRASE=PASSPHRASE, PYTHONPATH=str(REPO))
    return env


@pytest.fixture
def slow_tree(tmp_path: Path) -> Path:
    """A tree that takes seconds to archive: a sparse file, read and encrypted in full."""
    src = tmp_path / "slow"
    src.mkdir()
    (src / "small").write_bytes(b"small\n")
    with open(src / "sparse", "wb") as f:
        f.truncate(4 * GIB)
    return src


def _temp_files(directory: Path, final: str) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(f".{final}.")]


def _wait_started(proc: subprocess.Popen[bytes], directory: Path, final: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        temps = _temp_files(directory, final)
        if temps and temps[0].stat().st_size >= STARTED_BYTES:
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("create wrote nothing under a temporary name")


@pytest.mark.parametrize(
    ("sig", "to_group", "code", "message"),
    [
        (signal.SIGTERM, False, 128 + signal.SIGTERM, "interrupted by SIGTERM"),
        (signal.SIGHUP, False, 128 + signal.SIGHUP, "interrupted by SIGHUP"),
        (signal.SIGINT, True, 130, "interrupted"),  # a real Ctrl-C reaches the process group
    ],
)
def test_signal_mid_run_keeps_the_previous_archive(
    tmp_path: Path, slow_tree: Path, sig: signal.Signals, to_group: bool, code: int, message: str
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "a.tar"
    previous = b"the previous good archive\n"
    out.write_bytes(previous)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecarchive", "create", str(slow_tree), "-o", str(out), "-q"],
        env=_env(),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    _wait_started(proc, out_dir, out.name)
    if to_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=DEADLINE_S)
    stderr = err.decode()
    assert proc.returncode == code, stderr
    assert stderr.strip().endswith(message), stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert out.read_bytes() == previous
    assert _temp_files(out_dir, out.name) == []


def test_output_fifo_is_written_never_removed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(8 * MIB))
    fifo = tmp_path / "burner"
    os.mkfifo(fifo)
    # A reader that goes away early: the write fails with a broken pipe.
    reader = subprocess.Popen(["head", "-c", "1000", str(fifo)], stdout=subprocess.DEVNULL)
    r = run_cli(["create", str(src), "-o", str(fifo), "-q"])
    reader.wait(timeout=DEADLINE_S)
    assert r.returncode == 2, r.stderr.decode()
    assert fifo.is_fifo(), "the FIFO given as -o was removed"


def test_output_inside_source_is_not_dumped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_case_tree(src, big_mib=1)
    out = src / "backup.tar"
    first = run_cli(["create", str(src), "-o", str(out), "-q"])
    assert first.returncode == 0, first.stderr.decode()
    size = out.stat().st_size
    again = run_cli(["create", str(src), "-o", str(out), "-q"])
    stderr = again.stderr.decode()
    assert again.returncode == 0, stderr
    assert stderr.count("backup.tar: file is the archive; not dumped") == 1, stderr
    assert "shrank" not in stderr and "changed" not in stderr, stderr
    assert out.stat().st_size == size  # the same members: not itself


def test_volume_command_does_not_get_the_passphrase(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data\n")
    seen = tmp_path / "env.txt"
    r = run_cli(
        [
            "create",
            str(src),
            "-q",
            "--media",
            str(100 * MIB),
            "--volume-command",
            f"env > {seen}; cat > /dev/null",
        ]
    )
    assert r.returncode == 0, r.stderr.decode()
    env = seen.read_text()
    assert "ECARCHIVE_VOLUME=1\n" in env
    assert "ECARCHIVE_PASSPHRASE" not in env and PASSPHRASE not in env


@pytest.mark.parametrize("fmt", ["tar", "iso"])
def test_stable_keys_identical_for_every_jobs_count(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    make_case_tree(src, big_mib=3)
    outputs = []
    for jobs in (1, 2, 5):
        out = tmp_path / f"j{jobs}.{fmt}"
        r = run_cli(["create", str(src), "-o", str(out), "-q", "--stable-keys", "-j", str(jobs)])
        assert r.returncode == 0, r.stderr.decode()
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_jobs_must_be_positive(tmp_path: Path) -> None:
    r = run_cli(["create", str(tmp_path), "-o", str(tmp_path / "a.tar"), "--jobs", "0"])
    assert r.returncode == 2 and "--jobs 0" in r.stderr.decode()
    assert not (tmp_path / "a.tar").exists()


def test_stdout_redirected_inside_source_is_not_dumped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data\n")
    out = src / "redirected.tar"
    with open(out, "wb") as f:
        r = subprocess.run(
            [sys.executable, "-m", "ecarchive", "create", str(src), "-q"],
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.PIPE,
            timeout=DEADLINE_S,
        )
    stderr = r.stderr.decode()
    assert r.returncode == 0, stderr
    assert "redirected.tar: file is the archive; not dumped" in stderr
