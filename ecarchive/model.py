"""The plan's value types: what every sink and the encrypting reader consume.

A plan is built once by a pre-scan (lstat only) and is immutable afterwards, so every size,
name and offset a sink needs is known before the first output byte.
"""

from __future__ import annotations

import enum
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


class Kind(enum.Enum):
    DIR = "d"
    FILE = "f"
    SYMLINK = "l"
    HARDLINK = "h"  # a further name of a FILE already in the plan (link_target = its lower path)
    FIFO = "p"
    CHAR = "c"
    BLOCK = "b"


# The st_mode file type each kind is stored as; a HARDLINK is a further name of a regular file.
FILE_TYPE: dict[Kind, int] = {
    Kind.DIR: stat.S_IFDIR,
    Kind.FILE: stat.S_IFREG,
    Kind.HARDLINK: stat.S_IFREG,
    Kind.SYMLINK: stat.S_IFLNK,
    Kind.FIFO: stat.S_IFIFO,
    Kind.CHAR: stat.S_IFCHR,
    Kind.BLOCK: stat.S_IFBLK,
}
KIND_OF_FILE_TYPE: dict[int, Kind] = {t: k for k, t in FILE_TYPE.items() if k is not Kind.HARDLINK}


@dataclass(frozen=True, slots=True)
class Entry:
    """One member of the output, in output order.

    `path` is the member's path inside the archive, relative to the archive root, as bytes
    with '/' separators and no leading or trailing slash, e.g. b"Private/ECRYPTFS_FNEK_ENCRYPTED.FW...".
    Parents always precede their children.
    """

    kind: Kind
    path: bytes
    mode: int  # permission bits incl. setuid/setgid/sticky (stat.S_IMODE)
    uid: int
    gid: int
    uname: str
    gname: str
    mtime_ns: int
    size: int = 0  # bytes of member data in the archive (lower size for FILE; 0 otherwise)
    link_target: bytes = b""  # SYMLINK: stored target; HARDLINK: archive path of the FILE
    nlink: int = 1  # number of names of this file inside the plan (FILE and its HARDLINKs)
    rdev: int = 0  # CHAR/BLOCK device number
    source: bytes | None = None  # absolute plaintext path to read (FILE); None for synthetic
    plain_size: int = 0  # plaintext bytes planned for FILE (from lstat)
    data: bytes | None = None  # content of a synthetic FILE (RESTORE.txt), len == size
    rel: bytes = b""  # plaintext path relative to SOURCE, for messages
    # lstat facts the incremental snapshot keeps (GNU tar's change rules); 0 when synthetic
    dev: int = 0
    ino: int = 0
    ctime_ns: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    entries: tuple[Entry, ...]
    lower_root: bytes  # e.g. b"Private"
    problems: tuple[str, ...] = ()
    data_bytes: int = 0  # sum of Entry.size over the plan


class Body(Protocol):
    """Yields the member data of a FILE entry: exactly `entry.size` bytes in total."""

    def __call__(self, entry: Entry) -> Iterator[bytes | bytearray | memoryview]: ...

