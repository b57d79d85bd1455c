"""SUSP 1.12 and RRIP 1.12 system use entries, and how they are split between a directory
record and its continuation area.

Only what the Linux isofs driver, libarchive, libisofs and isoinfo need is written: SP and ER
(root only), CE, PX (44-byte form with a per-inode serial), TF (MODIFY, ACCESS, ATTRIBUTES in
the 7-byte form: Linux before 6.16 misreads LONG_FORM), PN, NM and SL. No RR entry (it makes
Linux skip entries), no relocation entries.
"""

from __future__ import annotations

from .encode import both32, date7

ENTRY_MAX = 255  # the SUSP length field is one byte
ENTRY_HEADER = 4  # signature, length, version
FLAGGED_HEADER = 5  # NM and SL add a flags byte
NAME_CHUNK_MAX = ENTRY_MAX - FLAGGED_HEADER  # 250 name bytes per NM entry
COMPONENT_HEADER = 2  # component flags, text length
# Pieces of a long component leave room for the joiner of sl_entries in a full entry.
COMPONENT_TEXT_MAX = NAME_CHUNK_MAX - 2 * COMPONENT_HEADER  # 246

CE_LEN = 28
PX_LEN = 44
TF_LEN = 26
PN_LEN = 20
SP_LEN = 7

# Entry signatures (SUSP 1.12 section 5, RRIP 1.12 section 4.1)
SIG_CE = b"CE"
SIG_SP = b"SP"
SIG_ST = b"ST"
SIG_ER = b"ER"
SIG_PX = b"PX"
SIG_PN = b"PN"
SIG_SL = b"SL"
SIG_NM = b"NM"
SIG_TF = b"TF"
SIG_CL = b"CL"
SIG_RE = b"RE"
SP_CHECK = b"\xbe\xef"  # SP check bytes; LEN_SKP follows them
PX_LEN_RRIP_110 = 36  # PX without the serial number (RRIP 1.10, older mkisofs)

NM_CONTINUE = 0x01
NM_CURRENT = 0x02
NM_PARENT = 0x04
SL_CONTINUE = 0x01
COMPONENT_CONTINUE = 0x01
COMPONENT_CURRENT = 0x02
COMPONENT_PARENT = 0x04
COMPONENT_ROOT = 0x08

TF_CREATION = 0x01
TF_MODIFY = 0x02
TF_LONG_FORM = 0x80  # 17-byte dates instead of 7-byte ones
TF_MODIFY_ACCESS_ATTRIBUTES = 0x0E

_JOINER = bytes((COMPONENT_CONTINUE, 0))  # empty component that continues
_JOINER_LEN = len(_JOINER)

ER_ID = b"RRIP_1991A"
ER_DESCRIPTOR = (
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS"
)
ER_SOURCE = (
    b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN "
    b"PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION."
)
ER_VERSION = 1


def _entry(signature: bytes, data: bytes) -> bytes:
    length = ENTRY_HEADER + len(data)
    if length > ENTRY_MAX:
        raise ValueError(f"SUSP entry {signature!r} of {length} bytes exceeds {ENTRY_MAX}")
    return signature + bytes((length, 1)) + data


def sp() -> bytes:
    """Root-only marker that enables Rock Ridge; LEN_SKP 0."""
    return _entry(SIG_SP, SP_CHECK + b"\x00")


def er() -> bytes:
    head = bytes((len(ER_ID), len(ER_DESCRIPTOR), len(ER_SOURCE), ER_VERSION))
    return _entry(SIG_ER, head + ER_ID + ER_DESCRIPTOR + ER_SOURCE)


def ce(lba: int, offset: int, length: int) -> bytes:
    return _entry(SIG_CE, both32(lba) + both32(offset) + both32(length))


def px(mode: int, nlink: int, uid: int, gid: int, serial: int) -> bytes:
    return _entry(SIG_PX, both32(mode) + both32(nlink) + both32(uid) + both32(gid) + both32(serial))


def tf(mtime_ns: int) -> bytes:
    # ctime and atime are not in the plan; mtime is the only time eCryptfs restores anyway.
    stamp = date7(mtime_ns)
    return _entry(SIG_TF, bytes((TF_MODIFY_ACCESS_ATTRIBUTES,)) + stamp * 3)


def pn(major: int, minor: int) -> bytes:
    return _entry(SIG_PN, both32(major) + both32(minor))


def nm_entries(name: bytes, first_chunk: int) -> list[bytes]:
    """NM entries for `name`: the first carries up to `first_chunk` bytes, then 250 each."""
    out = []
    pos = 0
    chunk = first_chunk
    while pos < len(name):
        piece = name[pos : pos + chunk]
        pos += len(piece)
        flags = NM_CONTINUE if pos < len(name) else 0
        out.append(_entry(SIG_NM, bytes((flags,)) + piece))
        chunk = NAME_CHUNK_MAX
    return out


def _components(target: bytes) -> list[bytes]:
    """Component records of a symlink target; long components are cut with CONTINUE."""
    records = []
    parts = target.split(b"/")
    if target.startswith(b"/"):
        records.append(bytes((COMPONENT_ROOT, 0)))
        parts = parts[1:]
        if parts == [b""]:  # the target "/" is the root alone
            parts = []
    for part in parts:
        if part == b".":
            records.append(bytes((COMPONENT_CURRENT, 0)))
        elif part == b"..":
            records.append(bytes((COMPONENT_PARENT, 0)))
        else:
            # Empty parts stay as empty components so "a//b" and "a/" round-trip.
            step = COMPONENT_TEXT_MAX
            pieces = [part[i : i + step] for i in range(0, len(part), step)] or [b""]
            for index, piece in enumerate(pieces):
                flags = COMPONENT_CONTINUE if index < len(pieces) - 1 else 0
                records.append(bytes((flags, len(piece))) + piece)
    return records


def sl_entries(target: bytes) -> list[bytes]:
    """SL entries of at most 255 bytes; every entry but the last has SL flag CONTINUE.

    Readers disagree on what an entry boundary means: Linux adds '/' after the last
    component of a continued entry, libarchive never does. So no boundary is left between
    two components: each continued entry ends in a component with CONTINUE set, if need be
    an empty one, which every reader joins without a '/'.
    """
    groups: list[list[bytes]] = [[]]
    used = 0
    for record in _components(target):
        if used + len(record) + _JOINER_LEN > NAME_CHUNK_MAX:
            if not groups[-1][-1][0] & COMPONENT_CONTINUE:
                groups[-1].append(_JOINER)
            groups.append([])
            used = 0
        groups[-1].append(record)
        used += len(record)
    out = []
    for index, group in enumerate(groups):
        flags = SL_CONTINUE if index < len(groups) - 1 else 0
        out.append(_entry(SIG_SL, bytes((flags,)) + b"".join(group)))
    return out


def split_system_use(
    head: list[bytes], name: bytes, tail: list[bytes], capacity: int
) -> tuple[list[bytes], list[bytes]]:
    """Divide a record's entries between the record (`capacity` bytes) and a continuation.

    `head` entries (PX, TF, PN) are atomic and stay in the record; the name may be cut into
    NM pieces; `tail` entries (SL) stay whole. When a continuation is needed the caller adds
    a CE entry, so CE_LEN bytes of the record are kept free for it.
    """
    used = sum(map(len, head))
    name_bytes = len(name) + FLAGGED_HEADER * -(-len(name) // NAME_CHUNK_MAX)
    if used + name_bytes + sum(map(len, tail)) <= capacity:
        return head + nm_entries(name, NAME_CHUNK_MAX) + tail, []
    budget = capacity - CE_LEN - used
    if budget < 0:
        raise ValueError("fixed system use entries do not fit in a directory record")
    record = list(head)
    rest: list[bytes] = []
    if name:
        first = min(len(name), budget - FLAGGED_HEADER, NAME_CHUNK_MAX)
        if first > 0:
            pieces = nm_entries(name, first)
            record.append(pieces[0])
            budget -= len(pieces[0])
            rest.extend(pieces[1:])
        else:
            rest.extend(nm_entries(name, NAME_CHUNK_MAX))
    for entry in tail:
        if not rest and len(entry) <= budget:
            record.append(entry)
            budget -= len(entry)
        else:
            rest.append(entry)
    return record, rest

