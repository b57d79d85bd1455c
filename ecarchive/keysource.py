"""Where each file's key material comes from. Sinks and the reader never know which source."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

from .ecryptfs.header import key_packets, wrap_fek
from .ecryptfs.keys import KeyringKey
from .model import Entry


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

    def material(self, entry: Entry) -> KeyMaterial:
        fek = secrets.token_bytes(self.key_bytes)
        packets = key_packets(wrap_fek(fek, self.key), self.key_bytes, self.key.sig)
        return KeyMaterial(fek=fek, marker=secrets.randbits(32), packets=packets)
