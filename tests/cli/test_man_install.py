"""`pip install` puts the man page where `man ecarchive` finds it, for a venv too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import REPO

# what a source distribution of the package holds
SOURCES = ("ecarchive", "man", "setup.cfg", "pyproject.toml", "README.md", "LICENSE")


def test_pip_install_into_a_venv_makes_man_ecarchive_work(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    wheels = tmp_path / "wheels"
    # `pip install .` in two steps, both offline: the wheel built with this interpreter's
    # setuptools and wheel, then installed into a fresh venv by pip.
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, str(src), "-w", str(wheels)], check=True, capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    wheel = next(wheels.glob("ecarchive-*.whl"))
    subprocess.run([*install, "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    assert (venv / "bin" / "ecarchive").exists()

    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT")}
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    where = subprocess.run(["man", "-w", "ecarchive"], env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip() == str(venv / "share" / "man" / "man1" / "ecarchive.1")
    shown = subprocess.run(
        ["man", "-P", "cat", "ecarchive"], env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0 and "ecarchive create" in shown.stdout, shown.stderr
