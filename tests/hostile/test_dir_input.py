"""A directory given as the archive (an extracted tar, a mounted disc) changes under the reader.

The walk holds every directory it reads by descriptor, opened without following a symlink, and
opens files without blocking: a directory swapped for a symlink to the outside after it was
listed leads nowhere, a file swapped for a FIFO is damage, not a hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Runs in a child with a timeout: the old walker blocked for ever in the FIFO's open.
_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from ecarchive.errors import Reporter
    from ecarchive.read.members import MemberUnreadable, open_lower_tree
    tree_dir, outside, action = sys.argv[1:]
    seen = []
    with open_lower_tree(tree_dir, Reporter("t")) as tree:
        for entry in tree.entries:
            name = b"/".join(entry.path).decode()
            if entry.data is not None:
                if action == "fifo" and name == "d/f":
                    os.unlink(os.path.join(tree_dir, "d/f"))
                    os.mkfifo(os.path.join(tree_dir, "d/f"))
                try:
                    got = entry.data.readinto(memoryview(bytearray(1 << 16)))
                    seen.append(f"{name}={got}")
                except MemberUnreadable as e:
                    seen.append(f"{name}!unreadable")
            else:
                seen.append(name)
            if action == "climb" and name.endswith("/leaf"):
                # deep below a/ (whose descriptor was let go): a/ is replaced meanwhile
                os.rename(os.path.join(tree_dir, "a"), os.path.join(tree_dir, "a-old"))
                os.mkdir(os.path.join(tree_dir, "a"))
                with open(os.path.join(tree_dir, "a", "zz"), "wb") as f:
                    f.write(b"planted")
            if action == "symlink" and name == "d":
                os.rename(os.path.join(tree_dir, "d"), os.path.join(tree_dir, "moved"))
                os.symlink(outside, os.path.join(tree_dir, "d"))
    print(" ".join(n for n in seen if "/d/d/" not in n))
    """
)


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_bytes(b"x" * 100)
    (tree / "d" / "g").write_bytes(b"y" * 7)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s" * 33)
    return tree, outside


def _walk(tree: Path, outside: Path, action: str) -> str:
    r = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tree), str(outside), action],
        capture_output=True,
        timeout=20,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().strip()


def test_directory_swapped_for_symlink_after_listing_leads_nowhere(tmp_path: Path) -> None:
    tree, outside = _tree(tmp_path)
    seen = _walk(tree, outside, "symlink")
    assert "secret" not in seen
    # what was listed is what is read: the directory as it was when the walk reached it
    assert seen.split() == ["d", "d/f=100", "d/g=7"]


def test_file_swapped_for_fifo_is_damage_not_a_hang(tmp_path: Path) -> None:
    tree, outside = _tree(tmp_path)
    seen = _walk(tree, outside, "fifo")
    assert seen.split() == ["d", "d/f!unreadable", "d/g=7"]


def test_ancestor_replaced_during_a_deep_descent_is_not_read(tmp_path: Path) -> None:
    """Only the deepest directories stay open; one let go is reopened on the way back up and
    must be the directory that was listed, or the rest of it is skipped."""
    tree, outside = _tree(tmp_path)
    deep = tree / "a"
    for _ in range(100):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "leaf").write_bytes(b"l")
    (tree / "a" / "zz").write_bytes(b"zz")
    seen = _walk(tree, outside, "climb").split()
    assert seen[0] == "a" and seen[-3:] == ["d", "d/f=100", "d/g=7"], seen
    assert not any(n.startswith("a/zz") for n in seen), seen
