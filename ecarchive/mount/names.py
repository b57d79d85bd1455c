"""Lower names of the view: encrypted as `create` encrypts them, decrypted for lookups.

A lookup accepts exactly the spelling readdir shows. eCryptfs's filename encoding ignores
some trailing bits and maps unknown characters to 0, so several lower spellings decrypt to
the same plaintext name; only the one that re-encrypts to itself exists in the view, as only
that one exists in a copy of it.
"""

from __future__ import annotations

from functools import lru_cache

from ..ecryptfs.constants import MAX_NAME_BYTES, MAX_SYMLINK_TARGET_BYTES, NAME_MAX, PATH_MAX
from ..ecryptfs.keys import KeyringKey
from ..ecryptfs.names import NameDecodeError, decrypt_name, encrypt_name

# Names are looked up far more often than there are distinct ones (every path walk repeats its
# directories); bounded so a huge tree cannot grow the caches without limit.
_CACHED_NAMES = 1 << 16
_FORBIDDEN = (b".", b"..")


class Names:
    """Plaintext name ↔ lower name under one FNEK (or names in clear when `fnek` is None)."""

    def __init__(self, fnek: KeyringKey | None, key_bytes: int) -> None:
        self.encrypted = fnek is not None
        self.name_limit = MAX_NAME_BYTES if self.encrypted else NAME_MAX
        self.target_limit = MAX_SYMLINK_TARGET_BYTES if self.encrypted else PATH_MAX - 1
        if fnek is None:
            self.lower = _same
            self.plain = _clear_plain
            return
        key: KeyringKey = fnek

        @lru_cache(maxsize=_CACHED_NAMES)
        def lower(plain: bytes) -> bytes:
            return encrypt_name(plain, key, key_bytes)

        @lru_cache(maxsize=_CACHED_NAMES)
        def plain(name: bytes) -> bytes | None:
            try:
                text = decrypt_name(name, key, key_bytes)
            except NameDecodeError:
                return None
            if not _valid(text) or len(text) > MAX_NAME_BYTES or lower(text) != name:
                return None
            return text

        self.lower = lower
        self.plain = plain

    def target(self, plain_target: bytes) -> bytes | None:
        """The stored form of a symlink target, None when eCryptfs cannot store it."""
        if not plain_target or len(plain_target) > self.target_limit:
            return None
        return self.lower(plain_target)


def _same(name: bytes) -> bytes:
    return name


def _clear_plain(name: bytes) -> bytes | None:
    return name if _valid(name) else None


def _valid(name: bytes) -> bool:
    return bool(name) and b"/" not in name and b"\0" not in name and name not in _FORBIDDEN
