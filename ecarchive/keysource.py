"""Where each file's key material comes from. Sinks and the reader never know which source."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

from .ecryptfs.header import packet_frame, wrap_fek, wrap_feks
from .ecryptfs.keys import KeyringKey
from .model import Entry

# FEKs are drawn and wrapped this many at a time: one CSPRNG call and one ECB call per batch
# instead of per file, which is most of the per-file key cost on trees of small files.
_BATCH = 256
_MARKER_BYTES = 4


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """The random parts of one lower file's header (write_ecryptfs_marker, write_tag_3_packet)."""

    fek: bytes
    marker: int
    packets: bytes  # tag 3 + tag 11 pair


class KeySource(Protocol):
    key_bytes: int

    def material(self, entry: Entry) -> KeyMaterial: ...


class FreshKeys:
    """A new random FEK and marker for every file, as the kernel does at file creation."""

    def __init__(self, key: KeyringKey, key_bytes: int) -> None:
        self.key = key
        self.key_bytes = key_bytes
        self._efek_len = len(wrap_fek(bytes(key_bytes), key))
        self._head, self._tail = packet_frame(self._efek_len, key_bytes, key.sig)
        self._pending: list[KeyMaterial] = []

    def material(self, entry: Entry) -> KeyMaterial:
        if not self._pending:
            self._refill()
        return self._pending.pop()

    def _refill(self) -> None:
        n, size = self.key_bytes, self._efek_len
        feks = secrets.token_bytes(n * _BATCH)
        markers = secrets.token_bytes(_MARKER_BYTES * _BATCH)
        efeks = wrap_feks(feks, n, self.key)
        head, tail = self._head, self._tail
        self._pending = [
            KeyMaterial(
                fek=feks[i * n : (i + 1) * n],
                marker=int.from_bytes(markers[i * _MARKER_BYTES : (i + 1) * _MARKER_BYTES]),
                packets=head + efeks[i * size : (i + 1) * size] + tail,
            )
            for i in range(_BATCH)
        ]
