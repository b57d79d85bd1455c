"""An upper bound of a pax tar's size, for media spanning and the progress total.

libarchive decides per entry which pax records it writes; rather than mirror that, count the
records it could write at their largest. The bound errs by at most one pax header per entry.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model import Entry, Kind

BLOCK = 512
END_OF_ARCHIVE = 2 * BLOCK
# "NN path=...\n"-style records besides path and linkpath: mtime with ns, uid, gid, uname, gname,
# size, and the atime/ctime libarchive may add; generous fixed room for their keys and digits.
_FIXED_RECORDS = 256


def _round(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def header_size_bound(entry: Entry) -> int:
    """The most bytes libarchive writes for the entry's headers (pax and ustar)."""
    records = _FIXED_RECORDS + len(entry.path) + len(entry.link_target)
    records += len(entry.uname.encode()) + len(entry.gname.encode())
    pax = BLOCK + _round(records)  # the extended header's own ustar block + its records
    return pax + BLOCK


def entry_size_bound(entry: Entry) -> int:
    data = _round(entry.size) if entry.kind is Kind.FILE else 0
    return header_size_bound(entry) + data


def tar_size_bound(entries: Iterable[Entry]) -> int:
    return sum(entry_size_bound(e) for e in entries) + END_OF_ARCHIVE
