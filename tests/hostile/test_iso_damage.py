"""Damaged ISO 9660 + Rock Ridge records cost their member (or subtree), never the disc.

A real image is made with `ecarchive create --format iso --fnek off` (clear lower names, so a
record is found by the name it restores to); records are found by walking the image here, with
a parser of its own, then one field is broken per test. Restore and list must name the
damaged path, exit 1, and restore everything else byte-identical (issue 9, item 4).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cli.conftest import run_cli

SECTOR = 2048
PVD = 16 * SECTOR
ROOT_RECORD = PVD + 156
LONG = "l" * 180 + ".txt"  # its Rock Ridge name goes on in a continuation area
FILES = {
    "a.txt": b"alpha\n" * 1000,
    "dir/c.txt": b"gamma\n" * 300,
    "dir/sub/d.txt": b"delta\n" * 50,
    LONG: b"long name\n" * 30,
    "zz-last.bin": bytes(range(256)) * 64,
    # a directory of more than one sector, so some record ends near its sector's end
    **{f"many/f{i:02d}": b"%d\n" % i for i in range(40)},
}


def _u32(data: bytes | bytearray, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


def _both32(value: int) -> bytes:
    return value.to_bytes(4, "little") + value.to_bytes(4, "big")


@dataclass
class Rec:
    at: int  # offset of the record in the image
    path: str
    extent: int
    size: int
    flags: int
    entries: dict[str, list[int]] = field(default_factory=dict)  # signature -> entry offsets


def _entries(img: bytes, start: int, end: int, rec: Rec, name: bytearray) -> None:
    pos = start
    while pos + 4 <= end:
        sig = img[pos : pos + 2].decode("latin-1")
        length = img[pos + 2]
        if length < 4:
            return
        rec.entries.setdefault(sig, []).append(pos)
        if sig == "NM":
            name += img[pos + 5 : pos + length]
        if sig == "CE":
            ce = _u32(img, pos + 4) * SECTOR + _u32(img, pos + 12)
            _entries(img, ce, ce + _u32(img, pos + 20), rec, name)
        pos += length


def walk(img: bytes) -> Iterator[Rec]:
    """Every record but '.' and '..', parents first, with its Rock Ridge path."""
    todo = [("", _u32(img, ROOT_RECORD + 2), _u32(img, ROOT_RECORD + 10))]
    while todo:
        parent, extent, size = todo.pop(0)
        for sector in range(extent * SECTOR, extent * SECTOR + size, SECTOR):
            pos = sector
            while pos < sector + SECTOR and img[pos]:
                length, ident_len = img[pos], img[pos + 32]
                ident = img[pos + 33 : pos + 33 + ident_len]
                if ident not in (b"\x00", b"\x01"):
                    su = pos + 33 + ident_len + (1 - ident_len % 2)
                    name = bytearray()
                    rec = Rec(pos, "", _u32(img, pos + 2), _u32(img, pos + 10), img[pos + 25])
                    _entries(img, su, pos + length, rec, name)
                    rec.path = f"{parent}/{name.decode()}".lstrip("/")
                    yield rec
                    if rec.flags & 2:
                        todo.append((rec.path, rec.extent, rec.size))
                pos += length


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    work = tmp_path_factory.mktemp("isodamage")
    src = work / "src"
    for name, data in FILES.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    os.symlink("dir/c.txt", src / "link")
    iso = work / "made.iso"
    r = run_cli(["create", "--format", "iso", "--fnek", "off", "-o", str(iso), str(src)])
    assert r.returncode == 0, r.stderr.decode()
    return src, iso.read_bytes()


def rec_of(img: bytes, suffix: str) -> Rec:
    found = [r for r in walk(img) if r.path == suffix or r.path.endswith("/" + suffix)]
    assert len(found) == 1, (suffix, [r.path for r in walk(img)])
    return found[0]


def _volume_blocks(img: bytes) -> int:
    return _u32(img, PVD + 80)


def _restore(data: bytes, tmp_path: Path, *, stdin: bool = False) -> tuple[int, str, Path]:
    dest = tmp_path / "dest"
    if stdin:
        r = run_cli(["restore", "-", str(dest)], stdin=data)
    else:
        bad = tmp_path / "bad.iso"
        bad.write_bytes(data)
        r = run_cli(["restore", str(bad), str(dest)])
    return r.returncode, r.stderr.decode(), dest


def _assert_rest_restored(dest: Path, lost: tuple[str, ...]) -> None:
    for name, data in FILES.items():
        if any(name == x or name.startswith(x + "/") for x in lost):
            assert not (dest / name).exists(), name
        else:
            assert (dest / name).read_bytes() == data, name
    if "link" not in lost:
        assert os.readlink(dest / "link") == "dir/c.txt"


# Each case: (what to break, the damaged path, what is lost)


def _extent_past_end(img: bytearray) -> None:
    rec = rec_of(bytes(img), "zz-last.bin")
    img[rec.at + 2 : rec.at + 10] = _both32(_volume_blocks(bytes(img)) + 10)


def _size_past_end(img: bytearray) -> None:
    rec = rec_of(bytes(img), "zz-last.bin")
    img[rec.at + 10 : rec.at + 18] = _both32(0xFFFF0000)


def _dir_loop(img: bytearray) -> None:
    rec = rec_of(bytes(img), "dir/sub")
    root = _u32(img, ROOT_RECORD + 2)
    img[rec.at + 2 : rec.at + 10] = _both32(root)


def _dir_self_loop(img: bytearray) -> None:
    rec = rec_of(bytes(img), "dir/sub")
    parent = rec_of(bytes(img), "dir")
    img[rec.at + 2 : rec.at + 10] = _both32(parent.extent)


def _ce_to_itself(img: bytearray) -> None:
    rec = rec_of(bytes(img), LONG)
    ce = rec.entries["CE"][0]
    img[ce + 4 : ce + 12] = _both32(ce // SECTOR)
    img[ce + 12 : ce + 20] = _both32(ce % SECTOR)


def _ce_past_end(img: bytearray) -> None:
    rec = rec_of(bytes(img), LONG)
    ce = rec.entries["CE"][0]
    img[ce + 4 : ce + 12] = _both32(_volume_blocks(bytes(img)) + 3)


def _ce_across_blocks(img: bytearray) -> None:
    rec = rec_of(bytes(img), LONG)
    ce = rec.entries["CE"][0]
    img[ce + 12 : ce + 20] = _both32(SECTOR - 8)  # its area would run into the next block


def _data_inside_other_data(img: bytearray) -> None:
    rec = rec_of(bytes(img), "zz-last.bin")
    other = rec_of(bytes(img), "a.txt")
    img[rec.at + 2 : rec.at + 10] = _both32(other.extent + 1)


def _size_over_next_file(img: bytearray) -> None:
    """a.txt's size grown over the whole next file: a.txt is the damaged one."""
    rec = rec_of(bytes(img), "a.txt")
    after = min((r for r in walk(bytes(img)) if not r.flags & 2 and r.extent > rec.extent),
                key=lambda r: r.extent)
    img[rec.at + 10 : rec.at + 18] = _both32((after.extent - rec.extent) * SECTOR + after.size)


def _ident_too_long(img: bytearray) -> None:
    rec = rec_of(bytes(img), "zz-last.bin")
    img[rec.at + 32] = 250


def _sl_component_past_entry(img: bytearray) -> None:
    rec = rec_of(bytes(img), "link")
    sl = rec.entries["SL"][0]
    img[sl + 6] = 240  # the first component's length


def _nm_garbage(img: bytearray) -> None:
    rec = rec_of(bytes(img), "zz-last.bin")
    nm = rec.entries["NM"][0]
    img[nm + 5 + 2] = ord("/")  # "zz/last.bin"


DAMAGE = {
    "extent-past-end": (_extent_past_end, "zz-last.bin", ("zz-last.bin",)),
    "size-past-end": (_size_past_end, "zz-last.bin", ("zz-last.bin",)),
    "dir-loop-to-root": (_dir_loop, "dir/sub", ("dir/sub",)),
    "dir-loop-to-parent": (_dir_self_loop, "dir/sub", ("dir/sub",)),
    "ce-to-itself": (_ce_to_itself, LONG[:20], (LONG,)),
    "ce-past-end": (_ce_past_end, LONG[:20], (LONG,)),
    "ce-across-blocks": (_ce_across_blocks, LONG[:20], (LONG,)),
    "data-inside-other-data": (_data_inside_other_data, "zz-last.bin", ("zz-last.bin",)),
    "size-over-next-file": (_size_over_next_file, "a.txt", ("a.txt",)),
    "identifier-too-long": (_ident_too_long, "", ("zz-last.bin",)),
    "sl-component-past-entry": (_sl_component_past_entry, "link", ("link",)),
    "nm-garbage": (_nm_garbage, "zz", ("zz-last.bin",)),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_record_costs_its_member(
    kind: str, image: tuple[Path, bytes], tmp_path: Path
) -> None:
    img = image[1]
    damage, named, lost = DAMAGE[kind]
    data = bytearray(img)
    damage(data)
    assert bytes(data) != img
    code, err, dest = _restore(bytes(data), tmp_path)
    assert code == 1, err
    assert named in err, err
    _assert_rest_restored(dest, lost)
    bad = tmp_path / "bad.iso"
    r = run_cli(["list", str(bad)])
    assert r.returncode == 1, r.stderr.decode()
    assert named in r.stderr.decode()
    listed = r.stdout.decode()
    for name in FILES:
        if not any(name == x or name.startswith(x + "/") for x in lost):
            assert f"\t{name}\n" in listed, name
    # verify reads through the same member reader: the damage is one problem, not the disc
    r = run_cli(["verify", str(bad)])
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 1, out
    assert named in out, out
    assert "Traceback" not in out


def _near_sector_end(img: bytes) -> Rec:
    """A record of many/ that a length of 255 would carry past the end of its sector."""
    recs = [r for r in walk(img) if r.path.split("/")[-2:-1] == ["many"]]
    return next(r for r in recs if r.at % SECTOR + 255 > SECTOR)


@pytest.mark.parametrize("length", [0, 255])
def test_bad_record_length_costs_the_rest_of_its_sector(
    length: int, image: tuple[Path, bytes], tmp_path: Path
) -> None:
    """0 before the end of a sector, or longer than what is left of it: the records after it in
    that sector cannot be found; the directory is named, the other records read."""
    img = image[1]
    data = bytearray(img)
    rec = rec_of(img, "zz-last.bin") if length == 0 else _near_sector_end(img)
    data[rec.at] = length
    code, err, dest = _restore(bytes(data), tmp_path)
    assert code == 1, err
    assert "directory record" in err, err
    _assert_rest_restored(dest, (rec.path.split("/", 1)[1],))


def test_damaged_image_restores_from_stdin(image: tuple[Path, bytes], tmp_path: Path) -> None:
    img = image[1]
    data = bytearray(img)
    _dir_loop(data)
    code, err, dest = _restore(bytes(data), tmp_path, stdin=True)
    assert code == 1, err
    assert "dir/sub" in err
    _assert_rest_restored(dest, ("dir/sub",))


@pytest.mark.parametrize("where", ["extent", "size"])
def test_damaged_root_is_one_fatal_error(
    where: str, image: tuple[Path, bytes], tmp_path: Path
) -> None:
    img = image[1]
    data = bytearray(img)
    at = ROOT_RECORD + (2 if where == "extent" else 10)
    data[at : at + 8] = _both32(_volume_blocks(img) + 100 if where == "extent" else 0xFFFFF000)
    code, err, dest = _restore(bytes(data), tmp_path)
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("ecarchive: error: "), lines
    assert not dest.exists()


@pytest.mark.parametrize("fmt", ["iso", "tar"])
def test_named_pipe_loses_nothing_to_the_sniff(
    fmt: str, image: tuple[Path, bytes], tmp_path: Path
) -> None:
    """`ecarchive restore <(ssh host cat x.iso) DEST`: the bytes read to tell an ISO image from
    a tar cannot be read again from a pipe, so they must be handed on, not re-opened."""
    src, img = image
    if fmt == "tar":
        tar = tmp_path / "made.tar"
        r = run_cli(["create", "--format", "tar", "--fnek", "off", "-o", str(tar), str(src)])
        assert r.returncode == 0, r.stderr.decode()
        img = tar.read_bytes()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as f:
            f.write(img)

    writer = threading.Thread(target=feed)
    writer.start()
    dest = tmp_path / "dest"
    r = run_cli(["restore", "-q", str(fifo), str(dest)])
    writer.join()
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    _assert_rest_restored(dest, ())
