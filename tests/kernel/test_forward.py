"""ecarchive -> kernel: archives made by `ecarchive create` must mount with the real eCryptfs.

All cases share one boot. In the guest each archive is extracted with GNU tar, the keys are
added and the tree mounted with the commands printed in its own RESTORE.txt (only the paths
substituted), and the plaintext view is compared with the source on the host.
"""

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
from tests.support.trees import Record, compare, make_case_tree, snapshot

pytestmark = pytest.mark.kernel

BIG_MIB = 3
LOWER_DEFAULT = "Private"


@dataclasses.dataclass(frozen=True)
class Case:
    key_bytes: int
    fnek: str
    lower_name: str = LOWER_DEFAULT

    @property
    def name(self) -> str:
        return f"aes{self.key_bytes * 8}-fnek-{self.fnek}-{self.lower_name}"


CASES = (
    Case(16, "separate"),
    Case(16, "same"),
    Case(16, "off"),
    Case(32, "separate"),
    Case(32, "same"),
    Case(32, "off", lower_name="Vault"),
)


@dataclasses.dataclass(frozen=True)
class Forward:
    source: dict[str, Record]
    created: dict[str, str]  # case name -> create failure ('' = archive made)
    restore_txt: dict[str, str]


def _job(case: Case, archive: Path, restore_txt: str) -> Job:
    lower = f'"$SCRATCH/x/{case.lower_name}"'
    commands = key_lines(restore_txt) + mount_lines(restore_txt, lower, '"$TMPD/plain"')
    script = "\n".join(
        [
            'mkdir "$SCRATCH/x" "$TMPD/plain"',
            'tar -C "$SCRATCH/x" -xpf "$JOB/archive.tar" --numeric-owner --same-owner',
            f"test -d {lower}",
            f"export PASSPHRASE={shlex.quote(PASSPHRASE)}",
            *commands,
            'walk "$TMPD/plain" "$JOB/view.json"',
            'umount "$TMPD/plain"',
        ]
    )
    return Job(case.name, script + "\n", inputs={"archive.tar": archive}, timeout=180)


def oracle_jobs(work: Path) -> tuple[list[Job], Forward]:
    source = work / "source"
    make_case_tree(source, big_mib=BIG_MIB)
    created: dict[str, str] = {}
    texts: dict[str, str] = {}
    jobs = []
    for case in CASES:
        out = work / f"{case.name}.tar"
        args = ["create", str(source), "-o", str(out), "-q"]
        args += ["--key-bytes", str(case.key_bytes), "--fnek", case.fnek]
        if case.lower_name != LOWER_DEFAULT:
            args += ["--lower-name", case.lower_name]
        done = run_ecarchive(*args)
        if done.returncode != 0 or not out.exists():
            created[case.name] = f"ecarchive create failed ({done.returncode}):\n{done.stderr}"
            continue
        created[case.name] = ""
        texts[case.name] = read_member(out, "RESTORE.txt")
        jobs.append(_job(case, out, texts[case.name]))
    return jobs, Forward(snapshot(source), created, texts)


@pytest.fixture(scope="module")
def forward(oracle_batch: Batch) -> tuple[Forward, dict[str, JobResult]]:
    section = oracle_batch.section(__name__)
    assert isinstance(section.state, Forward)
    return section.state, section.results


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_kernel_mounts_ecarchive_tar(
    forward: tuple[Forward, dict[str, JobResult]], case: Case
) -> None:
    state, results = forward
    assert state.created[case.name] == "", state.created[case.name]
    restore_txt = state.restore_txt[case.name]
    assert len(key_lines(restore_txt)) == 1, restore_txt
    assert len(mount_lines(restore_txt, "L", "U")) == 1, restore_txt
    result = results[case.name]
    assert result.returncode == 0, result.describe()
    view = guest_snapshot(result)
    assert compare(state.source, view, mtime="s", hardlinks=True, owners=True) == []
    assert result.ecryptfs_dmesg() == [], result.describe()


@pytest.mark.parametrize("case", CASES[:1], ids=lambda c: c.name)
def test_kernel_shows_nanosecond_mtimes(
    forward: tuple[Forward, dict[str, JobResult]], case: Case
) -> None:
    """The kernel reports the lower inode's mtime at full precision, so a pax archive that
    keeps nanoseconds shows them through the mount (stricter than the seconds contract)."""
    state, results = forward
    view = guest_snapshot(results[case.name])
    assert compare(state.source, view, mtime="ns") == []
