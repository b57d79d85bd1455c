"""Real FUSE mounts for the mount tests: `ecarchive mount` as a user runs it, then unmounted.

FUSE needs /dev/fuse, libfuse and mfusepy (the `mount` extra) and, for the copies, rsync.
Under CI=true a missing piece fails the tests (CI installs them); elsewhere they are skipped
with the reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import run_cli

MOUNT_WAIT = 30.0
POLL = 0.05


def _fuse_missing() -> str | None:
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        return f"/dev/fuse: {e.strerror}"
    for tool in ("rsync", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        return "fusermount3 is not installed (apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as e:
        return f"mfusepy/libfuse unavailable: {e}"
    return None


@pytest.fixture(scope="session")
def fuse() -> None:
    missing = _fuse_missing()
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"FUSE must work in CI but cannot: {missing}", pytrace=False)
    pytest.skip(f"FUSE unavailable: {missing}")


def unmount(mnt: Path) -> None:
    """Unmount, also a mount whose server died (ismount cannot see it: ENOTCONN)."""
    if os.path.ismount(mnt) or _dead(mnt):
        tool = shutil.which("fusermount3") or shutil.which("fusermount") or "umount"
        subprocess.run([tool, "-u", str(mnt)], check=False, capture_output=True)
        if os.path.ismount(mnt) or _dead(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def _dead(mnt: Path) -> bool:
    try:
        os.stat(mnt)
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


def wait_mounted(mnt: Path, want: bool = True) -> None:
    deadline = time.monotonic() + MOUNT_WAIT
    while os.path.ismount(mnt) != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"{mnt} {'never mounted' if want else 'still mounted'}")
        time.sleep(POLL)


@contextlib.contextmanager
def mounted(src: Path, mnt: Path, *args: str) -> Iterator[Path]:
    """`ecarchive mount [args] SRC MNT` in the background; unmounted on the way out."""
    mnt.mkdir(parents=True, exist_ok=True)
    r = run_cli(["mount", *args, str(src), str(mnt)])
    try:
        assert r.returncode == 0, r.stderr.decode()
        assert os.path.ismount(mnt), "mount returned before the mount answered"
        yield mnt
    finally:
        unmount(mnt)
