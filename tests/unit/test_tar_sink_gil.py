"""The tar sink keeps the GIL through libarchive calls that cannot write, and only those.

A call that writes while keeping the GIL blocks the whole process on a full pipe; when the
pipe's reader is a thread of the same process, that is a deadlock. The writer below feeds a
pipe drained slowly by a thread of its own process, with members whose headers, data and
padding each end exactly at, just before and just after libarchive's block boundary.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import hashlib, os, random, tarfile, threading, time, io
    from ecarchive.model import Entry, Kind
    from ecarchive.sinks.tar import BLOCK_SIZE, write_tar

    rng = random.Random(5)
    sizes = []
    for k in range(1, 4):  # land around each of the first block boundaries
        for delta in (-2048, -1536, -1024, -512, -511, -1, 0, 1, 511, 512):
            sizes.append(max(0, k * BLOCK_SIZE // 3 + delta))
    sizes += [rng.randint(0, 70_000) for _ in range(300)]
    sizes += [BLOCK_SIZE - 512, BLOCK_SIZE, BLOCK_SIZE + 512, 3 * BLOCK_SIZE + 1]
    entries = [
        Entry(Kind.FILE, b"d/f%04d" % i + b"x" * (i % 200), 0o644, 0, 0, "root", "root",
              1_700_000_000_123_456_789, size=n)
        for i, n in enumerate(sizes)
    ]
    chunks = {e.path: rng.randbytes(e.size) for e in entries}

    def open_data(entry):
        data = chunks[entry.path]
        cut = len(data) // 3
        return iter((data[:cut], bytearray(data[cut:])))

    r, w = os.pipe()
    got = io.BytesIO()

    def drain():
        while block := os.read(r, 4096):
            got.write(block)
            time.sleep(0.0002)  # a slow reader: the pipe is full whenever libarchive writes

    t = threading.Thread(target=drain)
    t.start()
    write_tar(entries, open_data, w)
    os.close(w)
    t.join()
    with tarfile.open(fileobj=io.BytesIO(got.getvalue())) as tar:
        members = tar.getmembers()
        assert [m.name.encode() for m in members] == [e.path for e in entries]
        for m in members:
            assert tar.extractfile(m).read() == chunks[m.name.encode()], m.name
    print("ok", len(members))
    """
)


def test_no_deadlock_with_a_slow_reader_in_the_same_process() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok "), done.stdout
