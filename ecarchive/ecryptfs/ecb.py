"""AES-ECB over whole blocks with one reusable context per key.

The kernel wraps file keys (write_tag_3_packet), names (ecryptfs_encrypt_filename) and, in
ecryptfs-utils, mount passphrases (ecryptfs_wrap_passphrase) with `ecb(aes)`. Building a
`Cipher` costs ~11 µs, more than the work itself for a key or a name; ECB keeps no state
between update() calls over whole blocks, so one context per key serves every call.
"""

from __future__ import annotations

import threading

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from .constants import AES_BLOCK

_MAX_CACHED_KEYS = 8  # file key, FNEK and a wrapping key, per direction, with room to spare


class _Contexts(threading.local):
    def __init__(self) -> None:
        self.contexts: dict[tuple[bytes, bool], CipherContext] = {}

    def get(self, key: bytes, decrypt: bool) -> CipherContext:
        ctx = self.contexts.get((key, decrypt))
        if ctx is None:
            if len(self.contexts) >= _MAX_CACHED_KEYS:
                self.contexts.clear()
            cipher = Cipher(algorithms.AES(key), modes.ECB())
            ctx = cipher.decryptor() if decrypt else cipher.encryptor()
            self.contexts[(key, decrypt)] = ctx
        return ctx


_contexts = _Contexts()


def ecb(key: bytes, data: bytes, *, decrypt: bool) -> bytes:
    """AES-ECB of `data` (a whole number of blocks) under `key`."""
    if len(data) % AES_BLOCK:
        raise ValueError(f"ECB input of {len(data)} bytes is not a whole number of blocks")
    return _contexts.get(key, decrypt).update(data)
