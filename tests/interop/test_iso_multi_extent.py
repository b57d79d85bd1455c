"""The forward-only ISO reader (ecarchive/read/iso) on a multi-extent file of the real writer
(a sparse 8 GiB image: about half a minute of reading zeros)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from ecarchive.errors import Reporter
from ecarchive.iso import plan_iso, write_iso
from ecarchive.model import Entry, Kind
from ecarchive.read.iso import ImageSource, IsoImage
from ecarchive.read.lower import LowerEntry
from tests.interop.test_iso_trees import VOLUME_TIME_NS
from tests.kernel.test_iso_kernel import (
    BIG_SIZE,
    MARK_LEN,
    MARKS,
    _big_body,
    _marker,
    _SparseFile,
)


def _read(image: Path, on_file: object = None) -> tuple[list[LowerEntry], list[str]]:
    reporter = Reporter(stream=io.StringIO())
    fd = os.open(image, os.O_RDONLY)
    try:
        out = []
        for m in IsoImage(ImageSource(fd), reporter, None).members():
            if callable(on_file) and m.entry.data is not None:
                on_file(m.entry)
            m.entry.data = None
            out.append(m.entry)
        return out, reporter.warnings
    finally:
        os.close(fd)


def test_multi_extent_file_reads_across_its_sections(tmp_path: Path) -> None:
    """Three sections of 0xFFFFF800, 0xFFFFF800 and 8 KiB + 5 bytes (a sparse image); the
    markers just before each section boundary and at the end come out where they belong."""
    entries = [
        Entry(Kind.DIR, b"Private", 0o700, 0, 0, "", "", VOLUME_TIME_NS),
        Entry(Kind.FILE, b"Private/big", 0o600, 0, 0, "", "", VOLUME_TIME_NS, size=BIG_SIZE),
        Entry(Kind.FILE, b"Private/after", 0o600, 0, 0, "", "", VOLUME_TIME_NS, size=6,
              data=b"after\n"),
    ]
    layout = plan_iso(entries, volume_label="BIG", volume_time_ns=VOLUME_TIME_NS)
    image = tmp_path / "big.iso"
    out = _SparseFile(image)
    write_iso(layout, _big_body, out)  # type: ignore[arg-type]
    out.close()
    found: dict[bytes, bytes] = {}

    def take(entry: LowerEntry) -> None:
        assert entry.data is not None
        buf = memoryview(bytearray(1 << 24))
        pos = 0
        marks = bytearray()
        while n := entry.data.readinto(buf):
            for m in MARKS:
                if pos <= m < pos + n:
                    marks += bytes(buf[m - pos : min(n, m - pos + MARK_LEN)])
                elif m < pos < m + MARK_LEN:  # a marker cut by a read boundary
                    marks += bytes(buf[: m + MARK_LEN - pos])
            pos += n
        found[entry.path[-1]] = bytes(marks) if entry.size > 100 else b""
        assert pos == entry.size

    members, warnings = _read(image, take)
    assert warnings == []
    sizes = {e.path: (e.kind, e.size) for e in members}
    assert sizes[(b"Private", b"big")] == (Kind.FILE, BIG_SIZE)
    assert sizes[(b"Private", b"after")] == (Kind.FILE, 6)
    assert found[b"big"] == b"".join(_marker(m) for m in MARKS)
