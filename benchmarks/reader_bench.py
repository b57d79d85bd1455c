"""CPU cost of the encrypting reader alone: plan, read, encrypt and hash a tree, no sink.

Run from the repository root (or with PYTHONPATH pointing at another checkout to compare):
    python benchmarks/reader_bench.py SOURCE [--jobs N] [--runs R]
Prints, per run, the process's CPU seconds (user + system, every thread) per GiB of lower
bytes and per file, and the wall time. On a shared machine wall time is noise; CPU seconds
are the figure to compare, and the smallest of several runs the closer to an idle machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Runs from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecarchive.ecryptfs.keys import FnekMode, derive_keyset
from ecarchive.errors import Reporter
from ecarchive.fsio import open_root
from ecarchive.keysource import FreshKeys
from ecarchive.model import Kind
from ecarchive.plan import PlanOptions, build_plan
from ecarchive.reader import EncryptingReader

KEY_BYTES = 16
GIB = 1 << 30


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _digest(chunks: object, consumed: Callable[[], bytes]) -> bytes:
    """The member's SHA-256 as the manifest gets it: from the workers when they hashed it."""
    known = getattr(chunks, "sha256", None)
    if callable(known):
        return bytes(known())
    if isinstance(known, bytes):
        return known
    return consumed()


def run(source: bytes, jobs: int) -> tuple[float, float, int, int]:
    """One pass over `source`: (CPU seconds, wall seconds, lower bytes, files)."""
    keys = derive_keyset(b"reader bench", FnekMode.SEPARATE)
    reporter = Reporter(stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
    cpu, wall = _cpu(), time.perf_counter()
    root_fd = open_root(source)
    try:
        plan = build_plan(
            PlanOptions(source=source, encrypt=lambda n: n, names_encrypted=False, root_fd=root_fd),
            reporter,
        )
        reader = EncryptingReader(
            FreshKeys(keys.file_key, KEY_BYTES),
            filenames_encrypted=False,
            reporter=reporter,
            root_fd=root_fd,
            jobs=jobs,
        )
        lower = files = 0
        try:
            entries = [e for e in plan.entries if e.kind is Kind.FILE and e.source]
            reader.expect(entries)
            for entry in entries:
                chunks = reader.open(entry)
                if chunks is None:
                    continue
                digest = hashlib.sha256()
                for chunk in chunks:
                    lower += len(chunk)
                    if getattr(chunks, "sha256", None) is None:
                        digest.update(chunk)
                _digest(chunks, digest.digest)
                files += 1
        finally:
            reader.close()
    finally:
        os.close(root_fd)
    return _cpu() - cpu, time.perf_counter() - wall, lower, files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.runs):
        cpu, wall, lower, files = run(os.fsencode(args.source), args.jobs)
        print(
            f"jobs {args.jobs}: {cpu:.2f} CPU-s, {wall:.2f} s wall, {lower / 1e9:.2f} GB lower, "
            f"{files} files: {cpu / (lower / GIB):.2f} CPU-s/GiB, "
            f"{cpu / max(files, 1) * 1e6:.0f} CPU-µs/file, CPU/wall {cpu / wall:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
