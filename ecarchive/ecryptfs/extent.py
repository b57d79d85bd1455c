"""Extent encryption: root IV, per-extent IV and AES-CBC over 4096-byte extents.

Mirrors fs/ecryptfs/crypto.c: ecryptfs_compute_root_iv, ecryptfs_derive_iv, crypt_extent.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

EXTENT_SIZE = 4096
IV_SIZE = 16
# ecryptfs_derive_iv formats the extent number with "%lld" into a 16-byte zeroed field.
_IV_INDEX_FIELD = 16

Buffer = bytes | bytearray | memoryview
WritableBuffer = bytearray | memoryview


def root_iv(fek: bytes) -> bytes:
    """Root IV of a file: MD5(FEK) (ecryptfs_compute_root_iv)."""
    return hashlib.md5(fek).digest()


def _index_field(index: int) -> bytes:
    if index < 0:
        raise ValueError(f"extent index must be >= 0, got {index}")
    digits = str(index).encode("ascii")
    if len(digits) >= _IV_INDEX_FIELD:
        raise ValueError(f"extent index {index} does not fit eCryptfs's 16-byte IV field")
    return digits.ljust(_IV_INDEX_FIELD, b"\0")


def extent_iv(root_iv: bytes, index: int) -> bytes:
    """IV of data extent `index`: MD5(root_iv || decimal(index) NUL-padded to 16 bytes).

    Mirrors ecryptfs_derive_iv; extent 0 is the first extent after the header.
    """
    return hashlib.md5(root_iv + _index_field(index)).digest()


def _check_lengths(src: Buffer, dst: WritableBuffer) -> int:
    n = memoryview(src).nbytes
    if n != memoryview(dst).nbytes:
        raise ValueError(f"src ({n} bytes) and dst ({memoryview(dst).nbytes} bytes) differ in size")
    if n % EXTENT_SIZE:
        raise ValueError(f"length {n} is not a multiple of the {EXTENT_SIZE}-byte extent size")
    return n // EXTENT_SIZE


def _crypt_per_extent(
    fek: bytes, root: bytes, first_index: int, src: Buffer, dst: WritableBuffer, encrypt: bool
) -> None:
    count = _check_lengths(src, dst)
    s = memoryview(src).cast("B")
    d = memoryview(dst).cast("B")
    for k in range(count):
        cipher = Cipher(algorithms.AES(fek), modes.CBC(extent_iv(root, first_index + k)))
        ctx = cipher.encryptor() if encrypt else cipher.decryptor()
        lo = k * EXTENT_SIZE
        d[lo : lo + EXTENT_SIZE] = ctx.update(s[lo : lo + EXTENT_SIZE])
        ctx.finalize()


def encrypt_extents(
    fek: bytes, root_iv: bytes, first_index: int, src: Buffer, dst: WritableBuffer
) -> None:
    """Encrypt whole extents src into dst; extent i of src is file extent first_index + i."""
    _crypt_per_extent(fek, root_iv, first_index, src, dst, encrypt=True)


def decrypt_extents(
    fek: bytes, root_iv: bytes, first_index: int, src: Buffer, dst: WritableBuffer
) -> None:
    """Decrypt whole extents src into dst; extent i of src is file extent first_index + i."""
    _crypt_per_extent(fek, root_iv, first_index, src, dst, encrypt=False)
