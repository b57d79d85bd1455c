"""The 8192-byte header of a lower file: size, marker, flags, tag 3 + tag 11 key packets.

Writer mirrors fs/ecryptfs/crypto.c: ecryptfs_write_headers_virt, write_ecryptfs_marker,
ecryptfs_write_crypt_stat_flags, ecryptfs_write_header_metadata and fs/ecryptfs/keystore.c:
write_tag_3_packet, write_tag_11_packet, ecryptfs_generate_key_packet_set. Reader mirrors
ecryptfs_read_headers_virt, ecryptfs_validate_marker, parse_header_metadata, parse_tag_3_packet,
parse_tag_11_packet, decrypt_passphrase_encrypted_session_key.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .constants import (
    AES_BLOCK,
    AES_CODES,
    DEFAULT_SALT,
    EXTENT_SIZE,
    FILE_VERSION,
    FLAG_ENCRYPT_FILENAMES,
    FLAG_ENCRYPTED,
    FLAG_METADATA_IN_XATTR,
    HASH_MD5_LABEL,
    HEADER_READ_SIZE,
    HEADER_SIZE,
    MAGIC_MARKER,
    MARKER_BYTES,
    MINIMUM_HEADER_EXTENT_SIZE,
    OTHER_CIPHER_CODES,
    PACKET_SET_OFFSET,
    S2K_COUNT_65536,
    S2K_ITERATED_SALTED,
    SALT_SIZE,
    SIG_SIZE,
    SIZE_FIELD_BYTES,
    TAG_1_PACKET,
    TAG_3_PACKET,
    TAG_3_VERSION,
    TAG_11_DATE,
    TAG_11_FILENAME,
    TAG_11_FORMAT_BINARY,
    TAG_11_PACKET,
)
from .ecb import ecb
from .keys import KeyringKey
from .packets import PacketError, decode_length, encode_length

_FIXED = struct.Struct(">Q I I I I H")  # size, m1, m2, version<<24|flags, extent size, count
_AES192_KEY_BYTES = 24
_AES192_EFEK_BYTES = 32  # write_tag_3_packet pads the 24-byte AES key to 32 bytes
_TAG_11_BODY = 1 + 1 + len(TAG_11_FILENAME) + len(TAG_11_DATE) + SIG_SIZE
_TAG_3_FIXED_BODY = 1 + 1 + 1 + 1 + SALT_SIZE + 1  # version, cipher, s2k, hash, salt, count


class HeaderError(ValueError):
    """The lower file does not start with an eCryptfs header the kernel would accept."""


def wrap_fek(fek: bytes, key: KeyringKey) -> bytes:
    """write_tag_3_packet's EFEK: ECB(fekek[:key_bytes], FEK), AES-192 padded with 8 zeros."""
    if len(fek) not in AES_CODES:
        raise ValueError(f"unsupported AES key size {len(fek)}")
    data = fek + b"\0" * (_AES192_EFEK_BYTES - len(fek)) if len(fek) == _AES192_KEY_BYTES else fek
    return ecb(key.prefix(len(fek)), data, decrypt=False)


def wrap_feks(feks: bytes, fek_len: int, key: KeyringKey) -> bytes:
    """wrap_fek over many concatenated FEKs in one call; ECB works block by block, so this is
    the concatenation of their EFEKs. AES-192 keys are padded, so they go one by one."""
    if fek_len not in AES_CODES or len(feks) % fek_len:
        raise ValueError(f"{len(feks)} bytes are not a whole number of {fek_len}-byte keys")
    if fek_len == _AES192_KEY_BYTES:
        return b"".join(wrap_fek(feks[i : i + fek_len], key) for i in range(0, len(feks), fek_len))
    return ecb(key.prefix(fek_len), feks, decrypt=False)


def fek_size(cipher_code: int, efek_bytes: int) -> int:
    """The file key's size (parse_tag_3_packet: 24 for the AES-192 code, else the EFEK's
    length); HeaderError when that is no AES key, or the EFEK no whole number of AES blocks
    (the kernel's decrypt_passphrase_encrypted_session_key then fails)."""
    aes192 = cipher_code == AES_CODES[_AES192_KEY_BYTES]
    size = _AES192_KEY_BYTES if aes192 else efek_bytes
    if size not in AES_CODES or efek_bytes % AES_BLOCK or (aes192 and efek_bytes < size):
        raise HeaderError(f"tag 3 packet's encrypted key of {efek_bytes} bytes is no AES key")
    return size


def unwrap_fek(efek: bytes, cipher_code: int, key: KeyringKey) -> bytes:
    """decrypt_passphrase_encrypted_session_key: key size from the code for AES-192, else len(EFEK)."""
    key_size = fek_size(cipher_code, len(efek))
    return ecb(key.prefix(key_size), efek, decrypt=True)[:key_size]


def key_packets(efek: bytes, key_bytes: int, sig: bytes, salt: bytes = DEFAULT_SALT) -> bytes:
    """One tag 3 (wrapped FEK) + tag 11 (key sig) pair, as ecryptfs_generate_key_packet_set."""
    head, tail = packet_frame(len(efek), key_bytes, sig, salt)
    return head + efek + tail


def packet_frame(
    efek_len: int, key_bytes: int, sig: bytes, salt: bytes = DEFAULT_SALT
) -> tuple[bytes, bytes]:
    """What key_packets puts before and after the EFEK: constant for one key and key size."""
    tag3_fixed = (
        bytes([TAG_3_VERSION, AES_CODES[key_bytes], S2K_ITERATED_SALTED, HASH_MD5_LABEL])
        + salt
        + bytes([S2K_COUNT_65536])
    )
    tag11_body = (
        bytes([TAG_11_FORMAT_BINARY, len(TAG_11_FILENAME)]) + TAG_11_FILENAME + TAG_11_DATE + sig
    )
    head = bytes([TAG_3_PACKET]) + encode_length(len(tag3_fixed) + efek_len) + tag3_fixed
    tail = bytes([TAG_11_PACKET]) + encode_length(len(tag11_body)) + tag11_body
    return head, tail


def build_header(
    plain_size: int, marker: int, packets: bytes, *, filenames_encrypted: bool
) -> bytes:
    """ecryptfs_write_headers_virt: the full HEADER_SIZE region, zero-filled after the packets.

    `marker` is the random m1 (write_ecryptfs_marker); `packets` comes from key_packets().
    """
    flags = FLAG_ENCRYPTED | (FLAG_ENCRYPT_FILENAMES if filenames_encrypted else 0)
    fixed = _FIXED.pack(
        plain_size,
        marker,
        marker ^ MAGIC_MARKER,
        FILE_VERSION << 24 | flags,
        EXTENT_SIZE,
        HEADER_SIZE // EXTENT_SIZE,
    )
    body = fixed + packets + b"\0"  # the packet set ends with a zero byte
    if len(body) > HEADER_READ_SIZE:
        raise ValueError("key packet set too large for the header")
    return body.ljust(HEADER_SIZE, b"\0")  # one allocation: this runs once per file


@dataclass(frozen=True, slots=True)
class KeyPacket:
    cipher_code: int
    salt: bytes
    efek: bytes
    sig: bytes  # binary, SIG_SIZE bytes


@dataclass(frozen=True, slots=True)
class Header:
    plain_size: int
    marker: int
    flags: int
    metadata_size: int  # where data extents start in the lower file
    packets: tuple[KeyPacket, ...]
    packet_bytes: bytes  # the raw packet set, for keeping a file's key material stable

    def cipher_name(self, packet: KeyPacket) -> str:
        if packet.cipher_code in AES_CODES.values():
            return "aes"
        return OTHER_CIPHER_CODES.get(packet.cipher_code, f"code 0x{packet.cipher_code:02x}")

    def packet_for(self, sig: bytes) -> KeyPacket | None:
        return next((p for p in self.packets if p.sig == sig), None)


def _parse_tag3(data: bytes, pos: int) -> tuple[int, int, bytes, bytes]:
    """parse_tag_3_packet → (new pos, cipher code, salt, EFEK)."""
    length, used = decode_length(data, pos + 1)
    start = pos + 1 + used
    end = start + length
    if length < _TAG_3_FIXED_BODY + AES_BLOCK or end > len(data):
        raise HeaderError("truncated tag 3 packet")
    version, code, s2k, hash_id = data[start : start + 4]
    if version != TAG_3_VERSION or s2k != S2K_ITERATED_SALTED or hash_id != HASH_MD5_LABEL:
        raise HeaderError("tag 3 packet has an unsupported version or S2K")
    if code not in AES_CODES.values() and code not in OTHER_CIPHER_CODES:
        raise HeaderError(f"tag 3 packet names unknown cipher code 0x{code:02x}")
    salt = data[start + 4 : start + 4 + SALT_SIZE]
    efek = data[start + _TAG_3_FIXED_BODY : end]
    if code in AES_CODES.values():
        fek_size(code, len(efek))
    return end, code, salt, efek


def _parse_tag11(data: bytes, pos: int) -> tuple[int, bytes]:
    """parse_tag_11_packet → (new pos, sig)."""
    if pos >= len(data) or data[pos] != TAG_11_PACKET:
        raise HeaderError("tag 3 packet not followed by a tag 11 packet")
    length, used = decode_length(data, pos + 1)
    start = pos + 1 + used
    end = start + length
    if length != _TAG_11_BODY or end > len(data):
        raise HeaderError("tag 11 packet has a bad length")
    if data[start] != TAG_11_FORMAT_BINARY or data[start + 1] != len(TAG_11_FILENAME):
        raise HeaderError("tag 11 packet has a bad format")
    return end, data[end - SIG_SIZE : end]


MARKER_PEEK_BYTES = SIZE_FIELD_BYTES + MARKER_BYTES  # what has_marker needs to see


def has_marker(first_bytes: bytes) -> bool:
    """ecryptfs_validate_marker on a lower file's first bytes (the marker follows the size)."""
    if len(first_bytes) < MARKER_PEEK_BYTES:
        return False
    m1, m2 = struct.unpack_from(">II", first_bytes, SIZE_FIELD_BYTES)
    return bool(m1 ^ m2 == MAGIC_MARKER)


def parse_header(first_page: bytes) -> Header:
    """ecryptfs_read_headers_virt over the first 4096 bytes of a lower file."""
    data = bytes(first_page[:HEADER_READ_SIZE])
    if len(data) < PACKET_SET_OFFSET:
        raise HeaderError("file is shorter than an eCryptfs header")
    size, m1, m2, version_flags, extent_size, count = _FIXED.unpack_from(data)
    if m1 ^ m2 != MAGIC_MARKER:
        raise HeaderError("no eCryptfs marker (not an eCryptfs lower file)")
    version = version_flags >> 24
    if version != FILE_VERSION:
        raise HeaderError(f"unsupported eCryptfs file version {version}")
    flags = version_flags & 0xFF
    if flags & FLAG_METADATA_IN_XATTR:
        raise HeaderError("header says the metadata lives in an xattr; not supported")
    metadata_size = extent_size * count
    if metadata_size < MINIMUM_HEADER_EXTENT_SIZE or extent_size % EXTENT_SIZE:
        raise HeaderError(f"bad header size {extent_size}x{count}")
    packets: list[KeyPacket] = []
    pos = PACKET_SET_OFFSET
    try:
        while pos < len(data) and data[pos] in (TAG_3_PACKET, TAG_1_PACKET):
            if data[pos] == TAG_1_PACKET:
                raise HeaderError("public-key (tag 1) files are not supported")
            pos, code, salt, efek = _parse_tag3(data, pos)
            pos, sig = _parse_tag11(data, pos)
            packets.append(KeyPacket(cipher_code=code, salt=salt, efek=efek, sig=sig))
    except PacketError as e:
        raise HeaderError(str(e)) from e
    if not packets:
        raise HeaderError("header carries no key packet")
    return Header(
        plain_size=size,
        marker=m1,
        flags=flags,
        metadata_size=metadata_size,
        packets=tuple(packets),
        packet_bytes=data[PACKET_SET_OFFSET:pos],
    )
