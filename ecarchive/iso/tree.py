"""The directory tree of an ISO image, built from plan entries without touching the disk.

Children are sorted by their Rock Ridge name and get generated ISO names (fixed-width
base-36 indexes), so "sorted by ISO name" (ECMA-119) and "sorted by RR name" agree and names
are unique by construction. Real names live only in NM entries.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model import FILE_TYPE, Entry, Kind
from .encode import base36, base36_width

# Linux drops NM chunks once a name would reach 254 bytes (get_rock_ridge_filename).
NAME_MAX = 253
# The kernel builds a symlink target in one page, leaving room for the NUL.
TARGET_MAX = 4095
# Path table records hold a 16-bit parent number.
DIRECTORIES_MAX = 65535


class Node:
    """One name in the image; directories also carry their children and placement."""

    __slots__ = (
        "ce_blocks",
        "children",
        "data",
        "entry",
        "iso_id",
        "lba",
        "name",
        "number",
        "parent",
        "serial",
        "size",
        "subdirs",
    )

    def __init__(self, entry: Entry, name: bytes, parent: Node | None, serial: int) -> None:
        self.entry = entry
        self.name = name
        self.parent = parent if parent is not None else self
        self.serial = serial
        self.iso_id = b""
        self.children: list[Node] = []
        self.subdirs = 0
        self.number = 0  # directories: 1-based path table number
        self.lba = 0  # directories: extent; files: first data block
        self.size = 0  # directories: bytes of records, a multiple of the sector size
        self.ce_blocks = 0  # directories: continuation blocks right after the records
        self.data: Node = self  # the node whose extent holds the data (hard links)

    @property
    def is_dir(self) -> bool:
        return self.entry.kind is Kind.DIR

    @property
    def mode(self) -> int:
        return FILE_TYPE[self.entry.kind] | self.entry.mode

    @property
    def nlink(self) -> int:
        if self.is_dir:
            return 2 + self.subdirs
        return self.data.entry.nlink

    @property
    def data_size(self) -> int:
        return self.data.entry.size if self.entry.kind in (Kind.FILE, Kind.HARDLINK) else 0


def _check_name(entry: Entry, name: bytes, problems: list[str]) -> None:
    shown = entry.path.decode(errors="replace")
    if not name or name in (b".", b".."):
        problems.append(f"{shown}: invalid name {name!r}")
    elif len(name) > NAME_MAX:
        problems.append(
            f"{shown}: name of {len(name)} bytes; Linux shows Rock Ridge names of at most "
            f"{NAME_MAX} bytes"
        )
    elif b"\x00" in name:
        problems.append(f"{shown}: name contains a NUL byte")


def _check_target(entry: Entry, problems: list[str]) -> None:
    shown = entry.path.decode(errors="replace")
    if not entry.link_target:
        problems.append(f"{shown}: empty symlink target")
    elif len(entry.link_target) > TARGET_MAX:
        problems.append(
            f"{shown}: symlink target of {len(entry.link_target)} bytes; Linux reads Rock "
            f"Ridge targets of at most {TARGET_MAX} bytes"
        )
    elif b"\x00" in entry.link_target:
        problems.append(f"{shown}: symlink target contains a NUL byte")


def build_tree(
    entries: Iterable[Entry], root: Entry, problems: list[str]
) -> tuple[list[Node], list[Node]]:
    """Directories in path table order, and the regular files (not hard links) in plan order.

    Problems are appended to `problems` instead of raised so the caller reports all of them.
    """
    root_node = Node(root, b"", None, serial=1)
    files: list[Node] = []
    by_path: dict[bytes, Node] = {b"": root_node}
    serial = 1
    for entry in entries:
        serial += 1
        parent_path, _, name = entry.path.rpartition(b"/")
        parent = by_path.get(parent_path)
        shown = entry.path.decode(errors="replace")
        if entry.path in by_path:
            problems.append(f"{shown}: appears twice in the plan")
            continue
        if parent is None or not parent.is_dir:
            problems.append(f"{shown}: its parent directory is not in the plan before it")
            continue
        _check_name(entry, name, problems)
        node = Node(entry, name, parent, serial)
        if entry.kind is Kind.SYMLINK:
            _check_target(entry, problems)
        elif entry.kind is Kind.HARDLINK:
            target = by_path.get(entry.link_target)
            if target is None or target.entry.kind is not Kind.FILE:
                problems.append(
                    f"{shown}: hard link to {entry.link_target.decode(errors='replace')}, "
                    "which is not an earlier regular file of the plan"
                )
            else:
                node.data = target
                node.serial = target.serial
        if entry.kind is Kind.FILE:
            files.append(node)
        parent.children.append(node)
        if node.is_dir:
            parent.subdirs += 1
        by_path[entry.path] = node
    del by_path  # only the tree is kept: memory grows with nodes, not with lookups
    return _number_directories(root_node, problems), files


def _number_directories(root: Node, problems: list[str]) -> list[Node]:
    """Sort children, assign ISO names and path table numbers breadth first."""
    order = [root]
    index = 0
    while index < len(order):
        directory = order[index]
        index += 1
        directory.number = index
        directory.children.sort(key=lambda n: n.name)
        width = base36_width(len(directory.children))
        for position, child in enumerate(directory.children):
            ident = base36(position, width)
            child.iso_id = ident if child.is_dir else ident + b".;1"
            if child.is_dir:
                order.append(child)
    if len(order) > DIRECTORIES_MAX:
        problems.append(
            f"{len(order)} directories; ISO 9660 path tables can number at most {DIRECTORIES_MAX}"
        )
    return order
