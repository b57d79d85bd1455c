"""The README's Python API example runs as printed and type-checks under mypy --strict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import PASSPHRASE, REPO


def _example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_api_example_runs_and_is_typed(tmp_path: Path) -> None:
    code = _example()
    assert PASSPHRASE in code
    src = tmp_path / "Documents"
    (src / "letters").mkdir(parents=True)
    (src / "letters" / "a.txt").write_text("hello\n")
    for printed, here in (
        ("/home/me/Documents", src),
        ("/tmp/docs.iso", tmp_path / "docs.iso"),
        ("/tmp/restored", tmp_path / "restored"),
    ):
        assert printed in code
        code = code.replace(printed, str(here))
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "ECARCHIVE_PASSPHRASE"}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "restored" / "letters" / "a.txt").read_text() == "hello\n"

    typed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(script),
        ],
        cwd=REPO,  # the project's mypy settings (third-party modules without stubs)
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert typed.returncode == 0, typed.stdout + typed.stderr
