"""Memory grows with the number of entries (≤ 1 KiB each), never with file sizes."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Iterator

from ecarchive.iso import plan_iso, write_iso
from ecarchive.model import Entry, Kind
from ecarchive.sinks.iso import body_from_opener

T0 = 1_600_000_000 * 10**9
KIB = 1024
MIB = 1 << 20


def E(kind: Kind, path: bytes, **kw: object) -> Entry:
    base: dict[str, object] = dict(mode=0o644, uid=0, gid=0, uname="", gname="", mtime_ns=T0)
    base.update(kw)
    return Entry(kind, path, **base)  # type: ignore[arg-type]


def test_layout_costs_at_most_1_kib_per_entry() -> None:
    entries = [E(Kind.DIR, b"Private")]
    for d in range(20):
        top = b"Private/ECRYPTFS_FNEK_ENCRYPTED.%0228d" % d
        entries.append(E(Kind.DIR, top))
        entries += [E(Kind.FILE, top + b"/ECRYPTFS_FNEK_ENCRYPTED.%0228d" % f, size=12288)
                    for f in range(1000)]
    tracemalloc.start()
    try:
        layout = plan_iso(entries, volume_label="M", volume_time_ns=T0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert layout.size > 0
    assert peak / len(entries) <= KIB, f"{peak / len(entries):.0f} bytes per entry"


def test_writing_does_not_hold_file_data() -> None:
    size = 2 * 1024 * MIB + 12345
    chunk = memoryview(bytes(MIB))

    def body(entry: Entry) -> Iterator[memoryview]:
        left = entry.size
        while left:
            step = min(left, len(chunk))
            yield chunk[:step]
            left -= step

    layout = plan_iso([E(Kind.FILE, b"big", size=size)], volume_label="M", volume_time_ns=T0)
    with open(os.devnull, "wb") as out:
        tracemalloc.start()
        try:
            write_iso(layout, body, out)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 2 * MIB, f"peak {peak} bytes while writing a {size}-byte file"


def test_vanished_file_is_zero_filled() -> None:
    """body_from_opener: an opener's None (file gone after the pre-scan) becomes zeros."""
    entries = [E(Kind.FILE, b"gone", size=3 * MIB + 1), E(Kind.FILE, b"kept", size=2,
                                                        data=b"ok")]
    opener = body_from_opener(lambda e: None if e.path == b"gone" else iter([e.data or b""]))
    layout = plan_iso(entries, volume_label="M", volume_time_ns=T0)
    import io

    out = io.BytesIO()
    write_iso(layout, opener, out)
    image = out.getvalue()
    gone, kept = layout.files
    assert image[gone.lba * 2048 : gone.lba * 2048 + 3 * MIB + 1] == bytes(3 * MIB + 1)
    assert image[kept.lba * 2048 : kept.lba * 2048 + 2] == b"ok"
