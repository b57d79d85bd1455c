"""Key material of the view's files: one per plaintext inode, kept while the inode is unchanged.

`create` asks its key source once per file and run; a mount is asked again at every open.
So that a file reads the same at every open (rsync's second pass, `tar` after `find`, hard
links read under each name), material is remembered per inode for the life of the mount. A
new ctime (the file was written, chmod'ed, renamed, or the inode number reused by a new file)
asks the key source again: with fresh keys that is a new key, with stable keys the one kept in
the xattr or the key store. An open file keeps the material it was opened with.
"""

from __future__ import annotations

import contextlib
import os
import threading

from ..keysource import KeyMaterial, KeySource
from ..keystore import StableKeys
from ..model import Entry, Kind


class InodeKeys:
    """A thread-safe, per-inode memory in front of a `KeySource` (FreshKeys or StableKeys)."""

    def __init__(self, source: KeySource) -> None:
        self.source = source
        self._lock = threading.Lock()
        # (st_dev, st_ino) -> (st_ctime_ns, material): one row per inode ever opened, so the
        # memory is bounded by the tree's file count (~250 bytes a file).
        self._known: dict[tuple[int, int], tuple[int, KeyMaterial]] = {}

    def material(self, path: bytes, rel: bytes, st: os.stat_result) -> KeyMaterial:
        """Material for the regular file `path` (absolute; `rel` for messages) whose fstat is st."""
        inode = (st.st_dev, st.st_ino)
        with self._lock:
            known = self._known.get(inode)
            if known is not None and known[0] == st.st_ctime_ns:
                return known[1]
            entry = Entry(
                kind=Kind.FILE,
                path=b"",
                mode=st.st_mode & 0o7777,
                uid=st.st_uid,
                gid=st.st_gid,
                uname="",
                gname="",
                mtime_ns=st.st_mtime_ns,
                source=path,
                plain_size=st.st_size,
                rel=rel,
            )
            material = self.source.material(entry)
            ctime = st.st_ctime_ns
            if isinstance(self.source, StableKeys):
                self.source.flush()  # a no-op unless this file's key went to the key store
                # It may just have written the xattr, which moves the ctime: remember the
                # ctime the inode has now, so the next open finds this row.
                with contextlib.suppress(OSError):
                    ctime = os.lstat(path).st_ctime_ns
            self._known[inode] = (ctime, material)
            return material
