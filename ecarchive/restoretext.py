"""RESTORE.txt: what an archive is and the exact commands that bring the plaintext back."""

from __future__ import annotations

from dataclasses import dataclass

from . import __version__
from .ecryptfs.keys import FnekMode, KeySet

RESTORE_NAME = b"RESTORE.txt"
PACKAGE = "ecarchive"
HOME_PAGE = "https://pypi.org/project/ecarchive/"
# Every volume's text has the same length, so the split measured with volume 1's text holds
# for all: the volume line is padded to the width of the longest one.
_MAX_VOLUMES = 99_999


@dataclass(frozen=True, slots=True)
class MountSpec:
    keys: KeySet
    key_bytes: int
    cipher: str = "aes"

    def options(self, *, read_only: bool = False) -> str:
        opts = [
            f"ecryptfs_sig={self.keys.file_key.sig_hex}",
            f"ecryptfs_cipher={self.cipher}",
            f"ecryptfs_key_bytes={self.key_bytes}",
            "ecryptfs_unlink_sigs",
        ]
        if self.keys.fnek is not None:
            opts.append(f"ecryptfs_fnek_sig={self.keys.fnek.sig_hex}")
        if read_only:
            opts.insert(0, "ro")
        return ",".join(opts)

    def add_passphrase_command(self) -> str:
        fnek = " --fnek" if self.keys.mode is FnekMode.SEPARATE else ""
        return f"printf '%s' \"$PASSPHRASE\" | ecryptfs-add-passphrase{fnek} -"

    def mount_command(self, lower: str, plain: str, *, read_only: bool = False) -> str:
        # -i: mount.ecryptfs would ask questions; the kernel takes every option directly
        return f"mount -i -t ecryptfs {lower} {plain} -o {self.options(read_only=read_only)}"

    def describe_fnek(self) -> str:
        return {
            FnekMode.SEPARATE: "separate filename key, as ecryptfs-add-passphrase --fnek and "
            "ecryptfs-setup-private make it",
            FnekMode.SAME: "the file key also encrypts names, as mount.ecryptfs defaults to",
            FnekMode.OFF: "names and symlink targets are stored in clear",
        }[self.keys.mode]


def _volume_line(volume: int, volumes: int) -> str:
    def line(n: int, m: int) -> str:
        return f"This is volume {n} of {m}; each volume restores on its own, all into one place."

    if not 1 <= volume <= volumes <= _MAX_VOLUMES:
        raise ValueError(f"volume {volume} of {volumes}")
    return line(volume, volumes).ljust(len(line(_MAX_VOLUMES, _MAX_VOLUMES)))


def restore_text(
    spec: MountSpec, lower_name: str, *, iso: bool = False, volume: int = 1, volumes: int = 1
) -> bytes:
    """The text for volume `volume` of `volumes`; its length does not depend on the two."""
    fnek_sig = spec.keys.fnek.sig_hex if spec.keys.fnek else "(none)"
    if iso:
        fetch = (
            "  mkdir -p disc plain\n"
            "  mount -o ro,loop IMAGE.iso disc      # or: mount -o ro /dev/sr0 disc\n"
        )
        lower = f'"$PWD/disc/{lower_name}"'
        mount = spec.mount_command(lower, '"$PWD/plain"', read_only=True)
    else:
        fetch = (
            "  tar -xpf ARCHIVE.tar --numeric-owner   # or: bsdtar -xpf ARCHIVE.tar\n"
            "  mkdir -p plain\n"
        )
        lower = f'"$PWD/{lower_name}"'
        mount = spec.mount_command(lower, '"$PWD/plain"')
    text = f"""\
This archive was written by ecarchive {__version__}.
{_volume_line(volume, volumes)}

{lower_name}/ is an eCryptfs lower directory: every file in it is an eCryptfs-encrypted file
and every name is encrypted. It opens with the Linux kernel's eCryptfs and the passphrase, or in
userspace with ecarchive.

cipher:                         {spec.cipher}
key bytes:                      {spec.key_bytes}
file key signature:             {spec.keys.file_key.sig_hex}   (ecryptfs_sig)
filename key signature:         {fnek_sig}   (ecryptfs_fnek_sig)
filename encryption:            {spec.describe_fnek()}
passphrase salt:                0011223344556677 (the eCryptfs default; no ~/.ecryptfsrc salt)

Restore with the Linux kernel (as root; ecryptfs-utils and keyutils installed):

{fetch}  PASSPHRASE='...'   # or: read -rs PASSPHRASE
  {spec.add_passphrase_command()}
  {mount}
  cp -a plain/. /where/you/want/it/ && umount plain

A wrong passphrase is not refused: the mount succeeds and shows an empty tree (names that do
not decrypt are hidden) or, with names in clear, files that fail with "Input/output error".
Check the key: ecryptfs-add-passphrase prints the signature it added, and `keyctl show @u`
lists the keys in your keyring; the signature{"s" if spec.keys.fnek else ""} above must be among them, else the
passphrase was typed wrong (umount plain; keyctl clear @u; add it again).

Restore without the kernel:

  ecarchive restore {"IMAGE.iso" if iso else "ARCHIVE.tar"} /where/you/want/it

ecarchive is free software (GPL-2.0-or-later), the Python package "{PACKAGE}":

  pip install '{PACKAGE}=={__version__}'   # or later; the package index: {HOME_PAGE}

Nothing above needs ecarchive itself: the format is plain eCryptfs, which the Linux kernel has
read since 2.6.29 (encrypted names), with ecryptfs-utils and keyutils from any distribution.
"""
    return text.encode()
