"""ECMA-119 dates as read: the 7-byte recording date (9.1.5) and the 17-byte form (8.4.26.1)."""

from __future__ import annotations

import calendar

from ...iso.encode import DATE7_MIN_YEAR, NS_PER_SECOND

DATE7_LEN = 7
DATE17_LEN = 17
_OFFSET_MIN, _OFFSET_MAX = -48, 52  # the GMT offset in 15-minute steps
_QUARTER_HOUR = 15 * 60


def _offset_seconds(byte: int) -> int:
    offset = byte - 256 if byte > 127 else byte
    return offset * _QUARTER_HOUR if _OFFSET_MIN <= offset <= _OFFSET_MAX else 0


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    # Out-of-range fields (a damaged date) give the nearest valid moment, not a failure:
    # a date never costs a file
    month = min(max(month, 1), 12)
    day = min(max(day, 1), 31)
    return calendar.timegm(
        (year, month, day, min(hour, 23), min(minute, 59), min(second, 59), 0, 0, 0)
    )


def date7_ns(field: bytes) -> int:
    y, mo, d, h, mi, s, off = field[:DATE7_LEN]
    seconds = _utc(DATE7_MIN_YEAR + y, mo, d, h, mi, s) - _offset_seconds(off)
    return seconds * NS_PER_SECOND


def date17_ns(field: bytes) -> int:
    text = field[:16]
    if not text.isdigit():
        return 0
    y, mo, d, h, mi, s, cs = (int(text[i : i + w]) for i, w in _DATE17_FIELDS)
    seconds = _utc(y, mo, d, h, mi, s) - _offset_seconds(field[16])
    return seconds * NS_PER_SECOND + cs * (NS_PER_SECOND // 100)


_DATE17_FIELDS = ((0, 4), (4, 2), (6, 2), (8, 2), (10, 2), (12, 2), (14, 2))
