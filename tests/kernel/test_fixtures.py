"""Harness self-test on kernel-made trees: the real eCryptfs must show plaintext.manifest.

Independent of ecarchive: if these fail, the oracle (not ecarchive) is broken. The control
case proves the harness notices the silent failure mode (wrong FNEK convention mounts fine and
hides every name).
"""

from __future__ import annotations

import shlex

import pytest

from tests.kernel.conftest import RunJobs
from tests.kernel.oracle import (
    FIXTURE_NAMES,
    FIXTURES,
    PASSPHRASE,
    Fixture,
    fixture,
    guest_snapshot,
    load_manifest,
)
from tests.kernel.vm import Boot, Job
from tests.support.trees import compare

pytestmark = pytest.mark.kernel

CONTROL = "control-wrong-fnek"


def _mount_job(name: str, fx: Fixture, options: str, *, fnek_key: bool = True) -> Job:
    fnek = "--fnek" if fx.separate_fnek and fnek_key else ""
    script = f"""
mkdir "$SCRATCH/lower"
tar -C "$SCRATCH/lower" -xpf "$JOB/lower.tar" --numeric-owner
add_passphrase {shlex.quote(PASSPHRASE)} {fnek}
mount_ecryptfs "$SCRATCH/lower" "$TMPD/plain" {shlex.quote(options)}
walk "$TMPD/plain" "$JOB/view.json"
umount "$TMPD/plain"
"""
    return Job(name, script, inputs={"lower.tar": fx.tar}, timeout=120)


@pytest.fixture(scope="module")
def boot(run_in_guest: RunJobs, tmp_path_factory: pytest.TempPathFactory) -> Boot:
    jobs = [_mount_job(name, fixture(name), fixture(name).mount_options) for name in FIXTURE_NAMES]
    separate = fixture("aes128-fnek-separate")
    # The separate-FNEK tree mounted the mount.ecryptfs way (FNEK = file key, and the real
    # FNEK not in the keyring; with it there, readdir would still decode the names).
    wrong = separate.mount_options.replace(
        f"ecryptfs_fnek_sig={separate.fnek_sig}", f"ecryptfs_fnek_sig={separate.sig}"
    )
    jobs.append(_mount_job(CONTROL, separate, wrong, fnek_key=False))
    return run_in_guest(jobs, tmp_path_factory.mktemp("fixtures-vm"))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_kernel_shows_plaintext(boot: Boot, name: str) -> None:
    result = boot.results[name]
    assert result.returncode == 0, result.describe()
    expected = load_manifest(FIXTURES / "plaintext.manifest")
    assert compare(expected, guest_snapshot(result), mtime="s") == []
    assert result.ecryptfs_dmesg() == []


def test_wrong_fnek_is_detected(boot: Boot) -> None:
    result = boot.results[CONTROL]
    assert result.returncode == 0, result.describe()
    expected = load_manifest(FIXTURES / "plaintext.manifest")
    differences = compare(expected, guest_snapshot(result), mtime="s")
    assert differences, "a wrongly keyed mount looked identical: the harness is blind"
    assert result.ecryptfs_dmesg(), "the kernel did not complain about undecodable names"
