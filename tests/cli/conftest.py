"""Run the real command line in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

PASSPHRASE = "correct horse battery staple"
REPO = Path(__file__).resolve().parents[2]


def run_cli(
    args: Sequence[str],
    *,
    passphrase: str | None = PASSPHRASE,
    stdin: bytes | None = None,
    drop_dac: bool = False,
    cwd: Path | None = None,
    extra_env: dict[str, str] | None = None,
    no_terminal: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """`no_terminal`: run in a new session, so /dev/tty cannot be opened (as from cron)."""
    env = {k: v for k, v in os.environ.items() if k != "ECARCHIVE_PASSPHRASE"}
    env["PYTHONPATH"] = str(REPO)
    if passphrase is not None:
        env["ECARCHIVE_PASSPHRASE"] = passphrase
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "ecarchive", *args]
    if drop_dac:
        # root ignores file permissions; without these capabilities it meets them like anyone
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    return subprocess.run(
        cmd,
        input=stdin,
        capture_output=True,
        env=env,
        cwd=cwd,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        timeout=600,
        start_new_session=no_terminal,
    )


@pytest.fixture
def cli():  # type: ignore[no-untyped-def]
    return run_cli
