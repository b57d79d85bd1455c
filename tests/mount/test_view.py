"""The mount's view below FUSE: every byte range, name and size equals what `create` writes.

`create --stable-keys` leaves each file's key material in its xattr; a view opened with stable
keys reads the same material, so its lower files must be byte-identical to the tar members.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import stat
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecarchive.ecryptfs.constants import EXTENT_SIZE, HEADER_SIZE
from ecarchive.ecryptfs.extent import decrypt_extents, root_iv
from ecarchive.ecryptfs.header import parse_header, unwrap_fek
from ecarchive.ecryptfs.keys import FnekMode, derive_keyset
from ecarchive.ecryptfs.names import encrypt_name
from ecarchive.errors import Reporter
from ecarchive.mount import view as view_module
from ecarchive.mount.lowerfile import WINDOW
from ecarchive.mount.run import MountRequest, open_view
from ecarchive.mount.view import LowerView
from tests.cli.conftest import PASSPHRASE, run_cli
from tests.support.trees import make_case_tree

CASES = [(16, "separate"), (32, "same"), (16, "off")]
RANGES_PER_FILE = 60
SEED = 12


def _keyset(fnek: str):  # type: ignore[no-untyped-def]
    return derive_keyset(PASSPHRASE.encode(), FnekMode(fnek))


def _view(src: Path, key_bytes: int, fnek: str, **extra: object) -> LowerView:
    req = MountRequest(str(src), "/nonexistent", _keyset(fnek), key_bytes, **extra)  # type: ignore[arg-type]
    view, _ = open_view(req, Reporter())
    return view


def _walk(view: LowerView, path: bytes = b"") -> Iterator[tuple[bytes, int]]:
    for name, attrs in view.listdir(path or b"/"):
        file_type = stat.S_IFMT(attrs["st_mode"])
        child = path + b"/" + name if path else name
        yield child, file_type
        if file_type == stat.S_IFDIR:
            yield from _walk(view, child)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"aes{c[0] * 8}-fnek-{c[1]}")
def made(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    key_bytes, fnek = request.param
    root = tmp_path_factory.mktemp("view")
    src = root / "src"
    make_case_tree(src, big_mib=2)
    out = root / "out.tar"
    args = ["create", str(src), "-o", str(out), "-q", "--stable-keys"]
    r = run_cli([*args, "--key-bytes", str(key_bytes), "--fnek", fnek])
    assert r.returncode == 0, r.stderr.decode()
    view = _view(src, key_bytes, fnek, stable_keys=True)
    yield src, out, view, key_bytes, fnek
    view.close()


def _members(tar: Path) -> dict[bytes, tarfile.TarInfo]:
    with tarfile.open(tar) as t:
        return {
            os.fsencode(m.name).removeprefix(b"Private/"): m
            for m in t.getmembers()
            if m.name.startswith("Private/")
        }


def test_names_types_and_sizes_equal_the_archive(made) -> None:  # type: ignore[no-untyped-def]
    _src, out, view, _kb, _fnek = made
    members = _members(out)
    shown = dict(_walk(view))
    assert set(shown) == set(members)
    for path, file_type in shown.items():
        m = members[path]
        attrs = view.attributes(path)
        assert stat.S_IFMT(attrs["st_mode"]) == file_type
        if m.isreg():
            assert attrs["st_size"] == m.size, path
        elif m.issym():
            assert view.readlink(path) == os.fsencode(m.linkname)
            assert attrs["st_size"] == len(os.fsencode(m.linkname))
        elif m.islnk():
            target = os.fsencode(m.linkname).removeprefix(b"Private/")
            assert attrs["st_ino"] == view.attributes(target)["st_ino"]
            assert attrs["st_size"] == view.attributes(target)["st_size"]
        assert stat.S_IMODE(attrs["st_mode"]) == m.mode, path
        assert attrs["st_mtime"] // 10**9 == int(m.mtime), path


def _ranges(size: int, rng: random.Random) -> Iterator[tuple[int, int]]:
    edges = [0, 1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 1, HEADER_SIZE + EXTENT_SIZE - 1]
    edges += [size - 1, size, size + 5, HEADER_SIZE + WINDOW - 3]
    for offset in edges:
        yield offset, rng.choice([1, 7, EXTENT_SIZE, EXTENT_SIZE + 1, 128 << 10])
    for _ in range(RANGES_PER_FILE):
        yield rng.randrange(size + 1), rng.randrange(1, 300_000)


def test_every_read_equals_the_bytes_create_writes(made) -> None:  # type: ignore[no-untyped-def]
    _src, out, view, _kb, _fnek = made
    rng = random.Random(SEED)
    checked = 0
    with tarfile.open(out) as t:
        for m in t.getmembers():
            if not m.isreg() or not m.name.startswith("Private/"):
                continue
            extracted = t.extractfile(m)
            assert extracted is not None
            expected = extracted.read()
            path = os.fsencode(m.name).removeprefix(b"Private/")
            f = view.open(path)
            try:
                assert f.size == len(expected)
                for offset, length in _ranges(len(expected), rng):
                    got = f.read(offset, length)
                    assert got == expected[offset : offset + length], (path, offset, length)
                    checked += 1
                # a sequential pass, as cp and rsync read
                whole = b"".join(f.read(o, 128 << 10) for o in range(0, f.size, 128 << 10))
                assert whole == expected
            finally:
                f.close()
    assert checked > 0


def test_a_second_spelling_of_a_name_does_not_exist(made) -> None:  # type: ignore[no-untyped-def]
    """The filename decoder maps unknown characters to 0, like '-': 'X…-' and 'X…!' decrypt
    alike, but only the spelling the listing shows may exist (a copy has no other)."""
    _src, _out, view, _kb, fnek = made
    # names in clear (fnek off) have one spelling: any other must be absent as well
    names = [n for n, _a in view.listdir(b"/") if fnek == "off" or n.endswith(b"-")]
    assert names
    view.attributes(names[0])
    with pytest.raises(FileNotFoundError):
        view.attributes(names[0][:-1] + b"!")


def test_excluded_paths_are_absent(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "keep").mkdir(parents=True)
    (src / "keep" / "a.txt").write_text("a")
    (src / "keep" / "b.tmp").write_text("b")
    (src / "cache").mkdir()
    (src / "cache" / "c").write_text("c")
    view = _view(src, 16, "separate", excludes=("*.tmp", "/cache"))
    try:
        fnek = _keyset("separate").fnek
        assert fnek is not None

        def enc(name: bytes) -> bytes:
            return encrypt_name(name, fnek, 16)

        assert sorted(n for n, _a in view.listdir(b"/")) == [enc(b"keep")]
        assert [n for n, _a in view.listdir(enc(b"keep"))] == [enc(b"a.txt")]
        for hidden in (enc(b"cache"), enc(b"keep") + b"/" + enc(b"b.tmp")):
            with pytest.raises(FileNotFoundError):
                view.attributes(hidden)
    finally:
        view.close()


def test_unstorable_entries_are_left_out(tmp_path: Path) -> None:
    """What create refuses (long names, long targets) or skips (sockets) is not in the view."""
    import socket

    src = tmp_path / "src"
    src.mkdir()
    (src / ("n" * 144)).write_text("too long a name for eCryptfs")
    os.symlink("t" * 3008, src / "long-target")
    os.symlink("t" * 3007, src / "ok-target")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    try:
        view = _view(src, 16, "separate")
        try:
            shown = view.listdir(b"/")
            assert len(shown) == 1 and stat.S_ISLNK(shown[0][1]["st_mode"])
            assert len(view.readlink(shown[0][0])) < 4096
        finally:
            view.close()
    finally:
        sock.close()


def test_symlinked_directories_are_never_followed(tmp_path: Path) -> None:
    """A directory swapped for a symlink to elsewhere must not expose what it points to."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not part of SOURCE")
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(outside, src / "d")
    view = _view(src, 16, "off")
    try:
        with pytest.raises(OSError) as e:
            view.attributes(b"d/secret")
        assert e.value.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENOENT)
        with pytest.raises(OSError):
            view.listdir(b"d")
        with pytest.raises(OSError):
            view.open(b"d/secret")
        assert view.readlink(b"d") == os.fsencode(outside)
    finally:
        view.close()


def _blocked_in_open(path: Path) -> tuple[threading.Thread, threading.Event]:
    """A thread opening the fifo `path` for writing: open(2) returns only once a reader opens it."""
    opened, starting = threading.Event(), threading.Event()

    def writer() -> None:
        starting.set()
        os.close(os.open(path, os.O_WRONLY))
        opened.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert starting.wait(5)
    task = Path(f"/proc/self/task/{thread.native_id}/stat")
    deadline = time.monotonic() + 5
    while task.read_text().rsplit(")", 1)[1].split()[0] != "S":  # asleep in open(2)
        assert time.monotonic() < deadline, "the writer never blocked in open(2)"
        time.sleep(0.01)
    return thread, opened


def test_a_file_swapped_for_a_fifo_is_never_opened(tmp_path: Path) -> None:
    """The kernel looked up a regular file; before its open the file became a fifo (or a device).

    Opening a fifo (or a device) for reading has effects of its own, non-blocking or not: here
    it lets a writer waiting for a reader go on. The view must refuse it without opening it.
    """
    src = tmp_path / "src"
    src.mkdir()
    fifo = src / "f"
    fifo.write_bytes(b"plain")
    view = _view(src, 16, "off")
    try:
        assert stat.S_ISREG(view.lookup(b"f").st.st_mode)
        fifo.unlink()
        os.mkfifo(fifo)
        writer, opened = _blocked_in_open(fifo)
        with pytest.raises(OSError):
            view.open(b"f")
        assert not opened.wait(0.5), "the view opened the fifo"
    finally:
        view.close()
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # lets the writer finish
    writer.join(5)


def test_without_proc_only_regular_files_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where /proc is not mounted the open is non-blocking and checked before any read."""
    monkeypatch.setattr(view_module, "_HAVE_PROC_FD", False)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"plain")
    os.mkfifo(src / "p")
    view = _view(src, 16, "off")
    try:
        f = view.open(b"f")
        try:
            assert _decrypt(f.read(0, f.size)) == b"plain"
            assert os.get_blocking(f.fd)
        finally:
            f.close()
        with pytest.raises(OSError) as e:
            view.open(b"p")  # no writer: a blocking open would never return
        assert e.value.errno == errno.EINVAL
    finally:
        view.close()


def _decrypt(data: bytes) -> bytes:
    """The plaintext of a lower file, its key unwrapped from its own header."""
    header = parse_header(data[:HEADER_SIZE])
    packet = header.packets[0]
    fek = unwrap_fek(packet.efek, packet.cipher_code, _keyset("off").file_key)
    body = bytearray(data[HEADER_SIZE:])
    decrypt_extents(fek, root_iv(fek), 0, body, body)
    return bytes(body[: header.plain_size])


def test_a_file_that_changes_while_open_keeps_its_size(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    f = src / "f"
    original = bytes(range(256)) * 64  # 16 KiB
    f.write_bytes(original)
    reporter = Reporter(stream=open(os.devnull, "w"))  # noqa: SIM115
    req = MountRequest(str(src), "/nonexistent", _keyset("off"), 16)
    view, _ = open_view(req, reporter)
    try:
        shrunk = view.open(b"f")
        with f.open("r+b") as w:
            w.truncate(5000)
        data = shrunk.read(0, shrunk.size)
        assert len(data) == shrunk.size == HEADER_SIZE + len(original)
        assert _decrypt(data) == original[:5000] + bytes(len(original) - 5000)
        shrunk.close()
        assert any("shrank" in w for w in reporter.warnings)

        f.write_bytes(original)
        grown = view.open(b"f")
        with f.open("ab") as w:
            w.write(b"x" * 10000)
        data = grown.read(0, 1 << 20)
        assert _decrypt(data) == original
        grown.close()
        assert any("grew" in w for w in reporter.warnings)
    finally:
        view.close()


def test_one_key_per_inode_while_unchanged(tmp_path: Path) -> None:
    """Fresh keys: reopening, and a hard link, read the same bytes; a changed file gets a new key."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a" * 5000)
    os.link(src / "a", src / "b")
    view = _view(src, 16, "off")
    try:

        def lower(name: bytes) -> bytes:
            f = view.open(name)
            try:
                return f.read(0, f.size)
            finally:
                f.close()

        first = lower(b"a")
        assert lower(b"a") == first
        assert lower(b"b") == first
        os.chmod(src / "a", 0o600)  # a new ctime: the file may have changed in any way
        assert lower(b"a")[:HEADER_SIZE] != first[:HEADER_SIZE]
    finally:
        view.close()
