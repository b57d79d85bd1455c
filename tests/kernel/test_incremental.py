"""An incremental chain through the kernel alone: levels 0, 1 and 2 are applied in order in one
directory with the commands their RESTORE.txt prints (remove the names MANIFEST.deleted lists,
then extract), and the eCryptfs mount of the result must equal the tree as it was at level 2.
A second job mounts level 1 on its own: it shows the files that level holds."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest

from tests.kernel.batch import Batch
from tests.kernel.oracle import (
    PASSPHRASE,
    guest_snapshot,
    key_lines,
    mount_lines,
    read_member,
    run_ecarchive,
)
from tests.kernel.vm import Job, JobResult
from tests.support.chain_tree import change_level1, change_level2, make_level0
from tests.support.trees import Record, compare, snapshot

pytestmark = pytest.mark.kernel

LEVELS = 3
PLACEHOLDER = "LEVEL.tar"


@dataclasses.dataclass(frozen=True)
class Chain:
    states: list[dict[str, Record]]  # the source tree right after each level was written
    level1_files: set[str]  # plaintext paths of the files (and hard links) level 1 holds
    restore_txt: str  # level 2's RESTORE.txt
    problem: str  # '' when every level was made


def chain_lines(restore_txt: str, archive: str) -> list[str]:
    """RESTORE.txt's per-level commands (the lines naming LEVEL.tar) for one archive."""
    lines = [
        line.strip()
        for line in restore_txt.splitlines()
        if PLACEHOLDER in line and line.strip().startswith("tar ")
    ]
    if len(lines) != 2:
        raise AssertionError(f"RESTORE.txt should give two tar lines per level:\n{restore_txt}")
    return [line.replace(PLACEHOLDER, archive) for line in lines]


def _mount_and_walk(restore_txt: str, lower: str, view: str) -> list[str]:
    return [
        f"export PASSPHRASE={shlex.quote(PASSPHRASE)}",
        *key_lines(restore_txt),
        *mount_lines(restore_txt, lower, '"$TMPD/plain"'),
        f'walk "$TMPD/plain" "$JOB/{view}"',
        'umount "$TMPD/plain"',
    ]


def oracle_jobs(work: Path) -> tuple[list[Job], Chain]:
    src, snap = work / "source", work / "snapshot"
    src.mkdir()
    make_level0(src)
    archives: dict[str, Path] = {}
    states = []
    for level, change in enumerate((None, change_level1, change_level2)):
        if change is not None:
            change(src)
        out = work / f"level{level}.tar"
        done = run_ecarchive("create", str(src), "-o", str(out), "-q", "-g", str(snap))
        if done.returncode != 0:
            empty = Chain([], set(), "", f"level {level} failed:\n{done.stderr}")
            return [], empty
        archives[out.name] = out
        states.append(snapshot(src))
    text = read_member(archives["level2.tar"], "RESTORE.txt")
    listing = run_ecarchive("list", str(archives["level1.tar"]))
    level1_files = {
        line.split("\t")[2] for line in listing.stdout.splitlines() if line[:2] in ("f\t", "h\t")
    }
    script = ['mkdir "$SCRATCH/x" "$TMPD/plain"', 'cd "$SCRATCH/x"']
    for name in archives:
        script += chain_lines(text, f'"$JOB/{name}"')
    script += _mount_and_walk(text, '"$SCRATCH/x/Private"', "view.json")
    alone = [
        'mkdir "$SCRATCH/one" "$TMPD/plain"',
        'tar -C "$SCRATCH/one" -xpf "$JOB/level1.tar" --numeric-owner',
        *_mount_and_walk(text, '"$SCRATCH/one/Private"', "level1.json"),
    ]
    jobs = [
        Job("chain", "\n".join(script) + "\n", inputs=dict(archives), timeout=300),
        Job(
            "level1",
            "\n".join(alone) + "\n",
            inputs={"level1.tar": archives["level1.tar"]},
            timeout=180,
        ),
    ]
    return jobs, Chain(states, level1_files, text, "")


@pytest.fixture(scope="module")
def chain(oracle_batch: Batch) -> tuple[Chain, dict[str, JobResult]]:
    section = oracle_batch.section(__name__)
    assert isinstance(section.state, Chain)
    assert section.state.problem == "", section.state.problem
    return section.state, section.results


def test_kernel_mounts_the_chain_applied_in_order(
    chain: tuple[Chain, dict[str, JobResult]],
) -> None:
    state, results = chain
    result = results["chain"]
    assert result.returncode == 0, result.describe()
    view = guest_snapshot(result)
    assert compare(state.states[2], view, mtime="s", hardlinks=True, owners=True) == []
    assert result.ecryptfs_dmesg() == [], result.describe()


def test_kernel_shows_one_level_on_its_own(chain: tuple[Chain, dict[str, JobResult]]) -> None:
    state, results = chain
    result = results["level1"]
    assert result.returncode == 0, result.describe()
    view = guest_snapshot(result, "level1.json")
    files = {path for path, record in view.items() if record.type == "f"}
    assert files == state.level1_files and files
    for path in files:
        assert view[path].sha256 == state.states[1][path].sha256, path
