"""System use entries (SUSP 1.12, RRIP 1.12) of one directory record, gathered over the record
and its continuation areas. Every length is checked against the bytes it lies in."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from ...iso.rrip import (
    CE_LEN,
    COMPONENT_CONTINUE,
    COMPONENT_CURRENT,
    COMPONENT_HEADER,
    COMPONENT_PARENT,
    COMPONENT_ROOT,
    ENTRY_HEADER,
    FLAGGED_HEADER,
    NM_CONTINUE,
    NM_CURRENT,
    NM_PARENT,
    PN_LEN,
    PX_LEN,
    PX_LEN_RRIP_110,
    SIG_CE,
    SIG_CL,
    SIG_NM,
    SIG_PN,
    SIG_PX,
    SIG_RE,
    SIG_SL,
    SIG_ST,
    SIG_TF,
    SL_CONTINUE,
    TF_CREATION,
    TF_LONG_FORM,
    TF_MODIFY,
)
from .dates import DATE7_LEN, DATE17_LEN, date7_ns, date17_ns

NAME_MAX = 255  # longer cannot be created on Linux anyway
CL_LEN = 12  # RRIP 4.1.5.1: a both-endian block number
TARGET_MAX = 4096  # PATH_MAX: a longer target cannot be created
_U32 = struct.Struct("<I").unpack_from  # the little-endian half of a both-endian field


class Damage(Exception):
    """A record or entry that cannot be trusted; the message says what is wrong."""


@dataclass(slots=True)
class RockRidge:
    """What a record's entries say; None where no entry said it."""

    name: bytearray = field(default_factory=bytearray)
    name_open: bool = False  # an NM with CONTINUE was the last one
    has_name: bool = False
    mode: int | None = None
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    serial: int | None = None
    mtime_ns: int | None = None
    target: bytearray | None = None
    sl_separator: bool = False  # the next component is preceded by '/'
    rdev: int = 0
    continuation: tuple[int, int, int] | None = None  # (block, offset, length) of a CE
    relocated: bool = False  # RE: the real record is elsewhere (a CL points here)
    child_link: int | None = None  # CL: the block of a relocated directory

    def parse(self, area: bytes | memoryview) -> None:
        """Take the entries of one system use area (record tail or continuation area)."""
        self.continuation = None
        pos = 0
        end = len(area)
        while end - pos >= ENTRY_HEADER:
            sig = bytes(area[pos : pos + 2])
            length = area[pos + 2]
            if length < ENTRY_HEADER or length > end - pos:
                if not any(area[pos:end]):
                    return  # zero padding after the last entry
                raise Damage(f"system use entry {escape_sig(sig)} of bad length {length}")
            data = area[pos + ENTRY_HEADER : pos + length]
            if sig == SIG_ST:
                return
            self._entry(sig, data, length)
            pos += length

    def _entry(self, sig: bytes, data: bytes | memoryview, length: int) -> None:
        if sig == SIG_NM:
            self._nm(data)
        elif sig == SIG_PX:
            if length not in (PX_LEN, PX_LEN_RRIP_110):
                raise Damage(f"PX entry of bad length {length}")
            self.mode, self.nlink, self.uid, self.gid = (_U32(data, i * 8)[0] for i in range(4))
            if length == PX_LEN:
                self.serial = _U32(data, 32)[0]
        elif sig == SIG_TF:
            self._tf(data)
        elif sig == SIG_SL:
            self._sl(data)
        elif sig == SIG_PN:
            if length != PN_LEN:
                raise Damage(f"PN entry of bad length {length}")
            self.rdev = _device(_U32(data, 0)[0], _U32(data, 8)[0])
        elif sig == SIG_CE:
            if length != CE_LEN:
                raise Damage(f"CE entry of bad length {length}")
            self.continuation = (_U32(data, 0)[0], _U32(data, 8)[0], _U32(data, 16)[0])
        elif sig == SIG_RE:
            self.relocated = True
        elif sig == SIG_CL:
            if length != CL_LEN:
                raise Damage(f"CL entry of bad length {length}")
            self.child_link = _U32(data, 0)[0]
        # SP, ER, ES, PD, RR, SF, PL and unknown entries change nothing read here

    def _nm(self, data: bytes | memoryview) -> None:
        if len(data) < FLAGGED_HEADER - ENTRY_HEADER:
            raise Damage("NM entry without flags")
        flags = data[0]
        if flags & (NM_CURRENT | NM_PARENT):
            raise Damage("NM entry names '.' or '..'")
        if self.has_name and not self.name_open:
            raise Damage("a second Rock Ridge name (NM) after a complete one")
        self.name += data[1:]
        self.has_name = True
        self.name_open = bool(flags & NM_CONTINUE)
        if len(self.name) > NAME_MAX:
            raise Damage(f"Rock Ridge name longer than {NAME_MAX} bytes")

    def _tf(self, data: bytes | memoryview) -> None:
        if not data:
            raise Damage("TF entry without flags")
        flags = data[0]
        size = DATE17_LEN if flags & TF_LONG_FORM else DATE7_LEN
        # MODIFY follows CREATION when both are recorded
        at = 1 + (size if flags & TF_CREATION else 0)
        if flags & TF_MODIFY:
            if at + size > len(data):
                raise Damage("TF entry shorter than its flags say")
            stamp = bytes(data[at : at + size])
            self.mtime_ns = date17_ns(stamp) if size == DATE17_LEN else date7_ns(stamp)

    def _sl(self, data: bytes | memoryview) -> None:
        if not data:
            raise Damage("SL entry without flags")
        if self.target is None:
            self.target = bytearray()
        pos = 1
        while pos < len(data):
            if len(data) - pos < COMPONENT_HEADER:
                raise Damage("SL component header cut by its entry's end")
            flags, size = data[pos], data[pos + 1]
            pos += COMPONENT_HEADER
            if size > len(data) - pos:
                raise Damage(f"SL component of {size} bytes runs past its entry")
            self._component(flags, bytes(data[pos : pos + size]))
            pos += size
        if not data[0] & SL_CONTINUE:
            self.sl_separator = False
        if len(self.target) >= TARGET_MAX:
            raise Damage(f"symlink target of {TARGET_MAX} bytes or more")

    def _component(self, flags: int, text: bytes) -> None:
        assert self.target is not None
        if flags & COMPONENT_ROOT:
            self.target += b"/"
            self.sl_separator = False
            return
        if self.sl_separator:
            self.target += b"/"
        if flags & COMPONENT_CURRENT:
            text = b"."
        elif flags & COMPONENT_PARENT:
            text = b".."
        self.target += text
        # Like Linux, a component without CONTINUE is followed by '/' if more follow, even
        # in the next SL entry (ecarchive never leaves that case to readers, see rrip.py)
        self.sl_separator = not flags & COMPONENT_CONTINUE


def _device(high: int, low: int) -> int:
    """Writers disagree: ecarchive and genisoimage put (major, minor) in (high, low), old-style
    8:8 numbers all in low; xorriso puts a Linux dev_t's halves. A low field above 16 bits
    with high 0 can only be a whole dev_t (Linux would take it as 8:8 and show garbage)."""
    if high == 0 and low & ~0xFF:
        return low if low > 0xFFFF else os.makedev(low >> 8, low & 0xFF)
    return os.makedev(high, low)


def escape_sig(sig: bytes) -> str:
    return sig.decode("ascii") if sig.isalpha() else sig.hex()
