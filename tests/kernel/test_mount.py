"""ecarchive mount -> copy -> kernel: a copy of the FUSE view mounts as SOURCE with the real eCryptfs.

On the host, SOURCE is mounted with `ecarchive mount` and copied out as a user would: `rsync -a
MNT/ COPY/` or `tar -C MNT -c .`. In the guest the copy is unpacked onto ext4, the key and
mount lines `ecarchive keys` prints are run (only LOWER and PLAIN substituted), and the
plaintext view is compared with SOURCE. All cases share the one oracle boot.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.kernel.batch import Batch
from tests.kernel.oracle import PASSPHRASE, guest_snapshot, run_ecarchive
from tests.kernel.vm import Job, JobResult
from tests.mount.conftest import _fuse_missing, unmount
from tests.support.trees import Record, compare, make_case_tree, snapshot

pytestmark = pytest.mark.kernel

BIG_MIB = 2
LOWER = '"$SCRATCH/x"'
PLAIN = '"$TMPD/plain"'


@dataclasses.dataclass(frozen=True)
class Case:
    key_bytes: int
    fnek: str
    copy: str  # "rsync" (rsync -a of the mount) or "tar" (tar -c of the mount)

    @property
    def name(self) -> str:
        return f"aes{self.key_bytes * 8}-fnek-{self.fnek}-{self.copy}"


CASES = (
    Case(16, "separate", "rsync"),
    Case(16, "same", "rsync"),
    Case(16, "off", "tar"),
    Case(32, "separate", "tar"),
    Case(32, "same", "rsync"),
    Case(32, "off", "rsync"),
)


@dataclasses.dataclass(frozen=True)
class Mounted:
    source: dict[str, Record]
    problems: dict[str, str]  # case name -> what failed on the host ('' = copy made)
    unavailable: str | None  # FUSE cannot run on this host


def _commands(case: Case) -> list[str]:
    """The add-key and mount lines of `ecarchive keys`, LOWER and PLAIN substituted."""
    done = run_ecarchive("keys", "--key-bytes", str(case.key_bytes), "--fnek", case.fnek)
    if done.returncode != 0:
        raise AssertionError(f"ecarchive keys failed: {done.stderr}")
    lines = dict(line.split("\t", 1) for line in done.stdout.splitlines())
    mount = shlex.split(lines["mount"])
    mount = [LOWER if w == "LOWER" else PLAIN if w == "PLAIN" else shlex.quote(w) for w in mount]
    return [lines["add-key"], " ".join(mount)]


def _copy(case: Case, source: Path, work: Path) -> Path:
    """The mount copied out the way `case` says, packed as a pax tar for the trip to the guest."""
    mnt = work / f"{case.name}.mnt"
    mnt.mkdir()
    args = ["--key-bytes", str(case.key_bytes), "--fnek", case.fnek]
    done = run_ecarchive("mount", *args, str(source), str(mnt))
    if done.returncode != 0:
        raise AssertionError(f"ecarchive mount failed ({done.returncode}): {done.stderr}")
    out = work / f"{case.name}.tar"
    try:
        if case.copy == "tar":
            subprocess.run(
                ["tar", "--format=posix", "-C", str(mnt), "-cf", str(out), "."], check=True
            )
        else:
            copy = work / f"{case.name}.copy"
            subprocess.run(["rsync", "-a", f"{mnt}/", f"{copy}/"], check=True)
            subprocess.run(
                ["tar", "--format=posix", "-C", str(copy), "-cf", str(out), "."], check=True
            )
    finally:
        unmount(mnt)
    return out


def _job(case: Case, copy: Path) -> Job:
    script = "\n".join(
        [
            'mkdir "$SCRATCH/x" "$TMPD/plain"',
            'tar -C "$SCRATCH/x" -xpf "$JOB/copy.tar" --numeric-owner --same-owner',
            f"export PASSPHRASE={shlex.quote(PASSPHRASE)}",
            *_commands(case),
            'walk "$TMPD/plain" "$JOB/view.json"',
            'umount "$TMPD/plain"',
        ]
    )
    return Job(case.name, script + "\n", inputs={"copy.tar": copy}, timeout=180)


def oracle_jobs(work: Path) -> tuple[list[Job], Mounted]:
    source = work / "source"
    make_case_tree(source, big_mib=BIG_MIB)
    missing = _fuse_missing()
    if missing is not None:
        return [], Mounted(snapshot(source), {}, missing)
    problems: dict[str, str] = {}
    jobs = []
    for case in CASES:
        try:
            copy = _copy(case, source, work)
        except (AssertionError, subprocess.CalledProcessError) as e:
            problems[case.name] = str(e)
            continue
        problems[case.name] = ""
        jobs.append(_job(case, copy))
    return jobs, Mounted(snapshot(source), problems, None)


@pytest.fixture(scope="module")
def mounted(oracle_batch: Batch) -> tuple[Mounted, dict[str, JobResult]]:
    section = oracle_batch.section(__name__)
    assert isinstance(section.state, Mounted)
    state = section.state
    if state.unavailable is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"FUSE must work in CI but cannot: {state.unavailable}", pytrace=False)
        pytest.skip(f"FUSE unavailable: {state.unavailable}")
    return state, section.results


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_kernel_mounts_a_copy_of_the_view(
    mounted: tuple[Mounted, dict[str, JobResult]], case: Case
) -> None:
    state, results = mounted
    assert state.problems[case.name] == "", state.problems[case.name]
    result = results[case.name]
    assert result.returncode == 0, result.describe()
    view = guest_snapshot(result)
    # rsync -a keeps no hard links (that is -H); tar keeps them through the view's inodes
    hardlinks = case.copy == "tar"
    assert compare(state.source, view, mtime="ns", hardlinks=hardlinks, owners=True) == []
    assert result.ecryptfs_dmesg() == [], result.describe()
