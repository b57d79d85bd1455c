"""ECMA-119 field encodings: both-endian numbers, d-characters, 7- and 17-byte dates.

Linux reads only the little-endian half of both-endian fields, but other readers check the
big-endian half too, so both are always written.
"""

from __future__ import annotations

import datetime
import struct
import time

# The 7-byte date stores years since 1900 in one byte.
DATE7_MIN_YEAR = 1900
DATE7_MAX_YEAR = 2155
# Linux before 6.16 turns dates into a 32-bit signed time_t (see the reference, section 7).
Y2038_SECONDS = 2**31

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_DATE7_LOW = datetime.datetime(DATE7_MIN_YEAR, 1, 1, tzinfo=datetime.UTC)
_DATE7_HIGH = datetime.datetime(DATE7_MAX_YEAR, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
NS_PER_SECOND = 1_000_000_000
SECTOR = 2048  # ECMA-119 logical block size used by every reader

D_CHARACTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
BASE36_DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


_LE16 = struct.Struct("<H").pack
_BE16 = struct.Struct(">H").pack
_LE32 = struct.Struct("<I").pack
_BE32 = struct.Struct(">I").pack


def both16(value: int) -> bytes:
    return _LE16(value) + _BE16(value)


def both32(value: int) -> bytes:
    return _LE32(value) + _BE32(value)


def padded(text: bytes, width: int, fill: bytes = b" ") -> bytes:
    """`text` left-aligned in a field of `width` bytes (callers validate the length)."""
    return text + fill * (width - len(text))


_LOW_SECONDS = int((_DATE7_LOW - _EPOCH).total_seconds())
_HIGH_SECONDS = int((_DATE7_HIGH - _EPOCH).total_seconds())


def _clamped_seconds(time_ns: int) -> int:
    return min(max(time_ns // NS_PER_SECOND, _LOW_SECONDS), _HIGH_SECONDS)


def date7_in_range(time_ns: int) -> bool:
    return _LOW_SECONDS <= time_ns // NS_PER_SECOND <= _HIGH_SECONDS


def date7(time_ns: int) -> bytes:
    """7-byte recording date in UTC (GMT offset 0), clamped to 1900..2155."""
    t = time.gmtime(_clamped_seconds(time_ns))
    return bytes(
        (t.tm_year - DATE7_MIN_YEAR, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, 0)
    )


def date17(time_ns: int) -> bytes:
    """17-byte volume date `YYYYMMDDHHMMSScc` in UTC with GMT offset 0."""
    t = time.gmtime(_clamped_seconds(time_ns))
    hundredths = (time_ns % NS_PER_SECOND) // 10_000_000 if date7_in_range(time_ns) else 0
    text = time.strftime("%Y%m%d%H%M%S", t) + f"{hundredths:02d}"
    return text.encode("ascii") + b"\x00"


DATE17_UNSPECIFIED = b"0" * 16 + b"\x00"


def base36(value: int, width: int) -> bytes:
    """`value` as `width` upper-case base-36 digits, which sort like the numbers."""
    out = bytearray()
    for _ in range(width):
        value, digit = divmod(value, 36)
        out.append(BASE36_DIGITS[digit])
    if value:
        raise ValueError(f"{value} does not fit in {width} base-36 digits")
    return bytes(reversed(out))


def base36_width(count: int) -> int:
    """Digits needed to number `count` items from 0."""
    width = 1
    while 36**width < count:
        width += 1
    return width
