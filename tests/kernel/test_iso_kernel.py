"""The Linux kernel judges the ISO writer: loop-mount the images in the qemu guest.

- iso-tree: a tree with every entry type, 252/253-byte names, 4000-byte symlink targets
  (several SL entries over chained CE blocks), 14 levels of directories and a 2000-entry
  directory, loop-mounted read-only; the kernel's view must equal the source tree.
- iso-ecryptfs: the lower tree ecarchive produced (via its tar, extracted on the host) written
  as an ISO; the guest loop-mounts it, mounts eCryptfs read-only on top and the plaintext view
  must equal the source (hard-link identity excepted: isofs gives every name its own inode).
- iso-bsdtar: the same image extracted with bsdtar in the guest, then mounted: hard links too.
- iso-multi-extent (slow): a file of 4 GiB + 8 KiB + 5 bytes in three extent sections; the
  kernel must report its size and read marker bytes at the start, around both section
  boundaries and at the end. The image is sparse on the host (the body is zeros and markers).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecarchive.iso import plan_iso, write_iso
from ecarchive.model import Entry, Kind
from tests.interop.test_iso_trees import (
    VOLUME_TIME_NS,
    build_iso,
    make_deep_tree,
    make_mixed_tree,
    make_wide_tree,
    plan_from_tree,
)
from tests.kernel.conftest import RunJobs
from tests.kernel.oracle import guest_snapshot, key_lines
from tests.kernel.vm import Boot, Job
from tests.support.trees import Record, compare, make_case_tree, snapshot

pytestmark = pytest.mark.kernel

PASSPHRASE = "correct horse battery staple"
REPO = Path(__file__).resolve().parents[2]
SECTION = 0xFFFFF800
BIG_SIZE = 2 * SECTION + 8192 + 5  # three sections; the last is not sector-aligned
MARK_LEN = 16
ZERO_CHUNK = bytes(1 << 20)


def _mount_iso(target: str = '"$TMPD/iso"') -> str:
    return (
        'uname -r > "$JOB/uname"\n'
        f'mkdir -p {target}\nmount -t iso9660 -o loop,ro "$IMAGE0" {target}\n'
    )


Y2038 = 2**31
FIXED_KERNEL = (6, 16)  # "isofs: fix Y2038 and Y2156 issues in Rock Ridge TF entry"


def _isofs_times(records: dict[str, Record], release: str) -> dict[str, Record]:
    """What a kernel before 6.16 shows for times from 2038 on: the value minus 2**32.

    The image holds the right date (bsdtar, isoinfo and xorriso show it); isofs's iso_date()
    returns an int there. Newer kernels (or a backport) must show the true value.
    """
    version = tuple(int(x) for x in release.split(".")[:2])
    if version >= FIXED_KERNEL:
        return records
    return {
        path: dataclasses.replace(r, mtime_s=r.mtime_s - 2**32) if r.mtime_s >= Y2038 else r
        for path, r in records.items()
    }


def _no_isofs_complaints(dmesg: str) -> list[str]:
    """Rock Ridge or isofs errors; the RRIP_1991A greeting is fine."""
    return [
        line
        for line in dmesg.splitlines()
        if ("rock" in line.lower() or "isofs" in line.lower() or "iso9660" in line.lower())
        and "RRIP_1991A" not in line
    ]


# --- iso-tree ---------------------------------------------------------------------------------


def _tree_case(work: Path) -> tuple[Job, Path]:
    source = work / "tree-src"
    source.mkdir()
    make_mixed_tree(source / "mixed", target_len=4000)
    make_deep_tree(source / "deep", levels=14)
    make_wide_tree(source / "wide", count=2000)
    image = work / "tree.iso"
    build_iso(plan_from_tree(source), image)
    script = _mount_iso() + 'walk "$TMPD/iso/Private" "$JOB/view.json"\numount "$TMPD/iso"\n'
    return Job("iso-tree", script, images=[image], timeout=300), source


# --- iso-ecryptfs / iso-bsdtar ----------------------------------------------------------------


def _ecarchive_lower(work: Path, source: Path) -> tuple[Path, bytes]:
    """ecarchive's lower tree for `source`, via its tar (extracted on the host)."""
    tar = work / "lower.tar"
    env = dict(os.environ, PYTHONPATH=str(REPO), ECARCHIVE_PASSPHRASE=PASSPHRASE)
    subprocess.run(
        [sys.executable, "-m", "ecarchive", "create", str(source), "-o", str(tar)],
        check=True,
        env=env,
        cwd=REPO,
        capture_output=True,
    )
    out = work / "lower"
    out.mkdir()
    subprocess.run(["tar", "-xpf", str(tar), "-C", str(out), "--numeric-owner"], check=True)
    return out / "Private", (out / "RESTORE.txt").read_bytes()


def _mount_ecryptfs_lines(restore: str, lower: str, upper: str) -> list[str]:
    """RESTORE.txt's `mount [-i] -t ecryptfs LOWER UPPER -o OPTS` with the two paths replaced."""
    out = []
    for line in restore.splitlines():
        if "-t ecryptfs" not in line:
            continue
        tokens = shlex.split(line, comments=True)
        if tokens[:1] != ["mount"] or "ecryptfs" not in tokens:
            continue
        options = tokens[tokens.index("-o") + 1]
        flags = [t for t in tokens[1:] if t == "-i"]
        out.append(
            " ".join(["mount", *flags, "-t", "ecryptfs", lower, upper, "-o", shlex.quote(options)])
        )
    assert out, f"no eCryptfs mount line in RESTORE.txt:\n{restore}"
    return out


def _ecryptfs_script(restore: str, lower: str, *, read_only: bool) -> str:
    lines = [f"PASSPHRASE={shlex.quote(PASSPHRASE)}", *key_lines(restore)]
    for line in _mount_ecryptfs_lines(restore, lower, '"$TMPD/plain"'):
        lines.append('mkdir -p "$TMPD/plain"')
        lines.append(
            line.replace(" -o ", " -o ro,", 1)
            if read_only and ",ro" not in line and "-o ro" not in line
            else line
        )
    lines += ['walk "$TMPD/plain" "$JOB/view.json"', 'umount "$TMPD/plain"']
    return "\n".join(lines) + "\n"


def _ecryptfs_cases(work: Path) -> tuple[list[Job], Path]:
    source = work / "ecr-src"
    make_case_tree(source, big_mib=1)
    make_deep_tree(source / "deep14", levels=14)
    wide = source / "wide2000"
    wide.mkdir()
    for index in range(2000):
        (wide / f"entry-{index:04d}").write_bytes(b"")
    lower, restore_bytes = _ecarchive_lower(work, source)
    restore = restore_bytes.decode()
    image = work / "ecryptfs.iso"
    build_iso(plan_from_tree(lower, restore_bytes), image)
    mounted = _mount_iso() + _ecryptfs_script(restore, '"$TMPD/iso/Private"', read_only=True)
    extracted = 'mkdir -p "$SCRATCH/x"\nbsdtar -xpf "$IMAGE0" -C "$SCRATCH/x"\n' + _ecryptfs_script(
        restore, '"$SCRATCH/x/Private"', read_only=False
    )
    jobs = [
        Job("iso-ecryptfs", mounted, images=[image], timeout=600),
        Job("iso-bsdtar", extracted, images=[image], timeout=600),
    ]
    return jobs, source


# --- iso-multi-extent -------------------------------------------------------------------------


def _marker(offset: int) -> bytes:
    return f"@{offset:014d}@".encode()[:MARK_LEN]


MARKS = (0, SECTION - 8, 2 * SECTION - 8, BIG_SIZE - MARK_LEN)


def _big_body(entry: Entry) -> Iterator[bytes]:
    """Zeros with a marker at each of MARKS, without ever holding the file."""
    if entry.data is not None:
        yield entry.data
        return
    position = 0
    for mark in (*MARKS, entry.size):
        while position < mark:
            step = min(len(ZERO_CHUNK), mark - position)
            yield ZERO_CHUNK[:step]
            position += step
        if mark < entry.size:
            yield _marker(mark)
            position += MARK_LEN


class _SparseFile:
    """A file writer that seeks over zero chunks, so a 4 GiB image costs no disk."""

    def __init__(self, path: Path) -> None:
        self.f = path.open("wb")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if len(data) <= len(ZERO_CHUNK) and data == ZERO_CHUNK[: len(data)]:
            self.f.seek(len(data), os.SEEK_CUR)
        else:
            self.f.write(data)
        return len(data)

    def close(self) -> None:
        self.f.truncate(self.f.tell())
        self.f.close()


def _multi_extent_case(work: Path) -> Job:
    entries = [
        Entry(Kind.DIR, b"Private", 0o700, 0, 0, "", "", VOLUME_TIME_NS),
        Entry(Kind.FILE, b"Private/big", 0o600, 0, 0, "", "", VOLUME_TIME_NS, size=BIG_SIZE),
        Entry(
            Kind.FILE,
            b"Private/after",
            0o600,
            0,
            0,
            "",
            "",
            VOLUME_TIME_NS,
            size=6,
            data=b"after\n",
        ),
    ]
    layout = plan_iso(entries, volume_label="BIG", volume_time_ns=VOLUME_TIME_NS)
    image = work / "big.iso"
    out = _SparseFile(image)
    write_iso(layout, _big_body, out)  # type: ignore[arg-type]
    out.close()
    assert image.stat().st_size == layout.size
    reads = "\n".join(
        f'dd if="$TMPD/iso/Private/big" bs=1 skip={m} count={MARK_LEN} 2>/dev/null; echo'
        for m in MARKS
    )
    script = _mount_iso() + (
        'stat -c %s "$TMPD/iso/Private/big" > "$JOB/size"\n'
        f'( {reads} ) > "$JOB/marks"\n'
        'cat "$TMPD/iso/Private/after" > "$JOB/after"\n'
        'ls "$TMPD/iso/Private" > "$JOB/names"\n'
        'umount "$TMPD/iso"\n'
    )
    return Job("iso-multi-extent", script, images=[image], timeout=300)


# --- runs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iso_boot(
    run_in_guest: RunJobs, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Boot, dict[str, Path]]:
    work = tmp_path_factory.mktemp("iso-kernel")
    tree_job, tree_source = _tree_case(work)
    ecr_jobs, ecr_source = _ecryptfs_cases(work)
    boot = run_in_guest([tree_job, *ecr_jobs], work / "vm")
    return boot, {"tree": tree_source, "ecryptfs": ecr_source}


def test_kernel_reads_the_iso_tree(iso_boot: tuple[Boot, dict[str, Path]]) -> None:
    boot, sources = iso_boot
    result = boot.results["iso-tree"]
    assert result.returncode == 0, result.describe()
    view = guest_snapshot(result)
    expected = snapshot(sources["tree"])
    # isofs gives each name of a hard link its own inode: contents must match, identity not.
    assert compare(expected, view, mtime="s", hardlinks=False, owners=True) == []
    assert _no_isofs_complaints(result.dmesg) == []


@pytest.mark.parametrize("job", ["iso-ecryptfs", "iso-bsdtar"])
def test_kernel_ecryptfs_on_iso(iso_boot: tuple[Boot, dict[str, Path]], job: str) -> None:
    boot, sources = iso_boot
    result = boot.results[job]
    assert result.returncode == 0, result.describe()
    view = guest_snapshot(result)
    expected = snapshot(sources["ecryptfs"])
    hardlinks = job == "iso-bsdtar"
    if job == "iso-ecryptfs":  # eCryptfs shows the lower (isofs) times
        expected = _isofs_times(expected, result.file("uname").read_text())
    assert compare(expected, view, mtime="s", hardlinks=hardlinks) == []
    assert result.ecryptfs_dmesg() == []
    assert _no_isofs_complaints(result.dmesg) == []


@pytest.mark.slow
def test_kernel_reads_multi_extent_file(
    run_in_guest: RunJobs, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("iso-big")
    boot = run_in_guest([_multi_extent_case(work)], work / "vm")
    result = boot.results["iso-multi-extent"]
    assert result.returncode == 0, result.describe()
    assert int(result.file("size").read_text()) == BIG_SIZE
    assert result.file("marks").read_text().split() == [_marker(m).decode() for m in MARKS]
    assert result.file("after").read_bytes() == b"after\n"
    assert result.file("names").read_text().split() == ["after", "big"]  # listed once
    assert _no_isofs_complaints(result.dmesg) == []
