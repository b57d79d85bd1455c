"""Passphrase → key-encryption key and signature, and the two FNEK conventions.

Mirrors ecryptfs-utils src/libecryptfs/main.c: generate_passphrase_sig / generate_payload, and
src/utils/ecryptfs_add_passphrase.c: main (for the separate filename key).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from .constants import (
    DEFAULT_SALT,
    FEKEK_SIZE,
    FNEK_SALT,
    HASH_ITERATIONS,
    MAX_PASSPHRASE_BYTES,
    SALT_SIZE,
    SIG_SIZE,
)


class PassphraseError(ValueError):
    """The passphrase is not one the eCryptfs tools accept."""


def check_passphrase(passphrase: bytes) -> None:
    """Reject what ecryptfs-add-passphrase / mount.ecryptfs refuse (1..64 bytes, no NUL/newline)."""
    if not 1 <= len(passphrase) <= MAX_PASSPHRASE_BYTES:
        raise PassphraseError(
            f"passphrase must be 1 to {MAX_PASSPHRASE_BYTES} bytes, got {len(passphrase)}"
        )
    if b"\0" in passphrase or b"\n" in passphrase:
        raise PassphraseError("passphrase must not contain NUL or newline characters")


@dataclass(frozen=True, slots=True)
class KeyringKey:
    """What `ecryptfs-add-passphrase` puts in the kernel keyring: 64-byte key, named by its sig."""

    fekek: bytes
    sig: bytes  # SIG_SIZE binary bytes

    @property
    def sig_hex(self) -> str:
        return self.sig.hex()

    def prefix(self, key_bytes: int) -> bytes:
        """The kernel uses only the first key_bytes of the keyring key (write_tag_3_packet)."""
        return self.fekek[:key_bytes]


def derive_key(passphrase: bytes, salt: bytes = DEFAULT_SALT) -> KeyringKey:
    """generate_passphrase_sig: SHA-512 of salt‖passphrase, iterated 65536 times in total."""
    if len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes")
    d = hashlib.sha512(salt + passphrase).digest()
    sha512 = hashlib.sha512
    for _ in range(HASH_ITERATIONS - 1):
        d = sha512(d).digest()
    assert len(d) == FEKEK_SIZE
    return KeyringKey(fekek=d, sig=hashlib.sha512(d).digest()[:SIG_SIZE])


class FnekMode(enum.Enum):
    """How the filename key relates to the file key."""

    SEPARATE = "separate"  # ecryptfs-add-passphrase --fnek, ecryptfs-setup-private, pam_ecryptfs
    SAME = "same"  # mount.ecryptfs default: ecryptfs_fnek_sig = the mount key's own sig
    OFF = "off"  # no filename encryption


@dataclass(frozen=True, slots=True)
class KeySet:
    """The keys one archive is written or read with."""

    file_key: KeyringKey
    fnek: KeyringKey | None  # None when names are stored in clear
    mode: FnekMode


def derive_keyset(passphrase: bytes, mode: FnekMode, salt: bytes = DEFAULT_SALT) -> KeySet:
    file_key = derive_key(passphrase, salt)
    if mode is FnekMode.SEPARATE:
        fnek: KeyringKey | None = derive_key(passphrase, FNEK_SALT)
    elif mode is FnekMode.SAME:
        fnek = file_key
    else:
        fnek = None
    return KeySet(file_key=file_key, fnek=fnek, mode=mode)
