"""ISO images from the streaming writer, as real readers see them.

Readers: libarchive-c, `bsdtar -tvf` / `bsdtar -xpf`, `isoinfo -R -l` (genisoimage) and
`xorriso -find` (libisofs). isoinfo and xorriso read symlink targets through 1024-byte
buffers (isoinfo crashes, xorriso refuses), so trees with longer targets are checked with
libarchive and bsdtar only; the kernel tests cover them too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ecarchive.iso import plan_iso
from tests.interop.test_iso_trees import (
    LOWER,
    RESTORE,
    RESTORE_TEXT,
    VOLUME_TIME_NS,
    Item,
    bsdtar_items,
    build_iso,
    expected_items,
    fnek_like,
    isoinfo_items,
    libarchive_items,
    make_deep_tree,
    make_mixed_tree,
    make_wide_tree,
    plan_from_tree,
    xorriso_items,
)
from tests.support.trees import compare, snapshot

TOOLS = ("bsdtar", "isoinfo", "xorriso")
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS), reason=f"needs {', '.join(TOOLS)}"
)
SHORT_TARGET = 900  # below the 1024-byte reader limits of isoinfo and xorriso


def _check_all_readers(image: Path, expected: dict[str, Item], *, long_targets: bool) -> None:
    assert libarchive_items(image) == expected
    assert bsdtar_items(image) == expected
    if long_targets:
        return
    # isoinfo's mode strings leave out setuid, setgid and sticky bits.
    plain = {k: Item(v.type, v.mode & 0o777, v.size, v.target) for k, v in expected.items()}
    assert isoinfo_items(image) == plain
    # libisofs shows modes from PX but reports device sizes as "major,minor": compare types.
    assert xorriso_items(image) == expected


def _extract_and_compare(image: Path, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "extracted"
    out.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(image), "-C", str(out)], check=True)
    assert (out / RESTORE.decode()).read_bytes() == RESTORE_TEXT
    assert compare(snapshot(source), snapshot(out / LOWER.decode()), owners=True) == []


@pytest.mark.parametrize("target_len", [SHORT_TARGET, 4000])
def test_mixed_tree(tmp_path: Path, target_len: int) -> None:
    source = tmp_path / "src"
    make_mixed_tree(source, target_len=target_len)
    entries = plan_from_tree(source)
    image = tmp_path / "mixed.iso"
    layout = build_iso(entries, image)
    assert image.stat().st_size == layout.size
    _check_all_readers(image, expected_items(entries), long_targets=target_len >= 1024)
    _extract_and_compare(image, source, tmp_path)


def test_deep_tree(tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_deep_tree(source, levels=14)
    entries = plan_from_tree(source)
    image = tmp_path / "deep.iso"
    layout = build_iso(entries, image)
    assert image.stat().st_size == layout.size
    deepest = max(e.path.count(b"/") for e in entries)
    assert deepest >= 14
    _check_all_readers(image, expected_items(entries), long_targets=False)
    _extract_and_compare(image, source, tmp_path)


def test_wide_directory(tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_wide_tree(source, count=2000)
    entries = plan_from_tree(source)
    image = tmp_path / "wide.iso"
    layout = build_iso(entries, image)
    assert image.stat().st_size == layout.size
    wide = next(d for d in layout.directories if d.name == b"wide")
    assert wide.size > 100 * 2048  # the directory spans many sectors
    _check_all_readers(image, expected_items(entries), long_targets=False)
    _extract_and_compare(image, source, tmp_path)


def test_long_symlink_targets(tmp_path: Path) -> None:
    """Targets up to 4095 bytes: one huge component, many components, split over CE blocks."""
    source = tmp_path / "src"
    source.mkdir()
    targets = {
        "one-component": fnek_like(1, 4000),
        "many-components": "/".join(fnek_like(i, 240) for i in range(16))[:4095],
        "max": fnek_like(2, 4095),
        "around-248": "/".join(fnek_like(i, 247 + i) for i in range(4)),
    }
    for name, target in targets.items():
        os.symlink(target, source / (fnek_like(len(name), 252)[: -len(name)] + name))
    entries = plan_from_tree(source)
    image = tmp_path / "links.iso"
    layout = build_iso(entries, image)
    assert layout.continuation_blocks >= 4
    _check_all_readers(image, expected_items(entries), long_targets=True)
    _extract_and_compare(image, source, tmp_path)


def test_same_plan_gives_identical_images(tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_mixed_tree(source, target_len=SHORT_TARGET)
    entries = plan_from_tree(source)
    build_iso(entries, tmp_path / "a.iso")
    build_iso(entries, tmp_path / "b.iso")
    assert (tmp_path / "a.iso").read_bytes() == (tmp_path / "b.iso").read_bytes()


def test_volume_descriptor(tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_deep_tree(source, levels=3)
    image = tmp_path / "label.iso"
    layout = build_iso(plan_from_tree(source), image, label="backup_2024")
    text = subprocess.run(["isoinfo", "-d", "-i", str(image)], check=True, capture_output=True,
                          text=True).stdout
    assert "Volume id: BACKUP_2024" in text
    assert f"Volume size is: {layout.total_blocks}" in text
    assert "Rock Ridge signatures version 1 found" in text
    assert "NO Joliet present" in text


_PIPE_WRITER = """
import sys
from tests.interop.test_iso_trees import build_iso, file_body, plan_from_tree, VOLUME_TIME_NS
from ecarchive.iso import plan_iso, write_iso
from pathlib import Path
layout = plan_iso(plan_from_tree(Path(sys.argv[1])), volume_label="PIPE",
                  volume_time_ns=VOLUME_TIME_NS)
write_iso(layout, file_body, sys.stdout.buffer)
sys.stdout.buffer.flush()
"""
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TMPFILE")


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_writing_to_a_pipe_creates_no_file(tmp_path: Path) -> None:
    """Under strace, the writer opens nothing for writing and never seeks its output."""
    source = tmp_path / "src"
    make_mixed_tree(source, target_len=SHORT_TARGET)
    trace = tmp_path / "trace"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=os.getcwd())
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-o", str(trace), "-e",
         "trace=open,openat,creat,mkdir,rename,renameat,memfd_create,lseek,ftruncate",
         sys.executable, "-c", _PIPE_WRITER, str(source)],
        stdout=subprocess.PIPE, env=env, check=True, cwd=os.getcwd(),
    )
    layout = plan_iso(plan_from_tree(source), volume_label="PIPE", volume_time_ns=VOLUME_TIME_NS)
    assert len(proc.stdout) == layout.size
    calls = trace.read_text().splitlines()
    writes = [c for c in calls if ("open" in c or "creat" in c)
              and any(f in c for f in _WRITE_FLAGS) and "= -1" not in c and "/dev/null" not in c]
    assert writes == []
    assert [c for c in calls if "mkdir(" in c or "rename" in c or "memfd_create" in c] == []
    # Python probes stdout once at start-up with lseek(1, 0, SEEK_CUR); anything else is a seek.
    seeks = [c for c in calls if "lseek(1," in c and "lseek(1, 0, SEEK_CUR)" not in c]
    assert seeks + [c for c in calls if "ftruncate(1," in c] == []
    image = tmp_path / "piped.iso"
    image.write_bytes(proc.stdout)
    assert bsdtar_items(image) == expected_items(plan_from_tree(source))
