"""The Rock Ridge details of the forward-only ISO reader (ecarchive/read/iso) where readers
disagree: symlink joins across SL entries, device numbers of each writer."""

from __future__ import annotations

import os

from ecarchive.read.iso.susp import RockRidge


def _target(*sl: bytes) -> bytes | None:
    rr = RockRidge()
    for entry in sl:
        rr.parse(b"SL" + bytes((len(entry) + 4, 1)) + entry)
    return None if rr.target is None else bytes(rr.target)


def test_symlink_components_join_as_linux_does() -> None:
    # SL flags, then (component flags, length, text)...
    assert _target(b"\x00\x08\x00\x00\x03usr\x00\x03lib") == b"/usr/lib"
    # a component continued into the next SL entry is joined without '/'
    assert _target(b"\x01\x02\x00\x01\x02ab", b"\x00\x00\x02cd\x04\x00") == b"./abcd/.."
    # an entry boundary between whole components is a '/' (Linux; libarchive drops it)
    assert _target(b"\x01\x00\x01a", b"\x00\x00\x01b") == b"a/b"


def _pn(high: int, low: int) -> int:
    data = high.to_bytes(4, "little") * 2 + low.to_bytes(4, "little") * 2
    rr = RockRidge()
    rr.parse(b"PN" + bytes((20, 1)) + data)
    return rr.rdev


def test_device_numbers_of_every_writer() -> None:
    assert _pn(0, 0x0405) == os.makedev(4, 5)  # ecarchive, old-style 8:8
    assert _pn(300, 70000) == os.makedev(300, 70000)  # ecarchive, genisoimage: (major, minor)
    assert _pn(0, os.makedev(300, 70000)) == os.makedev(300, 70000)  # xorriso: dev_t halves
