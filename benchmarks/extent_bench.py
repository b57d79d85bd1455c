"""Throughput of the extent cipher against a per-extent reference and raw OpenSSL CBC.

Run from the repository root:
    python benchmarks/extent_bench.py [--seconds S] [--sizes 16384,1048576,...]
Prints MB/s (10^6 bytes/s; median and best of 5 rounds) per key size and batch size, then peak
RSS. On a shared machine the best round is the closer estimate of one uncontended core.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# Runs from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecarchive.ecryptfs import extent
from ecarchive.ecryptfs.extent import (
    EXTENT_SIZE,
    decrypt_extents,
    encrypt_extents,
    root_iv,
)

MIB = 1 << 20
DEFAULT_SIZES = (4 * EXTENT_SIZE, 64 * EXTENT_SIZE, MIB, 4 * MIB)
KEY_SIZES = (16, 32)
ROUNDS = 5
FIRST_INDEX = 1000


def per_extent_reference(fek: bytes, first_index: int, src: bytes, dst: bytearray) -> None:
    """One fresh CBC per extent, as crypt_extent does it."""
    root = hashlib.md5(fek).digest()
    view = memoryview(dst)
    for k in range(len(src) // EXTENT_SIZE):
        field = str(first_index + k).encode().ljust(16, b"\0")
        iv = hashlib.md5(root + field).digest()
        enc = Cipher(algorithms.AES(fek), modes.CBC(iv)).encryptor()
        view[k * EXTENT_SIZE : (k + 1) * EXTENT_SIZE] = enc.update(
            src[k * EXTENT_SIZE : (k + 1) * EXTENT_SIZE]
        )


def calls_for(run: Callable[[], object], seconds: float) -> int:
    """How many calls fill about `seconds`."""
    run()
    start = time.perf_counter()
    run()
    return max(1, int(seconds / max(time.perf_counter() - start, 1e-7)))


def measure(
    named: list[tuple[str, Callable[[], object]]], nbytes: int, seconds: float
) -> dict[str, list[float]]:
    """MB/s of each case in each of ROUNDS rounds; cases take turns within a round so that a
    busy neighbour on the machine slows all of them alike."""
    calls = {name: calls_for(run, seconds / ROUNDS) for name, run in named}
    rates: dict[str, list[float]] = {name: [] for name, _ in named}
    for _ in range(ROUNDS):
        for name, run in named:
            start = time.perf_counter()
            for _ in range(calls[name]):
                run()
            rates[name].append(nbytes * calls[name] / (time.perf_counter() - start) / 1e6)
    return rates


def cases(fek: bytes, size: int) -> list[tuple[str, Callable[[], object]]]:
    """The measured operations on one random batch of `size` bytes."""
    root = root_iv(fek)
    src = os.urandom(size)
    dst = bytearray(size)
    encrypted = bytearray(size)
    encrypt_extents(fek, root, FIRST_INDEX, src, encrypted)
    one_chain = Cipher(algorithms.AES(fek), modes.CBC(bytes(16))).encryptor()
    # update_into wants one block of room beyond the input.
    chain_out = bytearray(size + 16)
    views = (memoryview(src), memoryview(dst))
    found: list[tuple[str, Callable[[], object]]] = [
        ("encrypt_extents", partial(encrypt_extents, fek, root, FIRST_INDEX, src, dst)),
        ("decrypt_extents", partial(decrypt_extents, fek, root, FIRST_INDEX, encrypted, dst)),
        (
            "encrypt, chained path (no numpy)",
            partial(extent._encrypt_chained, fek, root, FIRST_INDEX, *views),
        ),
    ]
    if extent._HAVE_NUMPY:
        found.append(
            (
                "encrypt, interleaved path (numpy)",
                partial(extent._encrypt_interleaved, fek, root, FIRST_INDEX, *views),
            )
        )
    found += [
        ("per-extent reference encrypt", partial(per_extent_reference, fek, 0, src, dst)),
        ("OpenSSL AES-CBC, one chain", partial(one_chain.update_into, src, chain_out)),
    ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per case and batch")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="batch bytes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"numpy interleaved path available: {extent._HAVE_NUMPY}")
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    print(f"{'key':>4} {'batch':>8} {'case':<34} {'median':>7} {'best':>7}  MB/s")
    for key_bytes in KEY_SIZES:
        fek = os.urandom(key_bytes)
        for size in sizes:
            for name, mbs in measure(cases(fek, size), size, args.seconds).items():
                line = f"{key_bytes * 8:>4} {size:>8} {name:<34}"
                print(f"{line} {statistics.median(mbs):>7.0f} {max(mbs):>7.0f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS: {peak_kib / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
