"""The real kernel judges `--stable-keys` archives and `verify` on a mounted disc.

Headers rebuilt from the user.ecarchive.key xattr must stay kernel-valid: a tar made by a
second `--stable-keys` run (every key reused) is extracted in the qemu guest and mounted with
the commands of its own RESTORE.txt; the plaintext view must equal the source. The ISO made
the same way is attached as a disc, mounted as iso9660, checked with `ecarchive verify` on
the mount point (hashes, HMAC, headers, names) and mounted read-only with eCryptfs.
"""

from __future__ import annotations

import shlex

import pytest

from tests.cli.conftest import PASSPHRASE, REPO, run_cli
from tests.kernel.conftest import RunJobs, guest_image, run_in_guest  # noqa: F401 (fixtures)
from tests.kernel.oracle import guest_snapshot, key_lines, mount_lines, read_member
from tests.kernel.vm import Boot, Job, guest_python
from tests.support.trees import Record, compare, make_case_tree, snapshot

pytestmark = pytest.mark.kernel


# The guest hides the host's /tmp behind its own tmpfs, and a CI checkout may live there:
# the package travels into the job directory instead of being imported from REPO.
PACKAGE = {"ecarchive": REPO / "ecarchive"}


def _verify_line(target: str) -> str:
    env = f'PYTHONPATH="$JOB" ECARCHIVE_PASSPHRASE={shlex.quote(PASSPHRASE)}'
    return (
        f"rc=0; env {env} {shlex.quote(guest_python())} -m ecarchive verify {target} "
        f'> "$JOB/verify.txt" 2>&1 || rc=$?; echo $rc > "$JOB/verify.rc"'
    )


@pytest.fixture(scope="module")
def booted(
    run_in_guest: RunJobs,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Boot, dict[str, Record]]:
    work = tmp_path_factory.mktemp("stable-kernel")
    source = work / "source"
    make_case_tree(source, big_mib=2)
    first, tar, iso = work / "first.tar", work / "second.tar", work / "second.iso"
    for out, extra in ((first, []), (tar, []), (iso, ["--format", "iso"])):
        r = run_cli(["create", str(source), "-o", str(out), "-q", "--stable-keys", *extra])
        assert r.returncode == 0, r.stderr.decode()
    assert first.read_bytes() == tar.read_bytes()
    restore = read_member(tar, "RESTORE.txt")
    plain = '"$TMPD/plain"'
    tar_script = "\n".join(
        [
            'mkdir "$SCRATCH/x" "$TMPD/plain"',
            'tar -C "$SCRATCH/x" -xpf "$JOB/archive.tar" --numeric-owner --same-owner',
            f"export PASSPHRASE={shlex.quote(PASSPHRASE)}",
            *key_lines(restore),
            *mount_lines(restore, '"$SCRATCH/x/Private"', plain),
            f'walk {plain} "$JOB/view.json"',
            f"umount {plain}",
            _verify_line('"$SCRATCH/x"'),
        ]
    )
    iso_script = "\n".join(
        [
            'mkdir -p "$TMPD/iso" "$TMPD/plain"',
            'mount -t iso9660 -o ro "$IMAGE0" "$TMPD/iso"',
            _verify_line('"$TMPD/iso"'),
            f"export PASSPHRASE={shlex.quote(PASSPHRASE)}",
            *key_lines(restore),
            *(
                line.replace(" -o ", " -o ro,", 1)
                for line in mount_lines(restore, '"$TMPD/iso/Private"', plain)
            ),
            f'walk {plain} "$JOB/view.json"',
            f"umount {plain}",
        ]
    )
    jobs = [
        Job("stable-tar", tar_script + "\n", inputs={"archive.tar": tar, **PACKAGE}, timeout=240),
        Job("stable-iso", iso_script + "\n", inputs=PACKAGE, images=[iso], timeout=240),
    ]
    boot = run_in_guest(jobs, work / "vm")
    print(boot.summary())
    return boot, snapshot(source)


def test_kernel_mounts_a_stable_keys_tar(booted: tuple[Boot, dict[str, Record]]) -> None:
    boot, source = booted
    result = boot.results["stable-tar"]
    assert result.returncode == 0, result.describe()
    assert compare(source, guest_snapshot(result), mtime="s", hardlinks=True, owners=True) == []
    assert result.ecryptfs_dmesg() == [], result.describe()
    assert result.file("verify.rc").read_text().strip() == "0", result.file(
        "verify.txt"
    ).read_text()


def test_verify_on_a_mounted_disc_and_kernel_reads_it(
    booted: tuple[Boot, dict[str, Record]],
) -> None:
    boot, source = booted
    result = boot.results["stable-iso"]
    assert result.returncode == 0, result.describe()
    report = result.file("verify.txt").read_text()
    assert result.file("verify.rc").read_text().strip() == "0", report
    assert "OK" in report and "HMAC" in report
    # isofs gives every name its own inode, and kernels before 6.16 misread Rock Ridge times
    # from 2038 on (tests/kernel/test_iso_kernel.py covers both): content, types, modes here
    assert compare(source, guest_snapshot(result), mtime=None, hardlinks=False, owners=True) == []
    assert result.ecryptfs_dmesg() == [], result.describe()
