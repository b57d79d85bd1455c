"""The host-side helpers the kernel checks rely on (no VM needed): if RESTORE.txt parsing or
the manifest reader were wrong, the kernel checks would test the wrong commands or data."""

from __future__ import annotations

import shlex

import pytest

from tests.kernel.oracle import FIXTURES, key_lines, load_manifest, mount_lines

pytestmark = pytest.mark.kernel

OPTIONS = (
    "ecryptfs_sig=3ab38bb4917daae6,ecryptfs_cipher=aes,ecryptfs_key_bytes=16,"
    "ecryptfs_unlink_sigs,ecryptfs_fnek_sig=dfe2081a9780d1ee"
)
RESTORE = f"""\
filename encryption:  separate filename key, as ecryptfs-add-passphrase --fnek makes it

  tar -xpf ARCHIVE.tar --numeric-owner
  mkdir -p plain
  printf '%s' "$PASSPHRASE" | ecryptfs-add-passphrase --fnek -
  mount -i -t ecryptfs "$PWD/Private" "$PWD/plain" -o {OPTIONS}
  mount -o ro,loop IMAGE.iso disc      # not an eCryptfs mount
"""


def test_mount_line_keeps_everything_but_the_paths() -> None:
    (line,) = mount_lines(RESTORE, '"$SCRATCH/x/Private"', '"$TMPD/plain"')
    assert line == f'mount -i -t ecryptfs "$SCRATCH/x/Private" "$TMPD/plain" -o {OPTIONS}'


def test_mount_line_without_helper_flag() -> None:
    text = f"mount -t ecryptfs /path/to/Private /path/to/plain -o {OPTIONS}  # comment\n"
    (line,) = mount_lines(text, "L", "U")
    assert shlex.split(line) == ["mount", "-t", "ecryptfs", "L", "U", "-o", OPTIONS]


def test_mount_line_with_extra_operand_is_rejected() -> None:
    with pytest.raises(ValueError, match="LOWER and UPPER"):
        mount_lines("mount -t ecryptfs a b c -o x\n", "L", "U")


def test_key_lines_skip_prose() -> None:
    assert key_lines(RESTORE) == ["printf '%s' \"$PASSPHRASE\" | ecryptfs-add-passphrase --fnek -"]


def test_manifest_reader() -> None:
    manifest = load_manifest(FIXTURES / "plaintext.manifest")
    assert manifest["hardlink-b.txt"].hlgroup == "hardlink-a.txt"
    assert manifest["symlink-dangling"].target == "does-not-exist"
    assert manifest["empty"].sha256 == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert {r.type for r in manifest.values()} == {"f", "d", "l"}
    assert manifest["nested"].mode == 0o755
