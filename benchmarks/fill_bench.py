"""Read + encrypt a large file: into a 2 MiB buffer then encrypt it in place, against
`encrypt_extents_from`, which takes the plaintext 64 KiB at a time through a buffer that stays
in the CPU's cache (what the encrypting reader does for a large file's parts).

Alone on a quiet machine the two cost about the same (1.40 vs 1.57, 1.46 vs 1.44 CPU-s/GB,
medians of 8 and 4 rounds); the difference shows in `create`, where the hashing worker and the
writer share the caches: benchmarks/run with the old reader as an --extra contestant.

Run from the repository root:
    python benchmarks/fill_bench.py FILE [FILE ...] [--rounds N]
Prints CPU seconds per GB (10^9 bytes) of each round, the two ways taking turns, then the
medians. Warm the page cache first (e.g. cat FILE > /dev/null): this measures CPU, not disk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Runs from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecarchive.ecryptfs.extent import encrypt_extents, encrypt_extents_from, root_iv

CHUNK = 2 << 20
EXTENT = 4096


def _buffered(fd: int, offset: int, view: memoryview, fek: bytes, iv: bytes) -> None:
    os.preadv(fd, [view], offset)
    encrypt_extents(fek, iv, offset // EXTENT, view, view)


def _filled(fd: int, offset: int, view: memoryview, fek: bytes, iv: bytes) -> None:
    def fill(piece: memoryview, at: int) -> None:
        os.preadv(fd, [piece], offset + at)

    encrypt_extents_from(fek, iv, offset // EXTENT, fill, view)


Way = Callable[[int, int, memoryview, bytes, bytes], None]


def one_round(files: list[str], way: Way) -> float:
    fek = os.urandom(16)
    iv = root_iv(fek)
    view = memoryview(bytearray(CHUNK))
    total = 0
    start = time.process_time()
    for name in files:
        fd = os.open(name, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size - os.fstat(fd).st_size % CHUNK
            for offset in range(0, size, CHUNK):
                way(fd, offset, view, fek, iv)
                total += CHUNK
        finally:
            os.close(fd)
    return (time.process_time() - start) / (total / 1e9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    results: dict[str, list[float]] = {"buffer, then encrypt": [], "encrypt_extents_from": []}
    ways: dict[str, Way] = {"buffer, then encrypt": _buffered, "encrypt_extents_from": _filled}
    for n in range(args.rounds):
        for name, way in ways.items():
            cost = one_round(args.files, way)
            results[name].append(cost)
            print(f"round {n + 1}  {name:22s} {cost:.2f} CPU-s/GB", flush=True)
    for name, costs in results.items():
        print(f"median      {name:22s} {statistics.median(costs):.2f} CPU-s/GB")


if __name__ == "__main__":
    main()
