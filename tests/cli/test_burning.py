"""The man page's burning recipes, run as written against the real growisofs, wodim and xorriso
where they can run without a drive: growisofs -dry-run onto a plain file (it parses every option
and stops before writing), wodim up to the point where it opens the drive (options are parsed
before), and xorriso for real onto a stdio: pseudo-drive."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import PASSPHRASE, REPO, run_cli

MAN = (REPO / "man" / "ecarchive.1").read_text()
DRIVE = "/dev/sr0"
NO_DRIVE = "/dev/ecarchive-test-no-drive"
WODIM_REACHED_DRIVE = "Cannot open SCSI driver"


def _recipes() -> list[str]:
    """The .nf blocks of BURNING DISCS, as the user reads them."""
    section = MAN.split(".SH BURNING DISCS\n", 1)[1].split("\n.SH ", 1)[0]
    blocks = re.findall(r"^\.nf\n\.RS\n(.*?)\n\.RE\n\.fi$", section, flags=re.M | re.S)
    return [b.replace("\\-", "-").replace("\\e", "\\") for b in blocks]


def _recipe(*words: str) -> str:
    found = [r for r in _recipes() if all(w in r for w in words)]
    assert len(found) == 1, (words, _recipes())
    return found[0]


@pytest.fixture
def shell(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Runs a recipe in bash with `ecarchive` on PATH and a HOME holding ~/Documents."""
    home = tmp_path / "home"
    docs = home / "Documents"
    (docs / "sub").mkdir(parents=True)
    (docs / "letter.txt").write_text("dear reader\n")
    (docs / "sub" / "photo.raw").write_bytes(os.urandom(300_000))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ecarchive"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m ecarchive "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    env = dict(
        os.environ,
        HOME=str(home),
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        PYTHONPATH=str(REPO),
        ECARCHIVE_PASSPHRASE=PASSPHRASE,
    )

    def run(script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-euc", script],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )

    run.home = home  # type: ignore[attr-defined]
    return run


def test_size_lines_print_bare_numbers(shell) -> None:  # type: ignore[no-untyped-def]
    for unit, recipe in (
        ("sectors", _recipe("tracksize:$SIZE")),
        ("bytes", _recipe("wodim", "$SIZE")),
    ):
        size_line = recipe.splitlines()[0]
        assert size_line.startswith("SIZE=$(") and f"--unit {unit}" in size_line
        r = shell(size_line + '\necho "$SIZE"')
        assert r.returncode == 0, r.stderr
        assert re.fullmatch(r"[1-9]\d*\n", r.stdout), r.stdout


def _growisofs_dry_run(recipe: str, target: Path) -> str:
    target.touch()
    return recipe.replace("growisofs ", "growisofs -dry-run ").replace(DRIVE, str(target))


def test_growisofs_recipes_parse(shell, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "disc.img"
    for recipe in (_recipe("growisofs -Z"), _recipe("tracksize:$SIZE")):
        r = shell(_growisofs_dry_run(recipe, target))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Executing 'builtin_dd" in r.stdout + r.stderr
    # the harness can fail: a size growisofs cannot use is refused by the same dry run
    broken = _recipe("tracksize:$SIZE").replace("tracksize:$SIZE", "tracksize:many")
    assert shell(_growisofs_dry_run(broken, target)).returncode != 0


def test_growisofs_volume_command_gets_its_size(shell, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    recipe = _recipe("--media dvd", "growisofs")
    # one volume (no disc change); growisofs -dry-run reads nothing, so drain the pipe after it
    script = _growisofs_dry_run(recipe, tmp_path / "disc.img").replace(
        "/dev/stdin'", "/dev/stdin && cat > /dev/null'"
    )
    r = shell(script)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Executing 'builtin_dd" in r.stdout + r.stderr
    unset = script.replace("$ECARCHIVE_VOLUME_SECTORS", "$ECARCHIVE_NO_SUCH_VARIABLE")
    r = shell(unset)
    assert r.returncode != 0 and "insane tracksize" in r.stdout + r.stderr


def test_wodim_recipes_parse(shell) -> None:  # type: ignore[no-untyped-def]
    for recipe in (_recipe("wodim", "$SIZE"), _recipe("--media cd", "wodim")):
        out = shell(recipe.replace(DRIVE, NO_DRIVE))
        text = out.stdout + out.stderr
        # no drive here: wodim must get as far as opening it, past its option parser
        assert WODIM_REACHED_DRIVE in text, text
        assert "Bad Option" not in text and "Usage:" not in text, text
    broken = _recipe("wodim", "$SIZE").replace("tsize=$SIZE", "tsize=many").replace(DRIVE, NO_DRIVE)
    text = "".join(shell(broken).__dict__[k] or "" for k in ("stdout", "stderr"))
    assert "Bad Option" in text and WODIM_REACHED_DRIVE not in text, text


def test_xorriso_recipe_burns_a_restorable_image(shell, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    burnt = tmp_path / "burnt.img"
    recipe = _recipe("xorriso -as cdrecord")
    r = shell(recipe.replace(f"dev={DRIVE}", f"dev=stdio:{burnt}"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert run_cli(["verify", str(burnt)]).returncode == 0
    out = tmp_path / "restored"
    assert run_cli(["restore", str(burnt), str(out)]).returncode == 0
    docs = shell.home / "Documents"
    assert (out / "sub" / "photo.raw").read_bytes() == (docs / "sub" / "photo.raw").read_bytes()


def test_print_size_units_and_volume_selection(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(os.urandom(600_000))
    media = ["--media", "1000000"]
    human = run_cli(["create", str(src), *media, "--print-size"], passphrase=None)
    assert human.returncode == 0, human.stderr.decode()
    sizes = [int(m) for m in re.findall(r"volume \d+: (\d+) bytes", human.stdout.decode())]
    assert len(sizes) == 3
    as_bytes = run_cli(
        ["create", str(src), *media, "--print-size", "--unit", "bytes"], passphrase=None
    )
    assert as_bytes.stdout.decode().split() == [str(s) for s in sizes]
    second = ["--print-size", "--unit", "sectors", "--volume", "2"]
    sectors = run_cli(["create", str(src), *media, *second], passphrase=None)
    assert sectors.stdout.decode() == f"{sizes[1] // 2048}\n"
    alone = run_cli(["create", str(src), "--unit", "bytes", "-o", str(tmp_path / "a.iso")])
    assert alone.returncode == 2 and b"--unit goes with --print-size" in alone.stderr
