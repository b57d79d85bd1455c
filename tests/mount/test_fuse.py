"""`ecarchive mount` through the real kernel FUSE: copies restore, reads equal `create`'s bytes,
stable keys make rsync send only what changed, writes fail with EROFS, signals unmount."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from ecarchive.mount.readahead import READ_AHEAD_KB
from ecarchive.mount.run import MountUnavailable, check_fuse
from tests.cli.conftest import PASSPHRASE, REPO, run_cli
from tests.mount.conftest import mounted, unmount, wait_mounted
from tests.support.trees import compare, make_case_tree, snapshot

pytestmark = pytest.mark.usefixtures("fuse")

SEED = 1212
READS = 200


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("mount") / "src"
    make_case_tree(src, big_mib=2)
    return src


def _restored(copy: str | Path, dest: Path) -> dict[str, object]:
    r = run_cli(["restore", str(copy), str(dest)])
    assert r.returncode == 0, r.stderr.decode()
    return snapshot(dest)  # type: ignore[return-value]


def test_rsync_and_tar_copies_restore_to_source(source: Path, tmp_path: Path) -> None:
    with mounted(source, tmp_path / "mnt", "--fnek", "separate") as mnt:
        subprocess.run(["rsync", "-a", f"{mnt}/", f"{tmp_path / 'copy'}/"], check=True)
        tar = tmp_path / "view.tar"
        subprocess.run(["tar", "-C", str(mnt), "-cf", str(tar), "."], check=True)
    want = snapshot(source)
    got = _restored(tmp_path / "copy", tmp_path / "from-rsync")
    # rsync -a keeps no hard links (that is -H); tar does, through the view's inode numbers
    assert compare(want, got, mtime="ns", hardlinks=False, owners=True) == []  # type: ignore[arg-type]
    got = _restored(tar, tmp_path / "from-tar")
    assert compare(want, got, mtime="s", hardlinks=True, owners=True) == []  # type: ignore[arg-type]


def test_random_preads_equal_create_output(source: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    subprocess.run(["cp", "-a", str(source), str(src)], check=True)
    out = tmp_path / "made.tar"
    r = run_cli(["create", str(src), "-o", str(out), "-q", "--stable-keys", "--key-bytes", "32"])
    assert r.returncode == 0, r.stderr.decode()
    rng = random.Random(SEED)
    with (
        mounted(src, tmp_path / "mnt", "--stable-keys", "--key-bytes", "32") as mnt,
        tarfile.open(out) as t,
    ):
        files = [m for m in t.getmembers() if m.isreg() and m.name.startswith("Private/")]
        assert len(files) > 10
        for _ in range(READS):
            m = rng.choice(files)
            f = t.extractfile(m)
            assert f is not None
            expected = f.read()
            offset = rng.randrange(m.size + 1)
            length = rng.randrange(1, 200_000)
            fd = os.open(mnt / m.name.removeprefix("Private/"), os.O_RDONLY)
            try:
                got = os.pread(fd, length, offset)
            finally:
                os.close(fd)
            assert got == expected[offset : offset + length], (m.name, offset, length)


def _sent(mnt: Path, copy: Path) -> list[str]:
    """Files rsync -a --checksum transfers from the mount into an existing copy."""
    done = subprocess.run(
        ["rsync", "-a", "--checksum", "--out-format=%n", f"{mnt}/", f"{copy}/"],
        check=True,
        capture_output=True,
        text=True,
    )
    return [line for line in done.stdout.splitlines() if line and not line.endswith("/")]


def test_stable_keys_make_rsync_send_only_changed_files(source: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    subprocess.run(["cp", "-a", str(source), str(src)], check=True)
    copy = tmp_path / "copy"
    mnt = tmp_path / "mnt"
    regular = sum(1 for r in snapshot(src).values() if r.type == "f")
    with mounted(src, mnt, "--stable-keys"):
        assert len(_sent(mnt, copy)) >= regular
    with mounted(src, mnt, "--stable-keys"):
        assert _sent(mnt, copy) == []
    with (src / "files" / "size-4097").open("r+b") as f:
        f.write(b"changed")
    with mounted(src, mnt, "--stable-keys"):
        sent = _sent(mnt, copy)
    assert len(sent) == 1, sent
    restored = _restored(copy, tmp_path / "dest")
    assert compare(snapshot(src), restored, hardlinks=False) == []  # type: ignore[arg-type]
    # Without stable keys every file gets a new key at the next mount: everything is sent.
    with mounted(src, mnt):
        assert len(_sent(mnt, copy)) == regular


def test_every_writing_call_fails_with_erofs(source: Path, tmp_path: Path) -> None:
    before = snapshot(source)
    with mounted(source, tmp_path / "mnt", "--fnek", "off") as mnt:
        file = mnt / "files" / "size-1"
        attempts = {
            "open for writing": lambda: os.open(file, os.O_WRONLY),
            "truncate": lambda: os.truncate(file, 0),
            "create": lambda: os.open(mnt / "new", os.O_WRONLY | os.O_CREAT, 0o600),
            "mkdir": lambda: os.mkdir(mnt / "newdir"),
            "rename": lambda: os.rename(file, mnt / "moved"),
            "chmod": lambda: os.chmod(file, 0o777),
            "chown": lambda: os.chown(file, 1, 1),
            "utime": lambda: os.utime(file, (0, 0)),
            "unlink": lambda: os.unlink(file),
            "rmdir": lambda: os.rmdir(mnt / "empty-dir"),
            "symlink": lambda: os.symlink("x", mnt / "link"),
            "link": lambda: os.link(file, mnt / "new-hard-link"),
            "mkfifo": lambda: os.mkfifo(mnt / "fifo2"),
            "setxattr": lambda: os.setxattr(file, "user.x", b"1"),
        }
        for what, attempt in attempts.items():
            with pytest.raises(OSError) as e:
                attempt()
            assert e.value.errno == errno.EROFS, (what, e.value)
    assert snapshot(source) == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_foreground_mount_unmounts_on_signal(source: Path, tmp_path: Path, sig: int) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "ECARCHIVE_PASSPHRASE": PASSPHRASE, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "ecarchive", "mount", "-f", str(source), str(mnt)]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_mounted(mnt)
        assert len(os.listdir(mnt)) == len(os.listdir(source))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
        assert not os.path.ismount(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        unmount(mnt)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may set a mount's read-ahead")
def test_the_mount_reads_ahead_a_mebibyte(source: Path, tmp_path: Path) -> None:
    with mounted(source, tmp_path / "mnt") as mnt:
        dev = os.stat(mnt).st_dev
        setting = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
        deadline = time.monotonic() + 10  # set by a thread of the server once it answers
        while setting.read_text().strip() != str(READ_AHEAD_KB):
            assert time.monotonic() < deadline, setting.read_text()
            time.sleep(0.05)


def test_umount_verb(source: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    with mounted(source, mnt):
        r = run_cli(["umount", str(mnt)], passphrase=None)
        assert r.returncode == 0, r.stderr.decode()
        assert not os.path.ismount(mnt)
    r = run_cli(["umount", str(mnt)], passphrase=None)
    assert r.returncode == 2
    assert b"cannot unmount" in r.stderr


def test_bad_mount_arguments_are_one_clear_error(source: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    r = run_cli(["mount", str(source), str(missing)])
    assert r.returncode == 2
    assert r.stderr.decode().startswith("ecarchive: error: MOUNTPOINT")
    inside = source / "files"
    r = run_cli(["mount", str(source), str(inside)])
    assert r.returncode == 2 and b"inside SOURCE" in r.stderr
    r = run_cli(["mount", "--key-store", str(tmp_path / "k.db"), str(source), str(tmp_path)])
    assert r.returncode == 2 and b"need --stable-keys" in r.stderr


def test_missing_fuse_device_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MountUnavailable) as e:
        check_fuse(str(tmp_path / "fuse"))
    assert "No such file or directory" in str(e.value)
    assert e.value.hint and "fuse" in e.value.hint


def _serve_in_front(src: Path, mnt: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ECARCHIVE_PASSPHRASE": PASSPHRASE, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "ecarchive", "mount", "-f", *args, str(src), str(mnt)]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    wait_mounted(mnt)
    return proc


def test_key_store_keeps_keys_of_a_killed_server(tmp_path: Path) -> None:
    """On ramfs (no user xattrs) keys go to the key store; a server killed with SIGKILL, which
    never reaches its clean shutdown, must not lose the keys it handed out."""
    if os.geteuid() != 0:
        pytest.skip("mounting ramfs needs root")
    src = tmp_path / "ramfs"
    src.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "none", str(src)], check=True)
    mnt, copy, store = tmp_path / "mnt", tmp_path / "copy", tmp_path / "keys.db"
    mnt.mkdir()
    args = ("--stable-keys", "--key-store", str(store))
    try:
        for i in range(5):
            (src / f"f{i}").write_bytes(random.Random(i).randbytes(10_000 * i))
        proc = _serve_in_front(src, mnt, *args)
        try:
            assert len(_sent(mnt, copy)) == 5
        finally:
            proc.kill()
            proc.wait()
            unmount(mnt)
        with mounted(src, mnt, *args):
            assert _sent(mnt, copy) == []
    finally:
        unmount(mnt)
        subprocess.run(["umount", str(src)], check=True)


def test_a_key_store_inside_source_is_not_in_the_view(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    store = src / "keys.db"
    store.write_bytes(b"")
    with mounted(
        src, tmp_path / "mnt", "--fnek", "off", "--stable-keys", "--key-store", str(store)
    ) as mnt:
        assert sorted(os.listdir(mnt)) == ["a"]
        assert not (mnt / "keys.db").exists()


def test_packed_stat_equals_mfusepy_fill(tmp_path: Path) -> None:
    """The one-call struct stat fill writes exactly what mfusepy's per-field fill writes."""
    import ctypes

    import mfusepy

    from ecarchive.mount.fs import StatPacker
    from ecarchive.mount.view import LowerView

    f = tmp_path / "f"
    f.write_bytes(b"x")
    os.utime(f, ns=(-1_500_000_001, 2**40 + 7))  # before 1970, and a far future
    pack = StatPacker(mfusepy.c_stat).pack
    for path, size in ((f, 8192 + 4096), (tmp_path, 4096)):
        attrs = LowerView._attrs(os.lstat(path), size)
        want, got = mfusepy.c_stat(), mfusepy.c_stat()
        mfusepy.set_st_attrs(want, attrs, use_ns=True)
        ctypes.memset(ctypes.byref(got), 0xA5, ctypes.sizeof(got))  # pack must clear the rest
        pack(got, attrs)
        assert bytes(got) == bytes(want)
