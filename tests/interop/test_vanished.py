"""A file that vanishes between the pre-scan and its turn: tar leaves it out, ISO keeps a
valid (zero-filled) eCryptfs file in the extent its layout already reserved. Both manifests
mark it ABSENT, and restore does not bring the zeros back."""

from __future__ import annotations

import io
import os
from pathlib import Path

import libarchive
import pytest

from ecarchive.create import Format, write_volume
from ecarchive.ecryptfs.keys import FnekMode, derive_keyset
from ecarchive.ecryptfs.names import encrypt_name
from ecarchive.errors import Reporter
from ecarchive.fsio import open_root
from ecarchive.keysource import FreshKeys
from ecarchive.manifest import MANIFEST_NAME, Facts, ManifestBuilder, append_manifest, parse
from ecarchive.plan import PlanOptions, build_plan
from ecarchive.progress import Progress
from ecarchive.read.restore import restore_archive
from ecarchive.reader import EncryptingReader
from ecarchive.sinks.base import ArchiveFormat
from tests.cli.conftest import PASSPHRASE, run_cli

KEYS = derive_keyset(PASSPHRASE.encode(), FnekMode.SEPARATE)


def _member(archive: Path, name: bytes) -> bytes:
    """One member's data, read by libarchive (a tar or an ISO image)."""
    with libarchive.file_reader(str(archive)) as members:
        for entry in members:
            if os.fsencode(entry.pathname) == name:
                return b"".join(entry.get_blocks())
    raise AssertionError(f"{name!r} not in {archive}")


@pytest.mark.parametrize("fmt_name", ["tar", "iso"])
def test_vanished_file(tmp_path: Path, fmt_name: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "gone.bin").write_bytes(os.urandom(10_000))
    (src / "kept.bin").write_bytes(b"kept\n")
    reporter = Reporter(stream=io.StringIO())
    assert KEYS.fnek is not None
    fnek = KEYS.fnek
    plan = build_plan(
        PlanOptions(
            source=os.fsencode(src),
            names_encrypted=True,
            encrypt=lambda n: encrypt_name(n, fnek, 16),
            top_files=((b"RESTORE.txt", b"restore me\n"),),
        ),
        reporter,
    )
    facts = Facts(
        cipher="aes",
        key_bytes=16,
        file_sig=KEYS.file_key.sig_hex,
        fnek_sig=fnek.sig_hex,
        lower_root=plan.lower_root,
        created_ns=0,
    )
    entries = append_manifest(plan.entries, facts)
    fmt = Format(ArchiveFormat(fmt_name), "TEST", 0)
    expected_size = fmt.size(entries)
    (src / "gone.bin").unlink()
    root_fd = open_root(os.fsencode(src))
    reader = EncryptingReader(
        FreshKeys(KEYS.file_key, 16), filenames_encrypted=True, reporter=reporter, root_fd=root_fd
    )
    out = tmp_path / f"a.{fmt_name}"
    with open(out, "wb") as f:
        write_volume(
            entries,
            fmt,
            reader,
            f.fileno(),
            Progress(None, enabled=False),
            reporter,
            ManifestBuilder(entries, facts, KEYS.file_key),
        )
    reader.close()
    os.close(root_fd)
    assert reporter.exit_code == 1
    assert any("gone.bin: file removed before we read it" in w for w in reporter.warnings)
    if fmt_name == "iso":
        assert out.stat().st_size == expected_size
    gone_lower = encrypt_name(b"gone.bin", fnek, 16)
    manifest = parse(_member(out, MANIFEST_NAME))
    assert [line.absent for line in manifest.lines if line.path.endswith(gone_lower)] == [True]
    dest = tmp_path / "out"
    restored = Reporter(stream=io.StringIO())
    restore_archive(str(out), str(dest), PASSPHRASE.encode(), restored)
    assert (dest / "kept.bin").read_bytes() == b"kept\n"
    assert not (dest / "gone.bin").exists()  # an ISO's zero-filled placeholder is not restored
    if fmt_name == "iso":
        assert restored.exit_code == 1
        assert [w for w in restored.warnings if "gone.bin: vanished" in w]
    r = run_cli(["verify", str(out)])
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
