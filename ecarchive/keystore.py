"""Stable key material: keep each plaintext file's random header parts so re-runs are identical.

`StableKeys` is a `KeySource`. For every FILE it tries, in this order:

1. the extended attribute `user.ecarchive.key` on the plaintext inode (so hard links share it and
   renames keep it);
2. the key store file given with `--key-store PATH` (an SQLite database, see `KeyStore`);
3. fresh material, as `FreshKeys` makes it.

Stored material is reused only when it still belongs to this archive's keys: its tag 3/11 packet
pair names the current passphrase's signature, its cipher and key size are the requested ones,
and the packets are byte for byte what our header writer makes of the unwrapped FEK (so a header
built from them is one the kernel accepts). Material already used by another file of this run
(an xattr copied by `cp -a` or `rsync -X`) is replaced, so no two files share a key. With
`rotate_on_change`, material stored when the file had another size or mtime is replaced too.

Fresh material is written back to the xattr; where that fails (read-only mount, a file system
without user xattrs, no write permission) it goes to the key store, and without a key store the
file is named in one warning at the end. Nothing here ever fails the backup.

The xattr value (`pack_material`), big-endian:

    0  4  magic b"ECAK"          11  8  plaintext size when the key was made
    4  1  format version (1)     19  8  mtime in ns when the key was made (signed)
    5  1  key bytes              27  2  n = length of the packet set
    6  1  cipher code (RFC 2440) 29  n  tag 3 + tag 11 packets, exactly as in the header
    7  4  marker m1
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
from dataclasses import dataclass, field

import xattr

from .ecryptfs.constants import AES_CODES
from .ecryptfs.header import HeaderError, build_header, key_packets, parse_header, unwrap_fek
from .ecryptfs.keys import KeyringKey
from .errors import Reporter
from .fsio import TreeDirs, open_regular
from .keysource import FreshKeys, KeyMaterial
from .model import Entry

XATTR_NAME = "user.ecarchive.key"
MAGIC = b"ECAK"
FORMAT_VERSION = 1
_FIXED = struct.Struct(">4s B B B I Q q H")
UNSTABLE_LISTED = 20  # names shown in the end-of-run warning; the rest are counted


class MaterialFormatError(ValueError):
    """A stored key blob is not one this version of ecarchive wrote."""


@dataclass(frozen=True, slots=True)
class StoredMaterial:
    """Key material as kept beside the plaintext, with the file state it was made for."""

    key_bytes: int
    cipher_code: int
    marker: int
    plain_size: int
    mtime_ns: int
    packets: bytes


def pack_material(stored: StoredMaterial) -> bytes:
    fixed = _FIXED.pack(
        MAGIC,
        FORMAT_VERSION,
        stored.key_bytes,
        stored.cipher_code,
        stored.marker,
        stored.plain_size,
        stored.mtime_ns,
        len(stored.packets),
    )
    return fixed + stored.packets


def unpack_material(blob: bytes) -> StoredMaterial:
    if len(blob) < _FIXED.size:
        raise MaterialFormatError("key blob is truncated")
    magic, version, key_bytes, code, marker, size, mtime_ns, n = _FIXED.unpack_from(blob)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise MaterialFormatError("key blob has an unknown magic or version")
    if len(blob) != _FIXED.size + n:
        raise MaterialFormatError("key blob length does not match its packet length")
    return StoredMaterial(key_bytes, code, marker, size, mtime_ns, blob[_FIXED.size :])


def usable_material(stored: StoredMaterial, key: KeyringKey, key_bytes: int) -> KeyMaterial | None:
    """The KeyMaterial of `stored` if it belongs to `key` and `key_bytes`, else None."""
    if stored.key_bytes != key_bytes or stored.cipher_code != AES_CODES.get(key_bytes):
        return None
    try:
        header = parse_header(
            build_header(0, stored.marker, stored.packets, filenames_encrypted=False)
        )
    except (HeaderError, ValueError):
        return None
    if len(header.packets) != 1:
        return None
    packet = header.packets[0]
    if packet.sig != key.sig or packet.cipher_code != stored.cipher_code:
        return None
    fek = unwrap_fek(packet.efek, packet.cipher_code, key)
    # Only what our own writer would produce is reused: the header stays kernel-valid.
    canonical = key_packets(packet.efek, key_bytes, key.sig, packet.salt)
    if len(fek) != key_bytes or canonical != stored.packets:
        return None
    return KeyMaterial(fek=fek, marker=stored.marker, packets=stored.packets)


def read_xattr(path: bytes | int) -> bytes | None:
    """From a path (its last component not followed) or an open file descriptor."""
    try:
        value: bytes = xattr.getxattr(path, XATTR_NAME, symlink=not isinstance(path, int))
    except OSError:
        return None  # absent, unsupported or unreadable: all mean "no stored key"
    return value


def write_xattr(path: bytes | int, blob: bytes) -> OSError | None:
    """Store `blob`; returns the error instead of raising, because failure only means fallback."""
    try:
        # XATTR_NOFOLLOW is for paths; with a descriptor the kernel call rejects it
        xattr.setxattr(path, XATTR_NAME, blob, symlink=not isinstance(path, int))
    except OSError as e:
        return e
    return None


def _inode(path: bytes) -> tuple[int, int]:
    try:
        st = os.lstat(path)
    except OSError:
        return (0, 0)  # vanished: the reader reports it; nothing to match
    return (st.st_dev, st.st_ino)


class KeyStoreError(Exception):
    """The key store file cannot be opened or is not an ecarchive key store."""


class KeyStore:
    """The fallback: an SQLite file with one row per plaintext file.

    Rows are found, in this order, by
      1. the same relative path and the same inode number (the file did not move);
      2. the same inode number, size and mtime (a rename: the inode and its state stayed);
      3. the same relative path, size and mtime (a copy with preserved times, e.g. a restore).
    Inode numbers are used without st_dev, because read-only sources are typically snapshots
    mounted anew for each backup (another st_dev, the same inode numbers); the size and mtime
    check keeps a reused inode number from handing an old key to an unrelated file.
    Rows of files not seen in a run are kept, so backups of parts of a tree do not forget keys.
    """

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS ecarchive_keys ("
        " path BLOB PRIMARY KEY, ino INTEGER NOT NULL, size INTEGER NOT NULL,"
        " mtime_ns INTEGER NOT NULL, material BLOB NOT NULL)",
        "CREATE INDEX IF NOT EXISTS ecarchive_keys_ino ON ecarchive_keys (ino)",
    )

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            # Wrapped keys only, but still nobody else's business: owner-only.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(path, check_same_thread=False)
            for statement in self._SCHEMA:
                self._db.execute(statement)
        except (OSError, sqlite3.Error) as e:
            raise KeyStoreError(f"cannot use key store {path}: {e}") from e

    def lookup(self, rel: bytes, ino: int, size: int, mtime_ns: int) -> bytes | None:
        queries = (
            ("SELECT material FROM ecarchive_keys WHERE path = ? AND ino = ?", (rel, ino)),
            (
                "SELECT material FROM ecarchive_keys WHERE ino = ? AND size = ? AND mtime_ns = ?",
                (ino, size, mtime_ns),
            ),
            (
                "SELECT material FROM ecarchive_keys WHERE path = ? AND size = ? AND mtime_ns = ?",
                (rel, size, mtime_ns),
            ),
        )
        try:
            for sql, args in queries:
                row = self._db.execute(sql, args).fetchone()
                if row is not None:
                    return bytes(row[0])
        except sqlite3.Error as e:
            raise KeyStoreError(f"key store {self.path}: {e}") from e
        return None

    def put(self, rel: bytes, ino: int, size: int, mtime_ns: int, blob: bytes) -> None:
        row = (rel, ino, size, mtime_ns, blob)
        try:
            current = self._db.execute(
                "SELECT path, ino, size, mtime_ns, material FROM ecarchive_keys WHERE path = ?",
                (rel,),
            ).fetchone()
            if current is not None and tuple(current) == row:
                return  # an unchanged store stays byte-identical (it may live in SOURCE)
            # A renamed file leaves a row under its old name; that row now describes nothing.
            self._db.execute(
                "DELETE FROM ecarchive_keys WHERE ino = ? AND path != ? AND size = ? "
                "AND mtime_ns = ?",
                (ino, rel, size, mtime_ns),
            )
            self._db.execute("INSERT OR REPLACE INTO ecarchive_keys VALUES (?, ?, ?, ?, ?)", row)
        except sqlite3.Error as e:
            raise KeyStoreError(f"key store {self.path}: {e}") from e

    def commit(self) -> None:
        try:
            self._db.commit()
        except sqlite3.Error as e:
            raise KeyStoreError(f"cannot save key store {self.path}: {e}") from e

    def close(self) -> None:
        try:
            self._db.commit()
        except sqlite3.Error as e:
            raise KeyStoreError(f"cannot save key store {self.path}: {e}") from e
        finally:
            self._db.close()


@dataclass(slots=True)
class KeyStats:
    reused: int = 0
    fresh: int = 0
    unstable: list[bytes] = field(default_factory=list)


class StableKeys:
    """A KeySource that reuses each file's material from its xattr or the key store."""

    def __init__(
        self,
        key: KeyringKey,
        key_bytes: int,
        reporter: Reporter,
        *,
        store_path: str | None = None,
        rotate_on_change: bool = False,
        root_fd: int | None = None,
    ) -> None:
        self.key = key
        # With SOURCE's descriptor, each file's xattr is reached the way the reader reaches
        # the file (fsio): a directory swapped for a symlink cannot lead the xattr write
        # outside SOURCE. Without it (tests of this class), by path.
        self._dirs = TreeDirs(root_fd) if root_fd is not None else None
        self.key_bytes = key_bytes
        self.reporter = reporter
        self.rotate_on_change = rotate_on_change
        self.stats = KeyStats()
        self._fresh = FreshKeys(key, key_bytes)
        # Packets handed out in this run: `cp -a` and `rsync -X` copy the xattr, and two files
        # must never share a FEK (equal blocks at equal offsets would show).
        self._used: dict[bytes, tuple[int, int]] = {}  # packets -> (st_dev, st_ino)
        self._store: KeyStore | None = None
        if store_path is not None:
            try:
                self._store = KeyStore(store_path)
            except KeyStoreError as e:
                reporter.warn(f"{e}; keys of files without a writable xattr will not be stable")

    def material(self, entry: Entry) -> KeyMaterial:
        assert entry.source is not None, "only FILE entries read from SOURCE have key material"
        if self._dirs is None:
            return self._material(entry, entry.source, _inode(entry.source))
        try:
            handle, name = self._dirs.parent(entry.rel)
            try:
                fd, st = open_regular(name, handle.fd)
            finally:
                handle.release()
        except OSError:
            # Gone or no longer a regular file: the reader warns and skips it; its key is
            # never used, so nothing is stored either.
            return self._fresh.material(entry)
        try:
            return self._material(entry, fd, (st.st_dev, st.st_ino))
        finally:
            os.close(fd)

    def _material(self, entry: Entry, file: bytes | int, inode: tuple[int, int]) -> KeyMaterial:
        found = self._reuse(read_xattr(file), entry, inode)
        if found is not None:
            self.stats.reused += 1
            self._used[found.packets] = inode
            return found
        ino = inode[1]
        blob = self._store_lookup(entry, ino)
        found = self._reuse(blob, entry, inode)
        if found is not None:
            # Moves the key next to the file now that it is writable, else refreshes the row.
            assert blob is not None
            if write_xattr(file, blob) is not None:
                self._store_put(entry, ino, blob)
            self.stats.reused += 1
            self._used[found.packets] = inode
            return found
        fresh = self._fresh.material(entry)
        self._used[fresh.packets] = inode
        self.stats.fresh += 1
        blob = pack_material(
            StoredMaterial(
                key_bytes=self.key_bytes,
                cipher_code=AES_CODES[self.key_bytes],
                marker=fresh.marker,
                plain_size=entry.plain_size,
                mtime_ns=entry.mtime_ns,
                packets=fresh.packets,
            )
        )
        if write_xattr(file, blob) is not None and not self._store_put(entry, ino, blob):
            self.stats.unstable.append(entry.rel)
        return fresh

    def _reuse(
        self, blob: bytes | None, entry: Entry, inode: tuple[int, int]
    ) -> KeyMaterial | None:
        if blob is None:
            return None
        try:
            stored = unpack_material(blob)
        except MaterialFormatError:
            return None
        if self.rotate_on_change and (
            stored.plain_size != entry.plain_size or stored.mtime_ns != entry.mtime_ns
        ):
            return None
        if self._used.get(stored.packets, inode) != inode:
            return None
        return usable_material(stored, self.key, self.key_bytes)

    def _store_lookup(self, entry: Entry, ino: int) -> bytes | None:
        if self._store is None:
            return None
        try:
            return self._store.lookup(entry.rel, ino, entry.plain_size, entry.mtime_ns)
        except KeyStoreError as e:
            self._drop_store(e)
            return None

    def _store_put(self, entry: Entry, ino: int, blob: bytes) -> bool:
        if self._store is None:
            return False
        try:
            self._store.put(entry.rel, ino, entry.plain_size, entry.mtime_ns, blob)
        except KeyStoreError as e:
            self._drop_store(e)
            return False
        return True

    def _drop_store(self, e: KeyStoreError) -> None:
        self.reporter.warn(f"{e}; continuing without the key store")
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(KeyStoreError):
                store.close()

    def flush(self) -> None:
        """Save the key store now: a long-lived user (a mount) must not lose the keys it has
        handed out when it is killed before close()."""
        if self._store is not None:
            try:
                self._store.commit()
            except KeyStoreError as e:
                self._drop_store(e)

    def close(self) -> None:
        """Save the key store and name, once, the files whose keys could not be kept."""
        if self._dirs is not None:
            self._dirs.close()
        if self._store is not None:
            try:
                self._store.close()
            except KeyStoreError as e:
                self.reporter.warn(f"{e}; keys made in this run were not saved")
            self._store = None
        unstable = self.stats.unstable
        if unstable:
            shown = ", ".join(os.fsdecode(p) for p in unstable[:UNSTABLE_LISTED])
            more = len(unstable) - UNSTABLE_LISTED
            suffix = f" and {more} more" if more > 0 else ""
            self.reporter.warn(
                f"--stable-keys: cannot store keys of {len(unstable)} file"
                f"{'s' if len(unstable) != 1 else ''} ({shown}{suffix}): no writable "
                f"{XATTR_NAME} xattr; give --key-store PATH to keep them",
                affects_exit=False,
            )


def key_source(
    key: KeyringKey,
    key_bytes: int,
    reporter: Reporter,
    *,
    stable: bool,
    store_path: str | None = None,
    rotate_on_change: bool = False,
    root_fd: int | None = None,
) -> FreshKeys | StableKeys:
    """Where `create` and `mount` take each file's key material: fresh, or kept (xattr/store)."""
    if not stable:
        return FreshKeys(key, key_bytes)
    return StableKeys(
        key,
        key_bytes,
        reporter,
        store_path=store_path,
        rotate_on_change=rotate_on_change,
        root_fd=root_fd,
    )
