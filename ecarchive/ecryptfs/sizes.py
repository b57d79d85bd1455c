"""Lower-file sizes as a pure function of plaintext sizes (fs/ecryptfs/inode.c: upper_size_to_lower_size)."""

from __future__ import annotations

from .constants import EXTENT_SIZE, HEADER_SIZE


def extent_count(plain_size: int) -> int:
    """Data extents the kernel writes for `plain_size` bytes (whole extents, last one zero-filled)."""
    if plain_size < 0:
        raise ValueError("negative size")
    return -(-plain_size // EXTENT_SIZE)


def lower_size(plain_size: int, header_size: int = HEADER_SIZE) -> int:
    """Size of the lower file: header region + every data extent (upper_size_to_lower_size)."""
    return header_size + extent_count(plain_size) * EXTENT_SIZE
