"""Restore several volumes in one run, and restore or list only some paths (issue 9, items
10 and 11): a 3-volume ISO set made by `create --media`, restored whole, in any order, volume
by volume, with a volume missing; PATH arguments, --include and --exclude."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.cli.conftest import run_cli
from tests.support.trees import compare, snapshot

VOLUME_BYTES = 600 * 1024


@pytest.fixture(scope="module")
def volume_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    work = tmp_path_factory.mktemp("volumes")
    src = work / "src"
    for d in ("docs", "photos", "photos/2024"):
        (src / d).mkdir(parents=True)
    for i in range(3):
        (src / "docs" / f"note{i}.txt").write_text(f"note {i}\n" * 100)
        (src / "photos" / f"p{i}.raw").write_bytes(os.urandom(200_000))
        (src / "photos" / "2024" / f"q{i}.raw").write_bytes(os.urandom(150_000))
    os.link(src / "docs" / "note0.txt", src / "docs" / "same-as-note0.txt")
    (src / "link").symlink_to("docs/note1.txt")
    r = run_cli(
        [
            "create",
            "--format",
            "iso",
            "--media",
            str(VOLUME_BYTES),
            "-o",
            str(work / "v-%02d.iso"),
            str(src),
        ]
    )
    assert r.returncode == 0, r.stderr.decode()
    volumes = sorted(work.glob("v-*.iso"))
    assert len(volumes) == 3, volumes
    return src, volumes


def test_three_volumes_in_one_command_any_order(
    volume_set: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    src, volumes = volume_set
    dest = tmp_path / "dest"
    order = [volumes[2], volumes[0], volumes[1]]
    r = run_cli(["restore", *map(str, order), str(dest)])
    assert r.returncode == 0, r.stderr.decode()
    assert compare(snapshot(src), snapshot(dest), mtime="s") == []


def test_volume_by_volume_into_one_dest(
    volume_set: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    src, volumes = volume_set
    dest = tmp_path / "dest"
    for volume in reversed(volumes):
        r = run_cli(["restore", str(volume), str(dest)])
        assert r.returncode == 0, r.stderr.decode()
        assert b"of 3 not restored by this run" in r.stderr
    assert compare(snapshot(src), snapshot(dest), mtime="s") == []


def test_missing_volume_is_named(volume_set: tuple[Path, list[Path]], tmp_path: Path) -> None:
    _, volumes = volume_set
    r = run_cli(["restore", str(volumes[0]), str(volumes[2]), str(tmp_path / "dest")])
    assert r.returncode == 1
    assert b"warning: volume 2 of 3 not restored: the set is incomplete" in r.stderr


def test_paths_include_exclude(volume_set: tuple[Path, list[Path]], tmp_path: Path) -> None:
    _, volumes = volume_set
    vols = list(map(str, volumes))

    def restored(*options: str, paths: tuple[str, ...] = ()) -> set[str]:
        dest = tmp_path / f"d{len(os.listdir(tmp_path))}"
        r = run_cli(["restore", *options, *vols, str(dest), *paths])
        assert r.returncode == 0, r.stderr.decode()
        return {str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir()}

    assert restored(paths=("photos/2024",)) == {f"photos/2024/q{i}.raw" for i in range(3)}
    assert restored("--exclude", "*.raw") == {
        *(f"docs/note{i}.txt" for i in range(3)),
        "docs/same-as-note0.txt",
        "link",
    }
    assert restored("--include", "2024") == {f"photos/2024/q{i}.raw" for i in range(3)}
    assert restored("--include", "photos", "--exclude", "2024") == {
        f"photos/p{i}.raw" for i in range(3)
    }


def test_path_that_matches_nothing_is_an_error(
    volume_set: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    _, volumes = volume_set
    r = run_cli(["restore", *map(str, volumes), str(tmp_path / "d"), "docs", "no/such/thing"])
    assert r.returncode == 2
    assert r.stderr.decode().endswith("error: not found in archive: no/such/thing\n")
    assert (tmp_path / "d" / "docs" / "note1.txt").exists()
    r = run_cli(["list", str(volumes[0]), "nothing-here"])
    assert r.returncode == 2 and b"not found in archive: nothing-here" in r.stderr


def test_list_takes_the_same_selection(volume_set: tuple[Path, list[Path]]) -> None:
    _, volumes = volume_set
    listed: list[str] = []
    for volume in volumes:
        r = run_cli(["list", "--exclude", "*.txt", str(volume)])
        assert r.returncode in (0, 2), r.stderr.decode()
        listed += [line.split("\t")[2] for line in r.stdout.decode().splitlines()]
    assert not [p for p in listed if p.endswith(".txt")]
    assert "photos/2024/q0.raw" in listed


def test_list_long_and_json_and_verify_json(volume_set: tuple[Path, list[Path]]) -> None:
    src, volumes = volume_set
    lines: list[str] = []
    objects: list[dict[str, object]] = []
    for volume in volumes:
        r = run_cli(["list", "-l", str(volume)])
        assert r.returncode == 0, r.stderr.decode()
        lines += r.stdout.decode().splitlines()
        r = run_cli(["list", "--json", str(volume)])
        objects += [json.loads(line) for line in r.stdout.decode().splitlines()]
    note = src / "docs" / "note1.txt"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(note.stat().st_mtime))
    size = note.stat().st_size
    assert re.compile(rf"^-rw-r--r-- \S+/\S+ +{size} {when} docs/note1.txt$", re.M).search(
        "\n".join(lines)
    ), lines
    assert "lrwxrwxrwx" in "\n".join(lines) and "link -> docs/note1.txt" in "\n".join(lines)
    by_path = {o["path"]: o for o in objects}
    assert by_path["docs/note1.txt"]["size"] == size
    mtime_s = note.stat().st_mtime_ns // 1_000_000_000  # ISO 9660 keeps seconds
    assert by_path["docs/note1.txt"]["mtime_ns"] == mtime_s * 1_000_000_000
    assert by_path["link"] == {**by_path["link"], "type": "l", "target": "docs/note1.txt"}
    r = run_cli(["verify", "--json", str(volumes[0])])
    (summary,) = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert r.returncode == 0 and summary["summary"]["ok"] is True
    assert (summary["summary"]["volume"], summary["summary"]["volumes"]) == (1, 3)
