"""Encrypted file names and symlink targets (tag 70 packets).

Mirrors fs/ecryptfs/keystore.c: ecryptfs_write_tag_70_packet, ecryptfs_parse_tag_70_packet and
fs/ecryptfs/crypto.c: ecryptfs_encrypt_and_encode_filename, ecryptfs_encode_for_filename,
ecryptfs_decode_from_filename, ecryptfs_decode_and_decrypt_filename.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from .constants import (
    AES_BLOCK,
    AES_CODES,
    FILENAME_ALPHABET,
    FILENAME_MIN_RANDOM_PREPEND_BYTES,
    FNEK_PREFIX,
    MAX_NAME_BYTES,
    MAX_SYMLINK_TARGET_BYTES,
    SIG_SIZE,
    TAG_70_PACKET,
)
from .ecb import ecb
from .keys import KeyringKey
from .packets import PacketError, decode_length, encode_length

_ZERO_PREFIX_SUBSTITUTE = 0x42  # write_tag_70_packet never puts a 0x00 into the prefix
# The eCryptfs filename encoding is base64's bit layout over another alphabet, so the C base64
# codec plus a byte translation does the work of a per-character Python loop.
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_TO_FILENAME = bytes.maketrans(_B64_ALPHABET, FILENAME_ALPHABET)
# decode_from_filename counts characters outside the alphabet as 0, which is base64's "A".
_FROM_FILENAME = bytes(
    _B64_ALPHABET[FILENAME_ALPHABET.index(c)] if c in FILENAME_ALPHABET else _B64_ALPHABET[0]
    for c in range(256)
)
_B64_GROUP = 4
_BITS_PER_CHAR = 6
_BITS_PER_BYTE = 8


class NameDecodeError(ValueError):
    """A lower name is not an encrypted eCryptfs name this key can decrypt."""


def _pad_prefix_len(name_len: int, block: int = AES_BLOCK) -> int:
    """Bytes before the name: 16 pseudo-random + 1 separator, lengthened to a block multiple."""
    r = FILENAME_MIN_RANDOM_PREPEND_BYTES + 1
    rem = (r + name_len) % block
    return r + (block - rem if rem else 0)


@lru_cache(maxsize=64)
def _prefix(fnek: bytes, count: int) -> bytes:
    """The deterministic 'random' bytes of write_tag_70_packet: MD5 chain of the whole FNEK."""
    out = bytearray()
    h = hashlib.md5(fnek).digest()
    for j in range(count):
        b = h[j % 16]
        if j % 16 == 15:
            h = hashlib.md5(h).digest()
        out.append(_ZERO_PREFIX_SUBSTITUTE if b == 0 else b)
    return bytes(out)


def encode_for_filename(data: bytes) -> bytes:
    """ecryptfs_encode_for_filename: 3 bytes → 4 characters of the portable alphabet."""
    padded = data + b"\0" * (-len(data) % 3)
    return base64.b64encode(padded).translate(_TO_FILENAME)


def decode_from_filename(text: bytes) -> bytes:
    """ecryptfs_decode_from_filename: unknown characters count as 0, leftover bits dropped."""
    std = text.translate(_FROM_FILENAME)
    std += _B64_ALPHABET[:1] * (-len(std) % _B64_GROUP)
    return base64.b64decode(std)[: len(text) * _BITS_PER_CHAR // _BITS_PER_BYTE]


def encrypt_name(name: bytes, fnek: KeyringKey, key_bytes: int) -> bytes:
    """ecryptfs_encrypt_and_encode_filename: plaintext name or symlink target → lower form."""
    if not name:
        raise ValueError("empty name")
    r = _pad_prefix_len(len(name))
    plaintext = _prefix(fnek.fekek, r - 1) + b"\0" + name
    ciphertext = ecb(fnek.prefix(key_bytes), plaintext, decrypt=False)
    body = fnek.sig + bytes([AES_CODES[key_bytes]]) + ciphertext
    packet = bytes([TAG_70_PACKET]) + encode_length(len(body)) + body
    return FNEK_PREFIX + encode_for_filename(packet)


def is_encrypted_name(lower: bytes) -> bool:
    return len(lower) > len(FNEK_PREFIX) and lower.startswith(FNEK_PREFIX)


def _tag70_body(lower: bytes) -> bytes:
    """ecryptfs_parse_tag_70_packet up to the body: FNEK sig, cipher code, ciphertext."""
    if not is_encrypted_name(lower):
        raise NameDecodeError("name lacks the ECRYPTFS_FNEK_ENCRYPTED. prefix")
    packet = decode_from_filename(lower[len(FNEK_PREFIX) :])
    if not packet or packet[0] != TAG_70_PACKET:
        raise NameDecodeError("not a tag 70 packet")
    try:
        length, used = decode_length(packet, 1)
    except PacketError as e:
        raise NameDecodeError(str(e)) from e
    body = packet[1 + used : 1 + used + length]
    if len(body) != length or length <= SIG_SIZE + 1:
        raise NameDecodeError("truncated tag 70 packet")
    return body


def name_sig(lower: bytes) -> bytes:
    """The FNEK sig a lower name was encrypted with (to pick the key before decrypting)."""
    return _tag70_body(lower)[:SIG_SIZE]


def decrypt_name(lower: bytes, fnek: KeyringKey, key_bytes: int) -> bytes:
    """ecryptfs_decode_and_decrypt_filename + ecryptfs_parse_tag_70_packet."""
    body = _tag70_body(lower)
    if body[:SIG_SIZE] != fnek.sig:
        raise NameDecodeError(
            f"name was encrypted with key {body[:SIG_SIZE].hex()}, not {fnek.sig_hex}"
        )
    ciphertext = body[SIG_SIZE + 1 :]
    if len(ciphertext) % AES_BLOCK:
        raise NameDecodeError("tag 70 ciphertext is not a whole number of blocks")
    plaintext = ecb(fnek.prefix(key_bytes), ciphertext, decrypt=True)
    sep = plaintext.find(b"\0")
    if sep < 0 or sep == len(plaintext) - 1:
        raise NameDecodeError("decrypted name is empty or has no separator")
    return plaintext[sep + 1 :]


def encrypted_name_len(name_len: int) -> int:
    """Length of the lower name for a plaintext name of name_len bytes (ecryptfs_set_f_namelen)."""
    body = SIG_SIZE + 1 + _pad_prefix_len(name_len) + name_len
    packet = 1 + len(encode_length(body)) + body
    return len(FNEK_PREFIX) + 4 * -(-packet // 3)


assert encrypted_name_len(MAX_NAME_BYTES) <= 255 < encrypted_name_len(MAX_NAME_BYTES + 1)
assert (
    encrypted_name_len(MAX_SYMLINK_TARGET_BYTES)
    < 4096
    <= encrypted_name_len(MAX_SYMLINK_TARGET_BYTES + 1)
)
