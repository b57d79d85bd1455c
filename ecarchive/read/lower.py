"""The values every lower-tree reader yields (libarchive, the ISO reader, a directory walk)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..display import escape_path
from ..model import Kind

Progress = Callable[[int], None]
Path = tuple[bytes, ...]  # components below the lower root, never empty, never "." or ".."


class MemberUnreadable(Exception):
    """One member's data cannot be read (I/O error, or the archive ends inside it)."""


class DataReader(Protocol):
    def readinto(self, view: memoryview) -> int:
        """Fill `view`; fewer bytes than len(view) only at the end of the member."""
        ...


@dataclass(slots=True)
class LowerEntry:
    """One member of a lower tree, relative to the lower root."""

    kind: Kind
    path: Path
    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    uname: str
    gname: str
    mtime_ns: int
    size: int = 0  # lower data bytes (FILE)
    symlink: bytes = b""  # SYMLINK: the stored (lower) target
    link_path: Path = ()  # HARDLINK: lower path of the file it is another name of
    rdev: int = 0
    data: DataReader | None = None  # FILE only; valid until the next entry is asked for

    @property
    def display(self) -> str:
        return escape_path(b"/".join(self.path))


@dataclass(slots=True)
class RawMember:
    """A member as an archive names it: `path` and `entry.path` are the full member path."""

    path: Path
    entry: LowerEntry
