"""ISO writer throughput beside the tar sink, raw copying and `genisoimage -R`, in one run.

    python benchmarks/iso_bench.py [--files 2000] [--mib 512] [--dir /dev/shm]

A synthetic tree is created (in RAM by default, so the disk does not dominate); every
contestant reads the same files with the same 1 MiB buffer and writes to /dev/null. No
encryption: this measures what the container format costs on top of moving the bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecarchive.iso import plan_iso, write_iso
from ecarchive.model import Entry, Kind
from ecarchive.sinks.tar import write_tar

CHUNK = 1 << 20
MIB = 1 << 20


def make_tree(root: Path, files: int, total_mib: int) -> None:
    per_dir = 100
    sizes = [(i % 17 + 1) for i in range(files)]
    scale = total_mib * MIB / sum(sizes)
    block = os.urandom(CHUNK)
    for index, weight in enumerate(sizes):
        directory = root / f"d{index // per_dir:03d}"
        directory.mkdir(exist_ok=True)
        size = int(weight * scale)
        with open(directory / f"file-{index:05d}-{'x' * 80}", "wb") as f:
            while size > 0:
                f.write(block[: min(size, CHUNK)])
                size -= CHUNK


def plan(root: Path) -> list[Entry]:
    entries = [Entry(Kind.DIR, b"Private", 0o700, 0, 0, "", "", 0)]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        for name in sorted(dirnames) + sorted(filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            member = b"Private/" + os.fsencode(rel / name).removeprefix(b"./")
            if stat.S_ISDIR(st.st_mode):
                entries.append(Entry(Kind.DIR, member, 0o755, 0, 0, "", "", st.st_mtime_ns))
            else:
                entries.append(Entry(Kind.FILE, member, 0o644, 0, 0, "", "", st.st_mtime_ns,
                                     size=st.st_size, source=os.fsencode(path)))
    # os.walk lists a directory's children before descending, so parents come first.
    return entries


def body(entry: Entry) -> Iterator[memoryview]:
    assert entry.source is not None
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(entry.source, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            yield view[:n]


def timed(label: str, nbytes: int, run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    print(f"{label:<28} {seconds:7.2f} s  {nbytes / seconds / MIB:8.1f} MiB/s")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp) / "tree"
        root.mkdir()
        make_tree(root, args.files, args.mib)
        entries = plan(root)
        data = sum(e.size for e in entries)
        files = [e for e in entries if e.kind is Kind.FILE]
        print(f"{len(entries)} entries, {data / MIB:.0f} MiB of file data")
        null = os.open(os.devnull, os.O_WRONLY)

        def raw() -> None:
            for entry in files:
                for chunk in body(entry):
                    os.write(null, chunk)

        def iso() -> None:
            layout = plan_iso(entries, volume_label="BENCH", volume_time_ns=0)
            with open(null, "wb", buffering=0, closefd=False) as out:
                write_iso(layout, body, out)

        def tar() -> None:
            write_tar(entries, body, null)

        start = time.perf_counter()
        layout = plan_iso(entries, volume_label="BENCH", volume_time_ns=0)
        print(f"{'plan_iso (layout only)':<28} {time.perf_counter() - start:7.2f} s  "
              f"image {layout.size} bytes")
        raw_s = timed("raw copy", data, raw)
        tar_s = timed("tar sink (libarchive pax)", data, tar)
        iso_s = timed("ISO writer", data, iso)
        if shutil.which("genisoimage"):
            timed("genisoimage -R", data, lambda: subprocess.run(
                ["genisoimage", "-quiet", "-R", "-o", os.devnull, str(root)], check=True))
        print(f"ISO / tar time: {iso_s / tar_s:.2f}   ISO / raw time: {iso_s / raw_s:.2f}")
        os.close(null)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
