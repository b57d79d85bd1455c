"""Media spanning: split a plan into volumes that each fit a disc and restore on their own.

Whole files are assigned to volumes in plan order, so the split is deterministic. Every
volume is a complete tree: the top-level synthetic files (RESTORE.txt and friends) are
repeated in each, the directories leading to its files are included, and a file travels
with all its hard links. Empty directories go with the volume that reaches them first.

The size of a candidate volume comes from the sink's own layout (`size_of`), so a volume is
never over capacity by even a sector; `size_of` is only required to grow when entries are
added, which holds for ISO and tar.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from .errors import EcarchiveError
from .model import Entry, Kind

# Usable capacities in bytes (sectors of 2048 bytes as the drives report them).
MEDIA: dict[str, int] = {
    "cd": 360_000 * 2048,  # 80-minute CD-R, 737,280,000 bytes
    "dvd": 2_295_104 * 2048,  # DVD±R single layer, 4,700,372,992 bytes
    "dvd-dl": 4_173_824 * 2048,  # DVD+R DL, 8,547,991,552 bytes
    "bd": 12_219_392 * 2048,  # BD-R single layer, 25,025,314,816 bytes
    "bd-dl": 24_438_784 * 2048,  # BD-R dual layer, 50,050,629,632 bytes
}

SizeOf = Callable[[list[Entry]], int]


class VolumeError(EcarchiveError):
    """The plan cannot be split into volumes of the requested capacity."""


class FileTooLargeForVolume(VolumeError):
    def __init__(self, entry: Entry, needed: int, capacity: int) -> None:
        self.entry = entry
        self.needed = needed
        self.capacity = capacity
        shown = (entry.rel or entry.path).decode(errors="replace")
        super().__init__(
            f"{shown}: needs a volume of at least {needed} bytes, but a volume holds "
            f"{capacity} bytes; files are never split across volumes",
            hint="choose larger media (--media) or --exclude the file; nothing was written",
        )


def parse_media(text: str) -> int:
    """Capacity in bytes from a media name (`dvd`) or a byte count (`4700372992`)."""
    if text in MEDIA:
        return MEDIA[text]
    try:
        value = int(text)
    except ValueError:
        names = ", ".join(MEDIA)
        raise VolumeError(f"unknown media {text!r}: use {names} or a size in bytes") from None
    if value <= 0:
        raise VolumeError(f"media size must be positive, not {value}")
    return value


def _is_shared(entry: Entry) -> bool:
    """Top-level synthetic files are repeated in every volume."""
    return b"/" not in entry.path and entry.kind is Kind.FILE and entry.source is None


def _units(entries: Sequence[Entry], shared: set[int]) -> list[list[int]]:
    """Indexes grouped into indivisible units, ordered by their first entry.

    A unit is one entry, except that a regular file and all its hard links form one unit.
    """
    by_path = {e.path: i for i, e in enumerate(entries)}
    units: dict[int, list[int]] = {}
    for index, entry in enumerate(entries):
        if index in shared:
            continue
        if entry.kind is Kind.HARDLINK and entry.link_target in by_path:
            units[by_path[entry.link_target]].append(index)
        else:
            units[index] = [index]
    return [units[k] for k in sorted(units)]


def _ancestors(entries: Sequence[Entry], by_path: dict[bytes, int], index: int) -> list[int]:
    out = []
    path = entries[index].path
    while b"/" in path:
        path = path.rpartition(b"/")[0]
        parent = by_path.get(path)
        if parent is not None:
            out.append(parent)
    return out


def split_volumes(
    entries: Sequence[Entry], capacity_bytes: int, size_of: SizeOf
) -> list[tuple[Entry, ...]]:
    """Volumes of at most `capacity_bytes` each (as measured by `size_of`), in plan order.

    Raises FileTooLargeForVolume before anything is written when one file (with its links
    and the shared top-level files) cannot fit any volume.
    """
    entries = list(entries)
    shared = {i for i, e in enumerate(entries) if _is_shared(e)}
    units = _units(entries, shared)
    by_path = {e.path: i for i, e in enumerate(entries)}
    data = [sum(entries[i].size for i in unit) for unit in units]

    def members(first: int, count: int) -> set[int]:
        out = set(shared)
        for unit in units[first : first + count]:
            for index in unit:
                out.add(index)
                out.update(_ancestors(entries, by_path, index))
        return out

    def measure(first: int, count: int) -> int:
        return size_of([entries[i] for i in sorted(members(first, count))])

    for unit, size in zip(units, data, strict=True):
        if size > capacity_bytes:
            raise FileTooLargeForVolume(entries[unit[0]], size, capacity_bytes)

    volumes: list[tuple[Entry, ...]] = []
    start = 0
    while start < len(units) or not volumes:
        # Member data alone bounds the count from above for any sink (sizes only add).
        bound, total = 0, 0
        while start + bound < len(units) and total + data[start + bound] <= capacity_bytes:
            total += data[start + bound]
            bound += 1
        count = _largest_fit(functools.partial(measure, start), bound, capacity_bytes)
        if count == 0 and start < len(units):
            first = units[start][0]
            raise FileTooLargeForVolume(entries[first], measure(start, 1), capacity_bytes)
        volumes.append(tuple(entries[i] for i in sorted(members(start, count))))
        start += count
    return volumes


def _largest_fit(size: Callable[[int], int], bound: int, capacity: int) -> int:
    """Largest k in 0..bound with size(k) <= capacity, for a size that grows with k.

    Usually `bound` fits or misses by a few files of metadata, so probe it first, gallop
    down, then bisect: about 2*log2(distance from bound) calls.
    """
    if bound == 0:
        return 0
    if size(bound) <= capacity:
        return bound
    bad, step = bound, 1
    while True:
        probe = max(bound - step, 0)
        if probe == 0 or size(probe) <= capacity:
            good = probe
            break
        bad = probe
        step *= 2
    while bad - good > 1:
        middle = (good + bad) // 2
        if size(middle) <= capacity:
            good = middle
        else:
            bad = middle
    return good
