"""OpenPGP-style packet length fields (fs/ecryptfs/keystore.c)."""

from __future__ import annotations

ONE_BYTE_MAX = 191  # lengths below 192 take one byte
TWO_BYTE_MAX = 8383  # (223 - 192) * 256 + 255 + 192
_TWO_BYTE_FIRST_MIN = 192
_TWO_BYTE_FIRST_MAX = 223


class PacketError(ValueError):
    """A packet is truncated or not one the kernel would accept."""


def encode_length(n: int) -> bytes:
    """ecryptfs_write_packet_length."""
    if n < 0:
        raise ValueError("negative packet length")
    if n <= ONE_BYTE_MAX:
        return bytes([n])
    if n <= TWO_BYTE_MAX:
        n -= _TWO_BYTE_FIRST_MIN
        return bytes([(n >> 8) + _TWO_BYTE_FIRST_MIN, n & 0xFF])
    raise PacketError(f"packet length {n} too large")


def decode_length(data: bytes | memoryview, offset: int) -> tuple[int, int]:
    """ecryptfs_parse_packet_length: returns (length, bytes used by the length field)."""
    if offset >= len(data):
        raise PacketError("truncated packet length")
    b0 = data[offset]
    if b0 <= ONE_BYTE_MAX:
        return b0, 1
    if b0 <= _TWO_BYTE_FIRST_MAX:
        if offset + 1 >= len(data):
            raise PacketError("truncated packet length")
        return ((b0 - _TWO_BYTE_FIRST_MIN) << 8) + data[offset + 1] + _TWO_BYTE_FIRST_MIN, 2
    raise PacketError(f"unsupported packet length byte 0x{b0:02x}")
