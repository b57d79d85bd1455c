"""Harness self-test on kernel-made trees: the real eCryptfs must show plaintext.manifest.

Independent of ecarchive: if these fail, the oracle (not ecarchive) is broken.
- every fixture tar, extracted with GNU tar on ext4 and mounted with its recorded options;
- the separate-FNEK fixture as an ISO 9660 + Rock Ridge image (genisoimage -R), loop-mounted
  read-only with eCryptfs mounted `ro` on top: the path ecarchive's ISO output takes;
- a control: the separate-FNEK tree mounted the mount.ecryptfs way (FNEK = file key). It mounts
  "fine" and hides every name; the harness must notice, or every other check here is blind.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from tests.kernel.batch import Batch
from tests.kernel.oracle import (
    FIXTURE_NAMES,
    FIXTURES,
    PASSPHRASE,
    fixture,
    guest_snapshot,
    load_manifest,
)
from tests.kernel.vm import Job, JobResult
from tests.support.trees import compare

pytestmark = pytest.mark.kernel

ALL = "fixtures"
CONTROL = "control-wrong-fnek"
ISO_FIXTURE = "aes128-fnek-separate"
ISO_PART = "iso"


def _shared_key_options(name: str) -> str:
    """The fixture's options minus ecryptfs_unlink_sigs, which would drop the keys from the
    keyring at the first umount: the parts of one job share one key derivation."""
    options = fixture(name).mount_options.split(",")
    return ",".join(o for o in options if o != "ecryptfs_unlink_sigs")


def _tar_part(name: str) -> str:
    """Extract, mount, walk, unmount one fixture; its view goes to view-NAME.json."""
    options = shlex.quote(_shared_key_options(name))
    return f"""
mkdir "$SCRATCH/{name}"
tar -C "$SCRATCH/{name}" -xpf "$JOB/{name}.tar" --numeric-owner
mount_ecryptfs "$SCRATCH/{name}" "$TMPD/{name}" {options}
walk "$TMPD/{name}" "$JOB/view-{name}.json"
umount "$TMPD/{name}"
checkpoint {name}
"""


def _iso_part() -> str:
    options = shlex.quote("ro," + _shared_key_options(ISO_FIXTURE))
    return f"""
mkdir "$TMPD/disc"
mount -o loop,ro "$JOB/lower.iso" "$TMPD/disc"
mount_ecryptfs "$TMPD/disc" "$TMPD/{ISO_PART}" {options}
walk "$TMPD/{ISO_PART}" "$JOB/view-{ISO_PART}.json"
umount "$TMPD/{ISO_PART}"
umount "$TMPD/disc"
checkpoint {ISO_PART}
"""


def _make_iso(tar: Path, work: Path) -> Path:
    tree = work / "iso-tree"
    tree.mkdir()
    image = work / "lower.iso"
    for argv in (
        ["tar", "-C", str(tree), "-xpf", str(tar), "--numeric-owner"],
        ["genisoimage", "-quiet", "-R", "-o", str(image), str(tree)],
    ):
        subprocess.run(argv, check=True, capture_output=True, timeout=120)
    return image


def oracle_jobs(work: Path) -> tuple[list[Job], None]:
    # All fixtures share the passphrase: one key derivation (slow under TCG) for all parts.
    script = f"add_passphrase {shlex.quote(PASSPHRASE)} --fnek\n"
    script += "".join(_tar_part(name) for name in FIXTURE_NAMES) + _iso_part()
    inputs = {f"{name}.tar": fixture(name).tar for name in FIXTURE_NAMES}
    inputs["lower.iso"] = _make_iso(fixture(ISO_FIXTURE).tar, work)

    separate = fixture("aes128-fnek-separate")
    wrong = separate.mount_options.replace(
        f"ecryptfs_fnek_sig={separate.fnek_sig}", f"ecryptfs_fnek_sig={separate.sig}"
    )
    # Without --fnek: with the real FNEK in the keyring, readdir would still decode names.
    control = f"""
add_passphrase {shlex.quote(PASSPHRASE)}
mkdir "$SCRATCH/lower"
tar -C "$SCRATCH/lower" -xpf "$JOB/lower.tar" --numeric-owner
mount_ecryptfs "$SCRATCH/lower" "$TMPD/plain" {shlex.quote(wrong)}
walk "$TMPD/plain" "$JOB/view.json"
umount "$TMPD/plain"
"""
    jobs = [
        Job(ALL, script, inputs=inputs, timeout=300),
        Job(CONTROL, control, inputs={"lower.tar": separate.tar}, timeout=120),
    ]
    return jobs, None


@pytest.fixture(scope="module")
def results(oracle_batch: Batch) -> dict[str, JobResult]:
    return oracle_batch.section(__name__).results


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_kernel_shows_plaintext(results: dict[str, JobResult], name: str) -> None:
    result = results[ALL]
    view = guest_snapshot(result, f"view-{name}.json")
    expected = load_manifest(FIXTURES / "plaintext.manifest")
    assert compare(expected, view, mtime="s") == []
    assert result.ecryptfs_dmesg(name) == []


def test_iso_loop_mount_read_only(results: dict[str, JobResult]) -> None:
    result = results[ALL]
    assert result.returncode == 0, result.describe()
    view = guest_snapshot(result, f"view-{ISO_PART}.json")
    expected = load_manifest(FIXTURES / "plaintext.manifest")
    # isofs gives every name its own inode: hard links come back as copies.
    assert compare(expected, view, mtime="s", hardlinks=False) == []
    assert result.ecryptfs_dmesg(ISO_PART) == []


def test_wrong_fnek_is_detected(results: dict[str, JobResult]) -> None:
    result = results[CONTROL]
    assert result.returncode == 0, result.describe()
    expected = load_manifest(FIXTURES / "plaintext.manifest")
    differences = compare(expected, guest_snapshot(result), mtime="s")
    assert differences, "a wrongly keyed mount looked identical: the harness is blind"
    assert result.ecryptfs_dmesg(), "the kernel did not complain about undecodable names"
