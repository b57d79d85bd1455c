"""The ISO writer's bytes, decoded the way the Linux isofs driver decodes them.

The decoder below follows fs/isofs (rock.c get_rock_ridge_filename, get_symlink_chunk,
rock_continue) and libarchive's SL rule, and checks every structural rule of the reference:
records inside one sector, even lengths, CE areas inside one sector and after their
directory, at most 31 hops, L and M path tables alike, both-endian halves equal.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecarchive.iso import (
    IsoBodySizeError,
    IsoLabelError,
    IsoLayout,
    IsoPlanError,
    plan_iso,
    write_iso,
)
from ecarchive.iso.encode import base36, date7, date17
from ecarchive.model import Entry, Kind

SECTOR = 2048
T0 = 1_600_000_000 * 10**9
NAME_CHARS = "-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"


def E(kind: Kind, path: bytes, **kw: object) -> Entry:
    base: dict[str, object] = dict(mode=0o644, uid=1000, gid=100, uname="", gname="",
                                   mtime_ns=T0)
    base.update(kw)
    return Entry(kind, path, **base)  # type: ignore[arg-type]


def body_of(data: dict[bytes, bytes]):  # type: ignore[no-untyped-def]
    def body(entry: Entry) -> Iterator[bytes]:
        content = data.get(entry.path, b"")
        for i in range(0, len(content), 1000):
            yield content[i : i + 1000]
    return body


def image_of(entries: list[Entry], data: dict[bytes, bytes] | None = None) -> tuple[IsoLayout, bytes]:
    layout = plan_iso(entries, volume_label="T", volume_time_ns=T0)
    out = io.BytesIO()
    write_iso(layout, body_of(data or {}), out)
    return layout, out.getvalue()


# --- a decoder with Linux's rules ---------------------------------------------------------------


def both32(b: bytes, off: int) -> int:
    le = int.from_bytes(b[off : off + 4], "little")
    assert le == int.from_bytes(b[off + 4 : off + 8], "big"), "both-endian halves differ"
    return le


@dataclass
class Decoded:
    name: bytes
    mode: int
    nlink: int
    uid: int
    gid: int
    serial: int
    size: int
    extents: list[tuple[int, int]]
    target: bytes | None
    target_libarchive: bytes | None
    rdev: tuple[int, int] | None
    mtime: bytes
    children: dict[bytes, Decoded] = field(default_factory=dict)


def susp_entries(img: bytes, area: bytes, first_dir_end: int, data_lba: int) -> list[bytes]:
    """All SUSP entries of one record, following CE like rock_continue (max 31 hops)."""
    out = []
    hops = 0
    while True:
        cont = None
        pos = 0
        while len(area) - pos > 2:
            sig, length = area[pos : pos + 2], area[pos + 2]
            if length < 4:
                break
            entry = area[pos : pos + length]
            assert len(entry) == length, "entry runs past its area"
            if sig == b"CE":
                cont = (both32(entry, 4), both32(entry, 12), both32(entry, 20))
            else:
                out.append(entry)
            pos += length
        if cont is None:
            return out
        hops += 1
        assert hops <= 31
        block, offset, length = cont
        assert offset + length <= SECTOR, "CE area crosses a sector"
        assert first_dir_end <= block < data_lba, "CE area not between its directory and data"
        area = img[block * SECTOR + offset : block * SECTOR + offset + length]


def linux_name(entries: list[bytes]) -> bytes:
    name = b""
    for e in entries:
        if e[:2] != b"NM":
            continue
        assert e[4] & ~1 == 0
        chunk = e[5:]
        if len(name) + len(chunk) >= 254:
            break  # Linux truncates here
        name += chunk
    return name


def linux_target(entries: list[bytes]) -> bytes:
    out = bytearray()
    for e in entries:
        if e[:2] != b"SL":
            continue
        entry_flags, comps = e[4], e[5:]
        pos = 0
        while len(comps) - pos > 1:
            flags, length = comps[pos], comps[pos + 1]
            text = comps[pos + 2 : pos + 2 + length]
            assert len(text) == length
            root = False
            kind = flags & ~1
            if kind == 0:
                out += text
            elif kind == 2:
                out += b"."
            elif kind == 4:
                out += b".."
            elif kind == 8:
                out += b"/"
                root = True
            else:
                raise AssertionError(f"component flag {flags}")
            pos += 2 + length
            if len(comps) - pos < 2:
                if not root and entry_flags & 1 and not flags & 1:
                    out += b"/"
                break
            if not root and not flags & 1:
                out += b"/"
    assert len(out) <= 4095
    return bytes(out)


def libarchive_target(entries: list[bytes]) -> bytes:
    """libarchive parse_rockridge_SL1: the separator restarts with every SL entry."""
    out = bytearray()
    for e in entries:
        if e[:2] != b"SL":
            continue
        comps = e[5:]
        separator = b""
        pos = 0
        while len(comps) - pos >= 2:
            flags, length = comps[pos], comps[pos + 1]
            out += separator
            separator = b"/"
            if flags in (0, 1):
                out += comps[pos + 2 : pos + 2 + length]
                if flags == 1:
                    separator = b""
            elif flags == 2:
                out += b"."
            elif flags == 4:
                out += b".."
            elif flags == 8:
                out += b"/"
                separator = b""
            pos += 2 + length
    return bytes(out)


def read_records(img: bytes, lba: int, size: int) -> list[bytes]:
    assert size % SECTOR == 0
    records = []
    for block in range(lba, lba + size // SECTOR):
        sector = img[block * SECTOR : (block + 1) * SECTOR]
        pos = 0
        while pos < SECTOR and sector[pos]:
            length = sector[pos]
            assert length % 2 == 0 and 34 <= length <= 254
            assert pos + length <= SECTOR, "record crosses a sector"
            records.append(sector[pos : pos + length])
            pos += length
        assert not any(sector[pos:]), "garbage after the last record of a sector"
    return records


def decode(img: bytes, layout: IsoLayout) -> Decoded:
    assert len(img) == layout.size
    pvd = img[16 * SECTOR : 17 * SECTOR]
    assert pvd[:7] == b"\x01CD001\x01"
    assert both32(pvd, 80) * SECTOR == len(img)
    assert img[17 * SECTOR : 17 * SECTOR + 7] == b"\xffCD001\x01"
    _check_path_tables(img, pvd)
    root_record = pvd[156 : 156 + 34]
    root = _decode_dir(img, layout, both32(root_record, 2), both32(root_record, 10), root=True)
    return root


def _check_path_tables(img: bytes, pvd: bytes) -> None:
    size = both32(pvd, 132)
    l_lba = int.from_bytes(pvd[140:144], "little")
    m_lba = int.from_bytes(pvd[148:152], "big")
    table_l = img[l_lba * SECTOR : l_lba * SECTOR + size]
    table_m = img[m_lba * SECTOR : m_lba * SECTOR + size]
    pos = 0
    previous: tuple[int, bytes] = (0, b"")
    while pos < size:
        n = table_l[pos]
        assert table_l[pos : pos + 2] == table_m[pos : pos + 2]
        assert int.from_bytes(table_l[pos + 2 : pos + 6], "little") == int.from_bytes(
            table_m[pos + 2 : pos + 6], "big")
        parent = int.from_bytes(table_l[pos + 6 : pos + 8], "little")
        assert parent == int.from_bytes(table_m[pos + 6 : pos + 8], "big")
        ident = table_l[pos + 8 : pos + 8 + n]
        assert (parent, ident) >= previous or parent > previous[0]
        previous = (parent, ident)
        pos += 8 + n + (n & 1)


def _record_fields(rec: bytes) -> tuple[int, int, int, bytes, bytes]:
    lba, size, flags = both32(rec, 2), both32(rec, 10), rec[25]
    assert flags & ~0x82 == 0, "only directory and multi-extent flags are written"
    assert rec[26] == rec[27] == 0
    n = rec[32]
    ident = rec[33 : 33 + n]
    su_start = 33 + n + (1 - n % 2)
    return lba, size, flags, ident, rec[su_start:]


def _decode_dir(img: bytes, layout: IsoLayout, lba: int, size: int, *, root: bool = False,
                ) -> Decoded:
    records = read_records(img, lba, size)
    dir_end = lba + size // SECTOR
    dot = records[0]
    d_lba, d_size, _, ident, su = _record_fields(dot)
    assert (ident, d_lba, d_size) == (b"\x00", lba, size)
    if root:
        assert su[:7] == b"SP\x07\x01\xbe\xef\x00"
    entries = susp_entries(img, su, dir_end, layout.data_lba)
    if root:
        assert any(e[:2] == b"ER" and b"RRIP_1991A" in e for e in entries)
    me = _decoded(b"", entries, d_size, [(d_lba, d_size)])
    assert _record_fields(records[1])[3] == b"\x01"
    sections: list[tuple[int, int]] = []
    for rec in records[2:]:
        r_lba, r_size, flags, ident, su = _record_fields(rec)
        entries = susp_entries(img, su, dir_end, layout.data_lba)
        sections.append((r_lba, r_size))
        if flags & 0x80:
            continue  # multi-extent: more sections follow with the same name and RR data
        child = _decoded(linux_name(entries), entries, sum(s for _, s in sections), sections)
        sections = []
        if flags & 0x02:
            sub = _decode_dir(img, layout, r_lba, r_size)
            assert (sub.mode, sub.nlink, sub.mtime) == (child.mode, child.nlink, child.mtime)
            child.children = sub.children
        assert child.name not in me.children
        me.children[child.name] = child
    assert not sections
    return me


def _decoded(name: bytes, entries: list[bytes], size: int, extents: list[tuple[int, int]]
             ) -> Decoded:
    px = next(e for e in entries if e[:2] == b"PX")
    tf = next(e for e in entries if e[:2] == b"TF")
    assert len(px) == 44 and tf[4] == 0x0E and len(tf) == 26
    pn = next((e for e in entries if e[:2] == b"PN"), None)
    is_link = any(e[:2] == b"SL" for e in entries)
    return Decoded(
        name=name, mode=both32(px, 4), nlink=both32(px, 12), uid=both32(px, 20),
        gid=both32(px, 28), serial=both32(px, 36), size=size, extents=extents,
        target=linux_target(entries) if is_link else None,
        target_libarchive=libarchive_target(entries) if is_link else None,
        rdev=(both32(pn, 4), both32(pn, 12)) if pn else None, mtime=tf[5:12],
    )


def linux_rdev(node: Decoded) -> tuple[int, int]:
    """rock.c: an old-style number in the low word when the high word is 0."""
    assert node.rdev is not None
    high, low = node.rdev
    if high == 0 and low & ~0xFF:
        return low >> 8, low & 0xFF
    return high, low


def lookup(root: Decoded, path: bytes) -> Decoded:
    node = root
    for part in path.split(b"/"):
        node = node.children[part]
    return node


def file_bytes(img: bytes, node: Decoded) -> bytes:
    return b"".join(img[lba * SECTOR : lba * SECTOR + size] for lba, size in node.extents)


# --- tests --------------------------------------------------------------------------------------


def test_every_kind_decodes_as_planned() -> None:
    data = {b"d/f": b"x" * 5000, b"RESTORE.txt": b"restore\n"}
    entries = [
        E(Kind.FILE, b"RESTORE.txt", size=8),
        E(Kind.DIR, b"d", mode=0o2750),
        E(Kind.FILE, b"d/f", size=5000, nlink=2, mode=0o4755),
        E(Kind.HARDLINK, b"d/g", link_target=b"d/f", nlink=2, mode=0o4755),
        E(Kind.SYMLINK, b"d/l", link_target=b"/abs/../x/./y", mode=0o777),
        E(Kind.FIFO, b"d/p"),
        E(Kind.CHAR, b"d/c", rdev=(1 << 8) | 3),
        E(Kind.BLOCK, b"d/b", rdev=os.makedev(300, 7)),
        E(Kind.BLOCK, b"d/big", rdev=os.makedev(5000, 70000)),
        E(Kind.DIR, b"d/e", mode=0o1777, mtime_ns=0),
    ]
    layout, img = image_of(entries, data)
    root = decode(img, layout)
    f, g = lookup(root, b"d/f"), lookup(root, b"d/g")
    assert f.mode == stat.S_IFREG | 0o4755 and f.nlink == g.nlink == 2
    assert f.extents == g.extents and f.serial == g.serial
    assert file_bytes(img, f) == data[b"d/f"]
    assert lookup(root, b"d").mode == stat.S_IFDIR | 0o2750
    assert lookup(root, b"d").nlink == 3  # '.', its name in the parent, one subdirectory
    assert lookup(root, b"d/l").target == b"/abs/../x/./y"
    assert lookup(root, b"d/p").mode == stat.S_IFIFO | 0o644
    assert lookup(root, b"d/c").rdev == (0, (1 << 8) | 3)  # the form every reader agrees on
    assert linux_rdev(lookup(root, b"d/b")) == (300, 7)
    assert linux_rdev(lookup(root, b"d/big")) == (5000, 70000)
    assert lookup(root, b"d/e").mtime == date7(0)
    serials = [n.serial for n in root.children[b"d"].children.values() if n.name != b"g"]
    assert len(set(serials)) == len(serials)


def test_long_names_and_targets_cross_ce_blocks() -> None:
    entries = [E(Kind.DIR, b"D" * 253)]
    for i in range(40):
        name = (b"%03d" % i) * 84
        target = b"/".join(bytes([65 + (i + j) % 26]) * (200 + j) for j in range(15))[:4095]
        entries.append(E(Kind.SYMLINK, b"D" * 253 + b"/" + name[:253 - i % 3], link_target=target))
    layout, img = image_of(entries)
    root = decode(img, layout)
    assert layout.continuation_blocks > 10
    directory = root.children[b"D" * 253]
    for e in entries[1:]:
        node = lookup(root, e.path)
        assert node.target == e.link_target == node.target_libarchive
    assert len(directory.children) == 40


def test_multi_extent_sections() -> None:
    size = 2 * 0xFFFFF800 + 5
    layout = plan_iso([E(Kind.FILE, b"big", size=size)], volume_label="T", volume_time_ns=T0)
    file = layout.files[0]
    assert layout.size == (file.lba + -(-size // SECTOR)) * SECTOR
    from ecarchive.iso.records import sections

    assert sections(size) == [(0, 0xFFFFF800), (0xFFFFF800 // SECTOR, 0xFFFFF800),
                              (2 * (0xFFFFF800 // SECTOR), 5)]
    assert sections(0xFFFFFFFF) == [(0, 0xFFFFFFFF)]


def test_multi_extent_records_decode() -> None:
    """Write only the metadata of a 4 GiB+ image: stop once the data region begins."""
    size = 2**32 + 10
    layout = plan_iso([E(Kind.FILE, b"big", size=size), E(Kind.FILE, b"small", size=3)],
                      volume_label="T", volume_time_ns=T0)

    class DataReached(Exception):
        pass

    class Head(io.BytesIO):
        def write(self, b):  # type: ignore[no-untyped-def,override]
            if self.tell() >= layout.data_lba * SECTOR:
                raise DataReached
            return super().write(b)

    out = Head()
    with pytest.raises(DataReached):
        write_iso(layout, lambda e: iter([bytes(SECTOR)]), out)
    head = out.getvalue()[: layout.data_lba * SECTOR]
    records = read_records(head, layout.directories[0].lba, layout.directories[0].size)
    fields = [_record_fields(r) for r in records[2:]]
    assert [(f[1], f[2]) for f in fields] == [(0xFFFFF800, 0x80), (2058, 0), (3, 0)]
    assert fields[0][3] == fields[1][3]  # same ISO name on both sections
    assert fields[1][0] == fields[0][0] + 0xFFFFF800 // SECTOR  # contiguous extents
    for f in fields[:2]:
        assert linux_name(susp_entries(head, f[4], 0, layout.data_lba)) == b"big"


names = st.text(NAME_CHARS, min_size=1, max_size=253).map(str.encode).filter(
    lambda n: n not in (b".", b".."))
components = st.one_of(st.just(b"."), st.just(b".."),
                       st.text(NAME_CHARS, min_size=1, max_size=300).map(str.encode))


@st.composite
def targets(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(components, min_size=1, max_size=20))
    target = (b"/" if draw(st.booleans()) else b"") + b"/".join(parts)
    return target[:4095].rstrip(b"/") or b"x"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(names, targets()), min_size=1, max_size=12,
                unique_by=lambda t: t[0]))
def test_names_and_targets_round_trip(links: list[tuple[bytes, bytes]]) -> None:
    entries = [E(Kind.DIR, b"d")]
    entries += [E(Kind.SYMLINK, b"d/" + name, link_target=target) for name, target in links]
    layout, img = image_of(entries)
    directory = decode(img, layout).children[b"d"]
    assert sorted(directory.children) == sorted(name for name, _ in links)
    for name, target in links:
        node = directory.children[name]
        assert node.target == target, "Linux would read another target"
        assert node.target_libarchive == target, "libarchive would read another target"


def test_size_is_exact_and_output_deterministic() -> None:
    entries = [E(Kind.DIR, b"a")] + [E(Kind.FILE, b"a/%d" % i, size=i * 300) for i in range(50)]
    data = {e.path: bytes([e.size % 251]) * e.size for e in entries}
    layout, first = image_of(entries, data)
    _, second = image_of(entries, data)
    assert len(first) == layout.size and first == second


def test_refuses_what_linux_cannot_read() -> None:
    entries = [
        E(Kind.FILE, b"n" * 254),
        E(Kind.SYMLINK, b"long", link_target=b"t" * 4096),
        E(Kind.SYMLINK, b"empty", link_target=b""),
        E(Kind.FILE, b"orphan/child"),
        E(Kind.FILE, b"twice"),
        E(Kind.FILE, b"twice"),
        E(Kind.HARDLINK, b"hl", link_target=b"nowhere"),
    ]
    with pytest.raises(IsoPlanError) as info:
        plan_iso(entries, volume_label="T", volume_time_ns=T0)
    assert len(info.value.problems) == 6
    text = str(info.value)
    for fragment in ("254 bytes", "4096 bytes", "empty symlink", "orphan/child", "twice",
                     "nowhere"):
        assert fragment in text


def test_too_many_sections_refused() -> None:
    with pytest.raises(IsoPlanError, match="100 extent sections"):
        plan_iso([E(Kind.FILE, b"huge", size=101 * 0xFFFFF800)], volume_label="T",
                 volume_time_ns=T0)


@pytest.mark.parametrize("label", ["", "x" * 33, "bad-label", "é"])
def test_bad_labels(label: str) -> None:
    with pytest.raises(IsoLabelError):
        plan_iso([], volume_label=label, volume_time_ns=T0)


@pytest.mark.parametrize("yielded", [b"abc", b"abcde"])
def test_body_of_wrong_size_is_an_error(yielded: bytes) -> None:
    layout = plan_iso([E(Kind.FILE, b"f", size=4)], volume_label="T", volume_time_ns=T0)
    with pytest.raises(IsoBodySizeError, match="f: the body yielded"):
        write_iso(layout, lambda e: iter([yielded]), io.BytesIO())


def test_empty_plan_is_a_valid_image() -> None:
    layout, img = image_of([])
    assert decode(img, layout).children == {}
    assert layout.zero_lba < layout.total_blocks


def test_dates() -> None:
    assert date7(0) == bytes((70, 1, 1, 0, 0, 0, 0))
    assert date7(-10**30) == bytes((0, 1, 1, 0, 0, 0, 0))  # clamped to 1900
    assert date7(10**30) == bytes((255, 12, 31, 23, 59, 59, 0))  # clamped to 2155
    assert date17(1_700_000_000 * 10**9 + 250_000_000) == b"2023111422132025\x00"
    assert base36(35, 2) == b"0Z" and base36(36, 2) == b"10"


def test_time_warnings() -> None:
    layout = plan_iso([E(Kind.FILE, b"late", mtime_ns=2**31 * 10**9)], volume_label="T",
                      volume_time_ns=T0)
    assert any("2038" in w for w in layout.warnings)
