"""A source tree and the changes between the levels of an incremental chain (issue 13's proof):
level 1 after modifying, adding, deleting and renaming a file and a directory and changing a
mode only; level 2 after more (a directory deleted, types changed, a new hard link)."""

from __future__ import annotations

import os
from pathlib import Path

BIG = 3 * (1 << 20) + 5  # several extents; big enough that a pipe fills while it is written


def _write(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def make_level0(root: Path) -> None:
    for d in ("docs/old", "photos", "keep/deep/er", "gone/sub", "typed", "ro"):
        (root / d).mkdir(parents=True, exist_ok=True)
    _write(root / "docs" / "report.txt", b"first draft\n" * 50)
    _write(root / "docs" / "old" / "notes.txt", b"old notes\n")
    _write(root / "photos" / "a.jpg", bytes(range(256)) * 40)
    _write(root / "photos" / "big.bin", os.urandom(BIG))
    _write(root / "keep" / "deep" / "er" / "same.txt", b"never changes\n")
    _write(root / "keep" / "mode.sh", b"#!/bin/sh\necho hi\n")
    _write(root / "gone" / "sub" / "x", b"x" * 5000)
    _write(root / "gone" / "y", b"y")
    _write(root / "typed" / "file-then-dir", b"f")
    (root / "typed" / "dir-then-file").mkdir()
    _write(root / "typed" / "dir-then-file" / "inside", b"i")
    _write(root / "ro" / "r.txt", b"read only\n")
    os.chmod(root / "ro", 0o555)
    os.symlink("docs/report.txt", root / "link")
    os.link(root / "photos" / "a.jpg", root / "photos" / "a-again.jpg")
    _write(root / "to-delete.txt", b"bye\n")
    _write(root / "to-rename.txt", b"moving\n")


def change_level1(root: Path) -> None:
    """Modify, add, delete, rename a file and a directory; a mode-only change."""
    with (root / "docs" / "report.txt").open("ab") as f:
        f.write(b"second draft\n")
    _write(root / "docs" / "added.txt", b"new file\n")
    (root / "added-dir" / "in").mkdir(parents=True)
    _write(root / "added-dir" / "in" / "f", b"in a new directory\n")
    (root / "to-delete.txt").unlink()
    (root / "docs" / "old" / "notes.txt").unlink()
    (root / "docs" / "old").rmdir()
    (root / "to-rename.txt").rename(root / "renamed.txt")
    (root / "photos").rename(root / "pictures")
    os.chmod(root / "keep" / "mode.sh", 0o755)


def change_level2(root: Path) -> None:
    """A whole directory deleted, a file and a directory that change type, a new hard link,
    a symlink pointed elsewhere, a file in a read-only directory rewritten."""
    for p in ("gone/sub/x", "gone/y"):
        (root / p).unlink()
    (root / "gone" / "sub").rmdir()
    (root / "gone").rmdir()
    (root / "typed" / "file-then-dir").unlink()
    (root / "typed" / "file-then-dir").mkdir()
    _write(root / "typed" / "file-then-dir" / "now", b"a directory now\n")
    (root / "typed" / "dir-then-file" / "inside").unlink()
    (root / "typed" / "dir-then-file").rmdir()
    _write(root / "typed" / "dir-then-file", b"a file now\n")
    os.link(root / "renamed.txt", root / "docs" / "renamed-link.txt")
    (root / "link").unlink()
    os.symlink("renamed.txt", root / "link")
    os.chmod(root / "ro", 0o755)
    _write(root / "ro" / "r.txt", b"rewritten\n")
    os.chmod(root / "ro", 0o555)


def change_one_percent(root: Path, files: list[Path], fraction: float = 0.01) -> int:
    """Rewrite every n-th file so about `fraction` of the bytes change; returns those bytes."""
    total = sum(p.stat().st_size for p in files)
    changed = 0
    for p in sorted(files, key=lambda p: p.stat().st_size, reverse=True):
        size = p.stat().st_size
        if changed + size > total * fraction:
            continue
        with p.open("r+b") as f:
            f.write(b"changed")
        changed += size
    return changed
