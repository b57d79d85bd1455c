"""Byte-for-byte check of the fast paths of `EncryptingReader` against the plain one.

    python tests/support/check_pipeline.py [TREE ...]   (tests/interop/test_pipeline.py runs it)

With deterministic key material (a FreshKeys whose FEK is derived from the member path), the
tar written (a) in this process only, (b) with the helper process for large files and
(c) with `expect()` (small files read ahead in batches) must be the same bytes, with the same
warnings. Also checked: chunks shared between the helper and this process in every split,
a reader abandoned mid-file and reused, and files that vanish, shrink, grow or turn into a
directory after the plan (GNU tar's rules). Exit status 0 when everything matches.

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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ecarchive import pipeline
from ecarchive.ecryptfs.keys import FnekMode, derive_keyset
from ecarchive.ecryptfs.names import encrypt_name
from ecarchive.errors import Reporter
from ecarchive.keysource import FreshKeys, KeyMaterial
from ecarchive.model import Entry, Kind
from ecarchive.plan import PlanOptions, build_plan
from ecarchive.reader import EncryptingReader
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


def archive(
    tree: Path, *, parallel: bool, expect: bool, after_plan: Callable[[], None] | None = None
) -> tuple[str, list[str]]:
    reporter = Reporter(stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
    plan = build_plan(
        PlanOptions(
            source=os.fsencode(tree),
            encrypt=lambda n: encrypt_name(n, KEYS.fnek or KEYS.file_key, KEY_BYTES),
            names_encrypted=True,
        ),
        reporter,
    )
    reader = EncryptingReader(
        PathKeys(KEYS.file_key, KEY_BYTES),
        filenames_encrypted=True,
        reporter=reporter,
        parallel=parallel,
    )
    if expect:
        reader.expect(plan.entries)
    if after_plan:
        after_plan()
    digest = hashlib.sha256()
    r, w = os.pipe()

    def drain() -> None:
        while block := os.read(r, MIB):
            digest.update(block)

    reading = threading.Thread(target=drain)
    reading.start()
    try:
        write_tar(plan.entries, reader.open, w)
    finally:
        os.close(w)
        reading.join()
        os.close(r)
        reader.close()
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
    serial = archive(tree, parallel=False, expect=False)
    helper = archive(tree, parallel=True, expect=False)
    ahead = archive(tree, parallel=True, expect=True)
    assert serial == helper == ahead, f"{tree}: outputs differ"
    print(f"ok  {tree}: serial, helper and read-ahead tars identical ({serial[0][:16]})")


def check_splits(tree: Path) -> None:
    """Every chunk at the helper, or every chunk but the first two done here."""
    reference = archive(tree, parallel=False, expect=False)
    original = pipeline.Coprocessor.ready
    try:
        for always in (True, False):
            pipeline.Coprocessor.ready = lambda self, ticket, a=always: a  # type: ignore[method-assign]
            assert archive(tree, parallel=True, expect=False) == reference, always
    finally:
        pipeline.Coprocessor.ready = original  # type: ignore[method-assign]
    print("ok  large files: helper-only and mostly-here splits identical")


def check_abandoned(tree: Path) -> None:
    big = max((p for p in tree.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
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
        rel=b"big",
    )
    reader = EncryptingReader(
        PathKeys(KEYS.file_key, KEY_BYTES), filenames_encrypted=True, reporter=Reporter()
    )
    chunks = reader.open(entry)
    assert chunks is not None
    next(chunks)
    next(chunks)
    chunks.close()  # the sink failed midway
    again = reader.open(entry)
    assert again is not None
    whole = b"".join(bytes(c) for c in again)
    serial = EncryptingReader(
        PathKeys(KEYS.file_key, KEY_BYTES),
        filenames_encrypted=True,
        reporter=Reporter(),
        parallel=False,
    ).open(entry)
    assert serial is not None
    assert whole == b"".join(bytes(c) for c in serial)
    reader.close()
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
    for parallel, expect in ((False, False), (True, False), (True, True)):
        reset()
        results.append(archive(tree, parallel=parallel, expect=expect, after_plan=change))
    assert results[0] == results[1] == results[2], results
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
        check_splits(made)
        check_abandoned(made)
        check_changes(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
