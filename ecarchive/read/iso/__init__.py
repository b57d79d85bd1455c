"""A forward-only reader of ISO 9660 + Rock Ridge images that loses one record, never the disc.

See walk.py for how the image is read and what counts as damage.
"""

from __future__ import annotations

from .records import FIRST_DESCRIPTOR, is_descriptor
from .source import ImageSource
from .walk import IsoImage, IsoUnreadable

# What must be read to recognise an image: the system area and the first volume descriptor
ISO_SNIFF_BYTES = FIRST_DESCRIPTOR + 2048


def is_iso_head(head: bytes) -> bool:
    return len(head) >= ISO_SNIFF_BYTES and is_descriptor(head[FIRST_DESCRIPTOR:ISO_SNIFF_BYTES])


__all__ = ["ISO_SNIFF_BYTES", "ImageSource", "IsoImage", "IsoUnreadable", "is_iso_head"]
