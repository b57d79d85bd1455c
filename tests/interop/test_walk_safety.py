"""The walk cannot be tricked (issue 10, safety 1 and 2): what changes between the plan and the
read is met through directory descriptors, never by following a path again.

Each test changes SOURCE after the plan the way an attacker with write access to part of it
could, then writes the archive, restores it and looks at what got in.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import xattr

from ecarchive.create import Format
from ecarchive.create import write_volume as _write_volume
from ecarchive.ecryptfs.keys import FnekMode, derive_keyset
from ecarchive.ecryptfs.names import encrypt_name
from ecarchive.errors import Reporter
from ecarchive.fsio import open_root
from ecarchive.keysource import FreshKeys, KeySource
from ecarchive.keystore import XATTR_NAME, StableKeys
from ecarchive.manifest import Facts, ManifestBuilder, append_manifest
from ecarchive.plan import PlanOptions, build_plan
from ecarchive.progress import Progress
from ecarchive.read.restore import restore_archive
from ecarchive.reader import EncryptingReader
from ecarchive.sinks.base import ArchiveFormat
from tests.cli.conftest import PASSPHRASE

KEYS = derive_keyset(PASSPHRASE.encode(), FnekMode.SEPARATE)
SECRET = b"root-only secret outside SOURCE\n"
TIMEOUT_S = 20


def archive_after(
    src: Path,
    out: Path,
    change: Callable[[], None],
    fmt: ArchiveFormat,
    jobs: int = 2,
    stable: bool = False,
) -> Reporter:
    """Plan `src`, run `change`, then write the archive to `out` as `create` does."""
    reporter = Reporter(stream=io.StringIO())
    fnek = KEYS.fnek
    assert fnek is not None
    root_fd = open_root(os.fsencode(src))
    try:
        plan = build_plan(
            PlanOptions(
                source=os.fsencode(src),
                names_encrypted=True,
                encrypt=lambda n: encrypt_name(n, fnek, 16),
                root_fd=root_fd,
            ),
            reporter,
        )
        assert not plan.problems, plan.problems
        facts = Facts("aes", 16, KEYS.file_key.sig_hex, fnek.sig_hex, plan.lower_root, 0)
        entries = append_manifest(plan.entries, facts)
        change()
        keys: KeySource = (
            StableKeys(KEYS.file_key, 16, reporter, root_fd=root_fd)
            if stable
            else FreshKeys(KEYS.file_key, 16)
        )
        reader = EncryptingReader(
            keys,
            filenames_encrypted=True,
            reporter=reporter,
            root_fd=root_fd,
            jobs=jobs,
        )
        try:
            with open(out, "wb") as f:
                _write_volume(
                    entries,
                    Format(fmt, "TEST", 0),
                    reader,
                    f.fileno(),
                    Progress(None, enabled=False),
                    reporter,
                    ManifestBuilder(entries, facts, KEYS.file_key),
                )
        finally:
            reader.close()
            if isinstance(keys, StableKeys):
                keys.close()
    finally:
        os.close(root_fd)
    return reporter


def restored(archive: Path, dest: Path) -> dict[str, bytes]:
    restore_archive(str(archive), str(dest), PASSPHRASE.encode(), Reporter(stream=io.StringIO()))
    return {
        str(p.relative_to(dest / "Private")): p.read_bytes()
        for p in dest.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


@pytest.mark.parametrize("fmt", list(ArchiveFormat))
@pytest.mark.parametrize("size", [100, 3 << 20])  # a batched small file, a chunked large one
def test_directory_swapped_for_symlink_after_plan(
    tmp_path: Path, fmt: ArchiveFormat, size: int
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shadow").write_bytes(SECRET * (size // len(SECRET) + 1))
    os.chmod(outside / "shadow", 0o600)
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "shadow").write_bytes(b"x" * size)  # same size: the plan matches the secret
    os.truncate(outside / "shadow", size)
    (src / "kept").write_bytes(b"kept\n")

    def swap() -> None:
        (src / "etc" / "shadow").unlink()
        (src / "etc").rmdir()
        (src / "etc").symlink_to(outside)

    out = tmp_path / f"a.{fmt.value}"
    reporter = archive_after(src, out, swap, fmt)
    files = restored(out, tmp_path / "dest")
    assert files["kept"] == b"kept\n"
    assert all(SECRET[:20] not in data for data in files.values()), "read outside SOURCE"
    assert SECRET[:20] not in out.read_bytes()  # (encrypted anyway; this is the plaintext check)
    assert reporter.exit_code == 1
    assert any(
        "etc/shadow: a directory on its path is no longer a directory" in w
        for w in reporter.warnings
    ), reporter.warnings


@pytest.mark.parametrize("fmt", list(ArchiveFormat))
@pytest.mark.parametrize("size", [100, 3 << 20])
def test_file_swapped_for_fifo_after_plan(tmp_path: Path, fmt: ArchiveFormat, size: int) -> None:
    src = tmp_path / "src"
    src.mkdir()
    fifo = src / "pipe-me"
    fifo.write_bytes(b"p" * size)
    (src / "kept").write_bytes(b"kept\n")

    def swap() -> None:
        fifo.unlink()
        os.mkfifo(fifo)

    out = tmp_path / f"a.{fmt.value}"
    result: list[Reporter] = []
    worker = threading.Thread(target=lambda: result.append(archive_after(src, out, swap, fmt)))
    worker.start()
    worker.join(TIMEOUT_S)
    if worker.is_alive():  # blocked opening the FIFO: free it, then fail
        with open(fifo, "wb"):
            pass
        worker.join()
        pytest.fail("create blocked on a FIFO that replaced a planned file")
    (reporter,) = result
    assert any("pipe-me: no longer a regular file; skipped" in w for w in reporter.warnings)
    files = restored(out, tmp_path / "dest")
    assert files["kept"] == b"kept\n"


@pytest.mark.parametrize("fmt", list(ArchiveFormat))
def test_file_swapped_for_symlink_after_plan(tmp_path: Path, fmt: ArchiveFormat) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(SECRET)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"y" * len(SECRET))

    def swap() -> None:
        (src / "f").unlink()
        (src / "f").symlink_to(outside)

    out = tmp_path / f"a.{fmt.value}"
    reporter = archive_after(src, out, swap, fmt)
    assert any("f: no longer a regular file; skipped" in w for w in reporter.warnings)
    assert all(SECRET not in data for data in restored(out, tmp_path / "dest").values())


def test_stable_keys_write_no_xattr_outside_source(tmp_path: Path) -> None:
    """--stable-keys stores each file's key in an xattr: reached through the same descriptors,
    a directory swapped for a symlink cannot aim that write at a file outside SOURCE."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(SECRET)
    try:
        xattr.setxattr(str(outside / "victim"), "user.probe", b"1")
    except OSError:
        pytest.skip("no user xattrs on this file system")
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "victim").write_bytes(b"z" * len(SECRET))

    def swap() -> None:
        (src / "d" / "victim").unlink()
        (src / "d").rmdir()
        (src / "d").symlink_to(outside)

    reporter = archive_after(src, tmp_path / "a.tar", swap, ArchiveFormat.TAR, stable=True)
    assert XATTR_NAME not in xattr.listxattr(str(outside / "victim"))
    assert any("d/victim: a directory on its path" in w for w in reporter.warnings)
