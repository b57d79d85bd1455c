"""ECMA-119 field encodings: both-endian numbers, d-characters, 7- and 17-byte dates.

Linux reads only the little-endian half of both-endian fields, but other readers check the
big-endian half too, so both are always written.
"""

from __future__ import annotations

import datetime

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


def both16(value: int) -> bytes:
    return value.to_bytes(2, "little") + value.to_bytes(2, "big")


def both32(value: int) -> bytes:
    return value.to_bytes(4, "little") + value.to_bytes(4, "big")


def padded(text: bytes, width: int, fill: bytes = b" ") -> bytes:
    """`text` left-aligned in a field of `width` bytes (callers validate the length)."""
    return text + fill * (width - len(text))


def _utc(time_ns: int) -> datetime.datetime:
    """UTC datetime of `time_ns`, clamped to the range the 7-byte form can hold."""
    seconds = time_ns // NS_PER_SECOND
    low = int((_DATE7_LOW - _EPOCH).total_seconds())
    high = int((_DATE7_HIGH - _EPOCH).total_seconds())
    return _EPOCH + datetime.timedelta(seconds=min(max(seconds, low), high))


def date7_in_range(time_ns: int) -> bool:
    return _utc(time_ns) == _EPOCH + datetime.timedelta(seconds=time_ns // NS_PER_SECOND)


def date7(time_ns: int) -> bytes:
    """7-byte recording date in UTC (GMT offset 0), clamped to 1900..2155."""
    t = _utc(time_ns)
    return bytes((t.year - DATE7_MIN_YEAR, t.month, t.day, t.hour, t.minute, t.second, 0))


def date17(time_ns: int) -> bytes:
    """17-byte volume date `YYYYMMDDHHMMSScc` in UTC with GMT offset 0."""
    t = _utc(time_ns)
    hundredths = (time_ns % NS_PER_SECOND) // 10_000_000
    text = f"{t:%Y%m%d%H%M%S}{hundredths:02d}".encode("ascii")
    return text + b"\x00"


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
