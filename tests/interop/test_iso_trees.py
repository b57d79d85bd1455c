"""Test trees and plans for the ISO writer, plus parsers for what each reader lists.

Imported by the other `test_iso*` modules (interop and kernel). Plans are built by hand from
real files, the way the planner would, so the writer is tested without the planner.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libarchive

from ecarchive.iso import IsoLayout, plan_iso, write_iso
from ecarchive.model import Entry, Kind

CHUNK = 64 * 1024
LOWER = b"Private"
RESTORE = b"RESTORE.txt"
RESTORE_TEXT = b"mount -o loop,ro image.iso /mnt\nmount -t ecryptfs /mnt/Private /plain\n"
VOLUME_TIME_NS = 1_700_000_000 * 10**9
# Characters of eCryptfs encrypted names.
NAME_ALPHABET = "-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
FNEK_PREFIX = "ECRYPTFS_FNEK_ENCRYPTED."


def fnek_like(index: int, length: int) -> str:
    """A deterministic name that looks like an encrypted eCryptfs name of `length` bytes."""
    body = "".join(NAME_ALPHABET[(index * 7 + k * 13) % len(NAME_ALPHABET)] for k in range(length))
    return (FNEK_PREFIX + f"{index:06d}" + body)[:length]


def _kind(mode: int) -> Kind:
    if stat.S_ISDIR(mode):
        return Kind.DIR
    if stat.S_ISREG(mode):
        return Kind.FILE
    if stat.S_ISLNK(mode):
        return Kind.SYMLINK
    if stat.S_ISFIFO(mode):
        return Kind.FIFO
    if stat.S_ISCHR(mode):
        return Kind.CHAR
    if stat.S_ISBLK(mode):
        return Kind.BLOCK
    raise ValueError(f"unsupported file type {mode:o}")


def _walk(root: Path) -> Iterator[Path]:
    """Parents before children, names sorted (what the planner does)."""
    for name in sorted(os.listdir(root)):
        path = root / name
        yield path
        if stat.S_ISDIR(path.lstat().st_mode):
            yield from _walk(path)


def plan_from_tree(root: Path, restore_text: bytes = RESTORE_TEXT) -> list[Entry]:
    """RESTORE.txt plus `root` as the lower directory, hard links detected by inode."""
    st = root.lstat()
    entries = [
        Entry(Kind.FILE, RESTORE, 0o644, 0, 0, "root", "root", VOLUME_TIME_NS,
              size=len(restore_text), data=restore_text),
        Entry(Kind.DIR, LOWER, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, "", "",
              st.st_mtime_ns),
    ]
    first_name: dict[tuple[int, int], bytes] = {}
    counts: dict[tuple[int, int], int] = {}
    paths = list(_walk(root))
    for path in paths:
        st = path.lstat()
        if stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            counts[key] = counts.get(key, 0) + 1
    for path in paths:
        st = path.lstat()
        archive_path = LOWER + b"/" + os.fsencode(path.relative_to(root))
        kind = _kind(st.st_mode)
        common = dict(mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, uname="",
                      gname="", mtime_ns=st.st_mtime_ns)
        if kind is Kind.FILE:
            key = (st.st_dev, st.st_ino)
            if key in first_name:
                entries.append(Entry(Kind.HARDLINK, archive_path, link_target=first_name[key],
                                     nlink=counts[key], **common))  # type: ignore[arg-type]
                continue
            first_name[key] = archive_path
            entries.append(Entry(kind, archive_path, size=st.st_size, nlink=counts[key],
                                 source=os.fsencode(path), **common))  # type: ignore[arg-type]
        elif kind is Kind.SYMLINK:
            entries.append(Entry(kind, archive_path, link_target=os.fsencode(os.readlink(path)),
                                 **common))  # type: ignore[arg-type]
        else:
            entries.append(Entry(kind, archive_path, rdev=st.st_rdev,
                                 **common))  # type: ignore[arg-type]
    return entries


def file_body(entry: Entry) -> Iterator[bytes]:
    """Reads a FILE entry's data in fixed-size chunks (synthetic entries from `data`)."""
    if entry.data is not None:
        yield entry.data
        return
    assert entry.source is not None
    with open(entry.source, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def build_iso(entries: list[Entry], out: Path, label: str = "ECARCHIVE") -> IsoLayout:
    layout = plan_iso(entries, volume_label=label, volume_time_ns=VOLUME_TIME_NS)
    with open(out, "wb") as f:
        write_iso(layout, file_body, f)
    return layout


# --- what the image should show, and what each reader shows ---------------------------------


@dataclass(frozen=True)
class Item:
    type: str  # d f l p c b
    mode: int  # permission bits
    size: int  # files only; 0 for everything else
    target: str  # symlink target; "" otherwise

    def without_mode(self) -> Item:
        return Item(self.type, 0, self.size, self.target)


_TYPE_OF_KIND = {Kind.DIR: "d", Kind.FILE: "f", Kind.HARDLINK: "f", Kind.SYMLINK: "l",
                 Kind.FIFO: "p", Kind.CHAR: "c", Kind.BLOCK: "b"}


def expected_items(entries: list[Entry]) -> dict[str, Item]:
    sizes = {e.path: e.size for e in entries if e.kind is Kind.FILE}
    out = {}
    for e in entries:
        size = sizes[e.link_target] if e.kind is Kind.HARDLINK else e.size
        target = e.link_target.decode() if e.kind is Kind.SYMLINK else ""
        out[e.path.decode()] = Item(_TYPE_OF_KIND[e.kind], e.mode, size, target)
    return out


def _type_letter(mode_string: str) -> str:
    letter = mode_string[0]
    return {"-": "f", "f": "p"}.get(letter, letter)  # isoinfo shows fifos as 'f'


def _perm_bits(mode_string: str) -> int:
    return stat.S_IMODE(_parse_symbolic(mode_string[1:10]))


def _parse_symbolic(perm: str) -> int:
    bits = 0
    for index, (char, special) in enumerate(zip(perm, "--s--s--t", strict=True)):
        shift = 8 - index
        if char in "rwx":
            bits |= 1 << shift
        elif (char in "sS" and special == "s") or (char in "tT" and special == "t"):
            if char.islower():
                bits |= 1 << shift
            bits |= {2: stat.S_ISUID, 5: stat.S_ISGID, 8: stat.S_ISVTX}[index]
    return bits


def libarchive_items(image: Path) -> dict[str, Item]:
    """Every entry as libarchive-c (python) reads it; hard links get their target's size."""
    out: dict[str, Item] = {}
    links: dict[str, str] = {}
    with libarchive.file_reader(str(image)) as archive:
        for e in archive:
            name = e.pathname.rstrip("/")
            if name in (".", ""):
                continue
            kind = ("d" if e.isdir else "l" if e.issym else "p" if e.isfifo else
                    "c" if e.ischr else "b" if e.isblk else "f")
            if e.islnk:
                links[name] = e.linkpath
                out[name] = Item("f", stat.S_IMODE(e.mode), -1, "")
                continue
            size = e.size if kind == "f" else 0
            out[name] = Item(kind, stat.S_IMODE(e.mode), size, e.linkpath if e.issym else "")
    for name, target in links.items():
        out[name] = Item("f", out[name].mode, out[target].size, "")
    return out


_DATE = r"\w{3}\s+\d+\s+(?:\d{4}|\d\d:\d\d)"
_BSDTAR_LINE = re.compile(
    r"^(?P<mode>\S{10})\s+\d+\s+\S+\s+\S+\s+(?P<size>[\d,]+)\s+" + _DATE + r"\s+(?P<rest>.*)$"
)


def bsdtar_items(image: Path) -> dict[str, Item]:
    """`bsdtar -tvf` listing (names must not contain ' -> ' or ' link to ')."""
    text = subprocess.run(["bsdtar", "-tvf", str(image)], check=True, capture_output=True,
                          text=True).stdout
    out: dict[str, Item] = {}
    links: dict[str, str] = {}
    for line in text.splitlines():
        m = _BSDTAR_LINE.match(line)
        assert m, line
        rest = m["rest"]
        target = ""
        if " link to " in rest:
            rest, linked = rest.split(" link to ", 1)
            links[rest] = linked
        elif " -> " in rest:
            rest, target = rest.split(" -> ", 1)
        if rest in (".", "./"):
            continue
        kind = _type_letter(m["mode"])
        size = int(m["size"]) if kind == "f" else 0
        out[rest.rstrip("/")] = Item(kind, _perm_bits(m["mode"]), size, target)
    for name, linked in links.items():
        out[name] = Item("f", out[name].mode, out[linked].size, "")
    return out


_ISOINFO_LINE = re.compile(
    r"^(?P<mode>\S{10})\s+\d+\s+\d+\s+\d+\s+(?P<size>\d+)\s+\w{3}\s+\d+\s+(?:\d{4}|\d\d:\d\d)\s+"
    r"\[\s*\d+\s+\d+\]\s\s(?P<rest>.*?) ?$"
)


def isoinfo_items(image: Path) -> dict[str, Item]:
    """`isoinfo -R -l` listing, directory by directory."""
    text = subprocess.run(["isoinfo", "-R", "-l", "-i", str(image)], check=True,
                          capture_output=True, text=True).stdout
    out: dict[str, Item] = {}
    directory = ""
    for line in text.splitlines():
        if line.startswith("Directory listing of /"):
            directory = line[len("Directory listing of /"):].rstrip("/")
            continue
        if not line.strip():
            continue
        m = _ISOINFO_LINE.match(line)
        assert m, line
        rest = m["rest"]
        target = ""
        if " -> " in rest:
            rest, target = rest.split(" -> ", 1)
        if rest in (".", ".."):
            continue
        kind = _type_letter(m["mode"])
        name = f"{directory}/{rest}" if directory else rest
        out[name] = Item(kind, _perm_bits(m["mode"]), int(m["size"]) if kind == "f" else 0,
                         target)
    return out


_XORRISO_LINE = re.compile(
    r"^(?P<mode>\S{10})\s+\d+\s+\S+\s+\S+\s+(?P<size>[\d,]+)\s+\w{3}\s+\d+\s+(?:\d{4}|\d\d:\d\d)\s+"
    r"'/(?P<name>[^']*)'(?: -> '(?P<target>[^']*)')?$"
)


def xorriso_items(image: Path) -> dict[str, Item]:
    """`xorriso -indev X -find / -exec lsdl` (names must not contain quotes)."""
    proc = subprocess.run(["xorriso", "-indev", str(image), "-find", "/", "-exec", "lsdl"],
                          check=True, capture_output=True, text=True)
    assert "SORRY" not in proc.stderr and "FAILURE" not in proc.stderr, proc.stderr
    out: dict[str, Item] = {}
    for line in proc.stdout.splitlines():
        m = _XORRISO_LINE.match(line)
        if not m or not m["name"]:
            continue
        kind = _type_letter(m["mode"])
        out[m["name"]] = Item(kind, _perm_bits(m["mode"]),
                              int(m["size"]) if kind == "f" else 0, m["target"] or "")
    return out


# --- trees ------------------------------------------------------------------------------------


def make_mixed_tree(root: Path, *, target_len: int = 900) -> None:
    """Files of edge sizes, 252/253-byte names, links, a fifo, a device, an empty dir."""
    root.mkdir()
    sizes = (0, 1, 2047, 2048, 2049, 8192 + 4096, 70_001)
    for index, size in enumerate(sizes):
        (root / fnek_like(index, 104)).write_bytes(os.urandom(size))
    (root / fnek_like(20, 252)).write_bytes(b"252-byte name\n")
    (root / fnek_like(21, 253)).write_bytes(b"253-byte name\n")
    (root / fnek_like(22, 251)).mkdir(mode=0o700)
    (root / fnek_like(22, 251) / fnek_like(23, 84)).write_bytes(os.urandom(9000))
    (root / "empty-dir").mkdir()
    first = root / fnek_like(30, 84)
    first.write_bytes(os.urandom(10_000))
    os.link(first, root / fnek_like(31, 84))
    os.link(first, root / fnek_like(22, 251) / fnek_like(32, 84))
    os.symlink(fnek_like(40, target_len), root / fnek_like(41, 84))
    os.symlink("../" + fnek_like(42, 84) + "/./x", root / fnek_like(43, 84))
    os.symlink("/absolute/target", root / fnek_like(44, 84))
    # Several SL entries whose boundaries fall between components.
    os.symlink("/".join(fnek_like(60 + i, 200) for i in range(4)), root / fnek_like(45, 84))
    os.mkfifo(root / fnek_like(50, 84))
    os.mknod(root / fnek_like(51, 84), 0o620 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(root / fnek_like(52, 84), 0o600 | stat.S_IFBLK, os.makedev(8, 1))
    setuid = root / "setuid"
    setuid.write_bytes(b"#!/bin/sh\n")
    setuid.chmod(0o4755)
    os.chmod(root / "empty-dir", 0o1777)


def make_deep_tree(root: Path, levels: int = 14) -> None:
    """`levels` nested directories with 84-byte names, a file in each."""
    root.mkdir()
    path = root
    for level in range(levels):
        path = path / fnek_like(100 + level, 84)
        path.mkdir()
        (path / f"file{level}").write_bytes(os.urandom(level * 100 + 1))


def make_wide_tree(root: Path, count: int = 2000) -> None:
    root.mkdir()
    wide = root / "wide"
    wide.mkdir()
    for index in range(count):
        (wide / fnek_like(index, 104)).write_bytes(index.to_bytes(4, "big") * (index % 7))


def test_plan_from_tree_finds_hard_links(tmp_path: Path) -> None:
    make_mixed_tree(tmp_path / "src")
    entries = plan_from_tree(tmp_path / "src")
    links = [e for e in entries if e.kind is Kind.HARDLINK]
    assert len(links) == 2
    assert all(e.nlink == 3 for e in links)
