"""~/.ecryptfs/wrapped-passphrase files, versions 1 and 2.

Mirrors ecryptfs-utils v111 src/libecryptfs/key_management.c: ecryptfs_wrap_passphrase,
ecryptfs_unwrap_passphrase, read_wrapped_passphrase_file_version, read_v1_wrapped_passphrase_file,
read_v2_wrapped_passphrase_file, write_v2_wrapped_passphrase_file.
"""

from __future__ import annotations

import string

from .constants import DEFAULT_SALT, MAX_PASSPHRASE_BYTES, SALT_SIZE, SIG_SIZE
from .ecb import ecb
from .keys import check_passphrase, derive_key

WRAP_KEY_BYTES = 16  # ECRYPTFS_AES_KEY_BYTES: wrapping is always AES-128-ECB
VERSION_MARKER = b":"
VERSION_2 = 2
SIG_HEX_SIZE = 2 * SIG_SIZE
_V2_HEADER = 1 + 1 + SALT_SIZE  # ':' + version + salt
_HEX = set(string.hexdigits.encode())


class WrappedPassphraseError(ValueError):
    """The wrapped-passphrase file is malformed or the login passphrase is wrong."""


def unwrap_passphrase(blob: bytes, login_passphrase: bytes, v1_salt: bytes = DEFAULT_SALT) -> bytes:
    """ecryptfs_unwrap_passphrase: return the mount passphrase inside `blob`."""
    if blob[:1] == VERSION_MARKER:
        if len(blob) < _V2_HEADER or blob[1] != VERSION_2:
            raise WrappedPassphraseError("unsupported wrapped-passphrase file version")
        salt = blob[2:_V2_HEADER]
        rest = blob[_V2_HEADER:]
    else:
        salt = v1_salt
        rest = blob
    sig_hex, ciphertext = rest[:SIG_HEX_SIZE], rest[SIG_HEX_SIZE:]
    if len(sig_hex) != SIG_HEX_SIZE or not set(sig_hex) <= _HEX:
        raise WrappedPassphraseError("not an ecryptfs wrapped-passphrase file")
    if not ciphertext or len(ciphertext) % 16 or len(ciphertext) > MAX_PASSPHRASE_BYTES:
        raise WrappedPassphraseError("wrapped-passphrase file has a bad length")
    key = derive_key(login_passphrase, salt)
    if key.sig_hex.encode() != sig_hex.lower():
        raise WrappedPassphraseError("wrong login passphrase for the wrapped-passphrase file")
    plain = ecb(key.prefix(WRAP_KEY_BYTES), ciphertext, decrypt=True)
    mount_passphrase = plain.split(b"\0", 1)[0]
    check_passphrase(mount_passphrase)
    return mount_passphrase


def wrap_passphrase_v2(mount_passphrase: bytes, login_passphrase: bytes, salt: bytes) -> bytes:
    """write_v2_wrapped_passphrase_file: the format ecryptfs-utils ≥ 106 writes."""
    check_passphrase(mount_passphrase)
    if len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes")
    key = derive_key(login_passphrase, salt)
    padded = mount_passphrase + b"\0" * (-len(mount_passphrase) % 16)
    ciphertext = ecb(key.prefix(WRAP_KEY_BYTES), padded, decrypt=False)
    return VERSION_MARKER + bytes([VERSION_2]) + salt + key.sig_hex.encode() + ciphertext
