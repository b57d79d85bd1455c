"""kernel -> ecarchive: lower trees written by the real eCryptfs must restore in userspace.

In one boot the source tree is copied (`cp -a`, from the 9p job share) into fresh eCryptfs
mounts on ext4, one per key size / FNEK convention; each lower tree is packed with GNU tar
(pax, as the fixtures were). On the host `ecarchive restore TAR DEST` (no --fnek: it must try
the conventions) must give back the source. The guest also walks each mount before packing it,
so a failure says whether the kernel side or ecarchive lost something.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest

from tests.kernel.batch import Batch
from tests.kernel.oracle import FNEK_SIG, PASSPHRASE, SIG, guest_snapshot, run_ecarchive
from tests.kernel.vm import Job, JobResult
from tests.support.trees import Record, compare, make_case_tree, snapshot

pytestmark = pytest.mark.kernel

JOB = "kernel-writes"
BIG_MIB = 2


@dataclasses.dataclass(frozen=True)
class Case:
    key_bytes: int
    fnek: str  # separate | same | off

    @property
    def name(self) -> str:
        return f"aes{self.key_bytes * 8}-fnek-{self.fnek}"

    def mount_options(self) -> str:
        # No ecryptfs_unlink_sigs: the cases of the job share one key derivation.
        options = [
            f"ecryptfs_sig={SIG}",
            "ecryptfs_cipher=aes",
            f"ecryptfs_key_bytes={self.key_bytes}",
        ]
        fnek = {"separate": FNEK_SIG, "same": SIG, "off": None}[self.fnek]
        if fnek is not None:
            options.append(f"ecryptfs_fnek_sig={fnek}")
        return ",".join(options)


CASES = (Case(16, "separate"), Case(32, "separate"), Case(16, "same"), Case(16, "off"))


@dataclasses.dataclass(frozen=True)
class Reverse:
    source: dict[str, Record]
    work: Path


def _part(case: Case) -> str:
    lower, plain = f'"$SCRATCH/{case.name}"', f'"$TMPD/{case.name}"'
    return f"""
mkdir {lower}
mount_ecryptfs {lower} {plain} {shlex.quote(case.mount_options())}
cp -a "$JOB/source/." {plain}/
walk {plain} "$JOB/view-{case.name}.json"
umount {plain}
tar -C {lower} --format=pax --numeric-owner --sort=name -cf "$JOB/{case.name}.tar" .
checkpoint {case.name}
"""


def oracle_jobs(work: Path) -> tuple[list[Job], Reverse]:
    source = work / "source"
    make_case_tree(source, big_mib=BIG_MIB)
    script = f"add_passphrase {shlex.quote(PASSPHRASE)} --fnek\n"
    script += "".join(_part(case) for case in CASES)
    return [Job(JOB, script, {"source": source}, timeout=400)], Reverse(snapshot(source), work)


@pytest.fixture(scope="module")
def reverse(oracle_batch: Batch) -> tuple[Reverse, JobResult]:
    section = oracle_batch.section(__name__)
    assert isinstance(section.state, Reverse)
    return section.state, section.results[JOB]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_ecarchive_restores_kernel_tree(reverse: tuple[Reverse, JobResult], case: Case) -> None:
    state, result = reverse
    view = guest_snapshot(result, f"view-{case.name}.json")
    assert compare(state.source, view, mtime="s") == [], "kernel side lost data"
    assert result.ecryptfs_dmesg(case.name) == []

    dest = state.work / f"restored-{case.name}"
    done = run_ecarchive("restore", "-q", str(result.file(f"{case.name}.tar")), str(dest))
    assert done.returncode == 0, done.stderr
    assert compare(state.source, snapshot(dest), mtime="s", hardlinks=True) == []
