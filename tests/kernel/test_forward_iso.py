"""ecarchive --format iso -> kernel: the disc image mounts, and eCryptfs mounts on it.

`ecarchive create --format iso` writes the image; in the guest it is mounted read-only as
iso9660 and eCryptfs goes on the mounted lower directory with the `ro` mount line of the
image's own RESTORE.txt (paths substituted only). A second job extracts the same image with
bsdtar and mounts that, so hard links count there too (isofs gives every name its own inode).
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import libarchive
import pytest

from tests.kernel.batch import Batch
from tests.kernel.oracle import PASSPHRASE, guest_snapshot, key_lines, mount_lines, run_ecarchive
from tests.kernel.vm import Job, JobResult
from tests.support.trees import Record, compare, make_case_tree, snapshot

pytestmark = pytest.mark.kernel

DEEP_LEVELS = 12
WIDE_ENTRIES = 2000


@dataclasses.dataclass(frozen=True)
class IsoForward:
    source: dict[str, Record]
    created: str  # '' = image made, else why not
    restore_txt: str


def _make_source(root: Path) -> None:
    make_case_tree(root, big_mib=2)
    deep = root.joinpath(*(f"level{i}" for i in range(DEEP_LEVELS)))
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("twelve levels down\n")
    wide = root / "wide"
    wide.mkdir()
    for i in range(WIDE_ENTRIES):
        (wide / f"entry-{i:04d}").write_bytes(b"%d\n" % i)


def _read_iso_member(image: Path, name: str) -> str:
    with libarchive.file_reader(str(image)) as archive:
        for entry in archive:
            if entry.pathname == name:
                return b"".join(entry.get_blocks()).decode()
    raise AssertionError(f"{image} has no {name}")


def _script(lower: str, setup: list[str], restore_txt: str) -> str:
    commands = key_lines(restore_txt) + mount_lines(restore_txt, lower, '"$TMPD/plain"')
    return (
        "\n".join(
            [
                'mkdir -p "$TMPD/plain" "$TMPD/disc" "$SCRATCH/x"',
                *setup,
                f"test -d {lower}",
                f"export PASSPHRASE={shlex.quote(PASSPHRASE)}",
                *commands,
                'walk "$TMPD/plain" "$JOB/view.json"',
                'umount "$TMPD/plain"',
            ]
        )
        + "\n"
    )


def oracle_jobs(work: Path) -> tuple[list[Job], IsoForward]:
    source = work / "source"
    _make_source(source)
    image = work / "backup.iso"
    done = run_ecarchive("create", str(source), "-o", str(image), "-q")
    if done.returncode != 0 or not image.exists():
        return [], IsoForward(snapshot(source), f"create failed: {done.stderr}", "")
    text = _read_iso_member(image, "RESTORE.txt")
    loop = Job(
        "iso-loop",
        _script('"$TMPD/disc/Private"', ['mount -t iso9660 -o ro "$IMAGE0" "$TMPD/disc"'], text),
        images=[image],
        timeout=600,
    )
    extracted = Job(
        "iso-bsdtar",
        _script('"$SCRATCH/x/Private"', ['bsdtar -xpf "$IMAGE0" -C "$SCRATCH/x"'], text),
        images=[image],
        timeout=600,
    )
    return [loop, extracted], IsoForward(snapshot(source), "", text)


def _as_isofs_shows(source: dict[str, Record]) -> dict[str, Record]:
    """Linux isofs before 6.16 reads Rock Ridge times from 2038 on as 32-bit values wrapped
    negative; the image holds the right date (bsdtar, libarchive and the extracted job show it)."""

    def wrapped(r: Record) -> Record:
        if r.mtime_s < 2**31:
            return r
        s = r.mtime_s - 2**32
        return dataclasses.replace(r, mtime_s=s, mtime_ns=s * 10**9 + r.mtime_ns % 10**9)

    return {path: wrapped(r) for path, r in source.items()}


@pytest.fixture(scope="module")
def iso_forward(oracle_batch: Batch) -> tuple[IsoForward, dict[str, JobResult]]:
    section = oracle_batch.section(__name__)
    assert isinstance(section.state, IsoForward)
    return section.state, section.results


def test_restore_txt_mounts_read_only(iso_forward: tuple[IsoForward, dict[str, JobResult]]) -> None:
    state, _ = iso_forward
    assert state.created == "", state.created
    (line,) = mount_lines(state.restore_txt, "L", "U")
    assert "-o ro," in line


@pytest.mark.parametrize(("job", "hardlinks"), [("iso-loop", False), ("iso-bsdtar", True)])
def test_kernel_mounts_ecarchive_iso(
    iso_forward: tuple[IsoForward, dict[str, JobResult]], job: str, hardlinks: bool
) -> None:
    state, results = iso_forward
    assert state.created == "", state.created
    result = results[job]
    assert result.returncode == 0, result.describe()
    view = guest_snapshot(result)
    expected = state.source if hardlinks else _as_isofs_shows(state.source)
    assert len(view) == len(expected)
    assert compare(expected, view, mtime="s", hardlinks=hardlinks, owners=True) == []
    assert result.ecryptfs_dmesg() == [], result.describe()
