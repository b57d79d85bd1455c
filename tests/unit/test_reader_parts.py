"""A large file's parts are hashed by the jobs that encrypt them, in file order.

The SHA-256 the manifest records for a large file is computed by the workers, part after
part; a part read after the file had ended (it shrank, then grew back while read) is stored as
zeros, and the hash must cover those zeros, not the bytes that came back."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ecarchive.ecryptfs.constants import EXTENT_SIZE
from ecarchive.ecryptfs.extent import encrypt_extents, root_iv
from ecarchive.reader import CHUNK, _Part

FEK = bytes(range(16))
HEADER = b"header bytes"


def _encrypted(plain: bytes, first_extent: int) -> bytes:
    data = bytearray(plain)
    encrypt_extents(FEK, root_iv(FEK), first_extent, data, data)
    return bytes(data)


def test_a_part_read_after_the_end_is_zeros_in_the_data_and_the_hash(tmp_path: Path) -> None:
    content = os.urandom(2 * CHUNK + 5)
    path = tmp_path / "grows-back"
    path.write_bytes(content[: CHUNK // 2])  # shrank before the first part is read
    digest = hashlib.sha256(HEADER)
    first = _Part(bytearray(CHUNK), 0, CHUNK, None)
    second = _Part(bytearray(CHUNK), CHUNK // EXTENT_SIZE, CHUNK, first)
    fd = os.open(path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(1) as pool:
            first.future = pool.submit(first.run, fd, FEK, root_iv(FEK), digest)
            first.future.result()
            path.write_bytes(content)  # grew back before the second part is read
            second.future = pool.submit(second.run, fd, FEK, root_iv(FEK), digest)
            second.future.result()
    finally:
        os.close(fd)
    assert first.got == CHUNK // 2 and first.ended
    assert second.got == CHUNK and second.ended
    expected_first = _encrypted(content[: CHUNK // 2] + bytes(CHUNK // 2), 0)
    expected_second = _encrypted(bytes(CHUNK), CHUNK // EXTENT_SIZE)
    assert bytes(first.buffer) == expected_first
    assert bytes(second.buffer) == expected_second
    assert digest.digest() == hashlib.sha256(HEADER + expected_first + expected_second).digest()


def test_parts_finishing_out_of_order_are_hashed_in_order(tmp_path: Path) -> None:
    content = os.urandom(3 * CHUNK)
    path = tmp_path / "big"
    path.write_bytes(content)
    digest = hashlib.sha256(HEADER)
    parts: list[_Part] = []
    for n in range(3):
        parts.append(
            _Part(bytearray(CHUNK), n * CHUNK // EXTENT_SIZE, CHUNK, parts[-1] if parts else None)
        )
    # the first part's job is held back until the later ones have encrypted and are waiting
    release = threading.Event()
    fd = os.open(path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(3) as pool:
            parts[0].future = pool.submit(
                lambda: (release.wait(10), parts[0].run(fd, FEK, root_iv(FEK), digest))[1]
            )
            for part in parts[1:]:
                part.future = pool.submit(part.run, fd, FEK, root_iv(FEK), digest)
            # time enough to encrypt both: they must still wait for the first one's hash
            time.sleep(1)
            assert not parts[1].future.done() and not parts[2].future.done()
            release.set()
            for part in parts:
                assert part.future is not None
                part.future.result(timeout=30)
    finally:
        os.close(fd)
    expected = b"".join(
        _encrypted(content[n * CHUNK : (n + 1) * CHUNK], n * CHUNK // EXTENT_SIZE) for n in range(3)
    )
    assert digest.digest() == hashlib.sha256(HEADER + expected).digest()
