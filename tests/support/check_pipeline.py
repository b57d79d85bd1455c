"""Byte-for-byte check of `EncryptingReader` for every number of workers.

    python tests/support/check_pipeline.py [TREE ...]   (tests/interop/test_pipeline.py runs it)

With deterministic key material (a FreshKeys whose FEK is derived from the member path), every
FILE's lower bytes must be exactly header ‖ encrypt_extents(whole file, zero-padded) computed
here the plain way (and the SHA-256 a worker computed for the manifest theirs), and the tar written with 1, 2, 3 and 8 workers, with and without `expect()`
(reading ahead), must be the same bytes with the same warnings. Also checked: a reader
abandoned mid-file and reused, and files that vanish, shrink, grow or turn into a directory
after the plan (GNU tar's rules). Exit status 0 when everything matches.

Default trees: random files of every size class made in a temporary directory, plus the
benchmark corpora under $ECARCHIVE_BENCH_DIR if they exist.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ecarchive.ecryptfs.extent import encrypt_extents, root_iv
from ecarchive.ecryptfs.header import build_header
from ecarchive.ecryptfs.keys import FnekMode, derive_keyset
from ecarchive.ecryptfs.names import encrypt_name
from ecarchive.errors import Reporter
from ecarchive.fsio import open_root
from ecarchive.keysource import FreshKeys, KeyMaterial
from ecarchive.model import Entry, Kind
from ecarchive.plan import PlanOptions, build_plan
from ecarchive.reader import CHUNK, EncryptingReader, padded
from ecarchive.sinks.tar import write_tar

MIB = 1 << 20
KEY_BYTES = 16
FIXED_NS = 10**18
KEYS = derive_keyset(b"check pipeline", FnekMode.SEPARATE)


class PathKeys(FreshKeys):
    """FreshKeys (so expect() reads ahead) with a FEK derived from the path: repeatable."""

    def material(self, entry: Entry) -> KeyMaterial:
        fek = hashlib.sha256(entry.path).digest()[: self.key_bytes]
        return KeyMaterial(fek=fek, marker=0x5A5A5A5A, packets=self._head + fek + self._tail)


JOBS = (1, 2, 3, 8)


def reference_lower(entry: Entry, keys: PathKeys) -> bytes:
    """The lower file the plain way: the whole plaintext, zero-padded, encrypted in one call."""
    assert entry.source is not None
    material = keys.material(entry)
    with open(entry.source, "rb") as f:
        data = bytearray(f.read())
    data += bytes(padded(len(data)) - len(data))
    encrypt_extents(material.fek, root_iv(material.fek), 0, data, data)
    header = build_header(
        entry.plain_size, material.marker, material.packets, filenames_encrypted=True
    )
    return header + bytes(data)


def archive(
    tree: Path,
    *,
    jobs: int,
    expect: bool,
    after_plan: Callable[[], None] | None = None,
    compare: bool = False,
) -> tuple[str, list[str]]:
    reporter = Reporter(stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
    root_fd = open_root(os.fsencode(tree))
    plan = build_plan(
        PlanOptions(
            source=os.fsencode(tree),
            encrypt=lambda n: encrypt_name(n, KEYS.fnek or KEYS.file_key, KEY_BYTES),
            names_encrypted=True,
            root_fd=root_fd,
        ),
        reporter,
    )
    keys = PathKeys(KEYS.file_key, KEY_BYTES)
    reader = EncryptingReader(
        keys, filenames_encrypted=True, reporter=reporter, root_fd=root_fd, jobs=jobs
    )
    if expect:
        reader.expect(plan.entries)
    if after_plan:
        after_plan()

    def checked(entry: Entry) -> Iterator[bytes | bytearray | memoryview] | None:
        chunks = reader.open(entry)
        if chunks is None or not compare:
            return chunks
        got = b"".join(bytes(c) for c in chunks)
        assert got == reference_lower(entry, keys), f"{entry.rel!r}: lower bytes differ"
        known = getattr(chunks, "sha256", None)  # hashed by the workers, for the manifest
        assert known is not None, f"{entry.rel!r}: not hashed by the workers"
        sha = known if isinstance(known, bytes) else known()
        assert sha == hashlib.sha256(got).digest(), f"{entry.rel!r}: bad sha256"
        return iter((got,))

    digest = hashlib.sha256()
    r, w = os.pipe()

    def drain() -> None:
        while block := os.read(r, MIB):
            digest.update(block)

    reading = threading.Thread(target=drain)
    reading.start()
    try:
        write_tar(plan.entries, checked, w)
    finally:
        os.close(w)
        reading.join()
        os.close(r)
        reader.close()
        os.close(root_fd)
    return digest.hexdigest(), reporter.warnings


def make_tree(root: Path) -> None:
    rng = random.Random(6)
    sizes = [0, 1, 4095, 4096, 4097, 100_000, 262_144, 262_145, MIB - 1, MIB, MIB + 1]
    sizes += [3 * MIB + 17, 7 * MIB + 5, 9 * MIB + 12345]
    sizes += [rng.randint(0, 300_000) for _ in range(400)]
    for i, size in enumerate(sizes):
        d = root / f"d{i % 7}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:04d}").write_bytes(rng.randbytes(size))


def check_same(tree: Path) -> None:
    reference = archive(tree, jobs=1, expect=False, compare=True)
    for jobs in JOBS:
        for expect in (False, True):
            got = archive(tree, jobs=jobs, expect=expect, compare=jobs == 2 and expect)
            assert got == reference, f"{tree}: --jobs {jobs} expect={expect}: outputs differ"
    print(f"ok  {tree}: lower bytes as computed plainly; tars identical for jobs {JOBS}")


def check_abandoned(tree: Path) -> None:
    big = max((p for p in tree.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    assert big.stat().st_size > 4 * CHUNK, big
    st = big.stat()
    entry = Entry(
        kind=Kind.FILE,
        path=b"x",
        mode=0o644,
        uid=0,
        gid=0,
        uname="",
        gname="",
        mtime_ns=st.st_mtime_ns,
        source=os.fsencode(big),
        plain_size=st.st_size,
        size=0,
        rel=os.fsencode(big.relative_to(tree)),
    )
    keys = PathKeys(KEYS.file_key, KEY_BYTES)
    root_fd = open_root(os.fsencode(tree))
    reader = EncryptingReader(
        keys, filenames_encrypted=True, reporter=Reporter(), root_fd=root_fd, jobs=2
    )
    try:
        for _ in range(2):
            reader.expect([entry, entry])
            chunks = reader.open(entry)
            assert chunks is not None
            next(chunks)
            next(chunks)
            chunks.close()  # the sink failed midway
            again = reader.open(entry)
            assert again is not None
            assert b"".join(bytes(c) for c in again) == reference_lower(entry, keys)
    finally:
        reader.close()
        os.close(root_fd)
    print("ok  reader abandoned mid-file and reused")


def check_changes(root: Path) -> None:
    tree = root / "changing"
    targets = {"vanish": 10, "shrink": 20, "grow": 30, "dir": 40, "same": 50}

    def reset() -> None:
        tree.mkdir(exist_ok=True)
        for i in range(200):
            path = tree / f"f{i:03d}"
            if path.is_dir():
                path.rmdir()
            path.write_bytes(bytes([i % 251]) * (i * 97))
            os.utime(path, ns=(FIXED_NS, FIXED_NS))
        big = tree / "zbig"
        big.write_bytes(b"b" * (3 * MIB))
        os.utime(big, ns=(FIXED_NS, FIXED_NS))
        os.utime(tree, ns=(FIXED_NS, FIXED_NS))

    def change() -> None:
        (tree / f"f{targets['vanish']:03d}").unlink()
        with open(tree / f"f{targets['shrink']:03d}", "r+b") as f:
            f.truncate(100)
        with open(tree / f"f{targets['grow']:03d}", "ab") as f:
            f.write(b"more")
        (tree / f"f{targets['dir']:03d}").unlink()
        (tree / f"f{targets['dir']:03d}").mkdir()
        with open(tree / "zbig", "r+b") as f:
            f.truncate(MIB + 5)
        os.utime(tree, ns=(FIXED_NS, FIXED_NS))

    results = []
    for jobs in JOBS:
        for expect in (False, True):
            reset()
            results.append(archive(tree, jobs=jobs, expect=expect, after_plan=change))
    assert all(r == results[0] for r in results), results
    assert len(results[0][1]) >= 5, results[0][1]
    print("ok  changed files: same bytes and warnings:", "; ".join(results[0][1]))


def main() -> int:
    trees = [Path(a) for a in sys.argv[1:]]
    with tempfile.TemporaryDirectory(prefix="ecarchive-check-") as tmp:
        root = Path(tmp)
        made = root / "sizes"
        made.mkdir()
        make_tree(made)
        if not trees:
            trees = [made]
            bench = Path(os.environ.get("ECARCHIVE_BENCH_DIR", "/var/tmp/ecarchive-bench"))
            trees += [p for p in sorted(bench.glob("*-quick")) if p.is_dir()]
        for tree in trees:
            check_same(tree)
        check_abandoned(made)
        check_changes(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
