"""`verify` (and restore where the same attack applies) against crafted archives and sources."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecarchive.ecryptfs.keys import FnekMode, derive_keyset
from ecarchive.ecryptfs.names import encrypt_name
from ecarchive.errors import Reporter
from ecarchive.read.restore import restore_archive
from tests.cli.conftest import PASSPHRASE, REPO, run_cli
from tests.unit.test_restore import LowerTree

SECRET = PASSPHRASE.encode()
SEPARATE = derive_keyset(SECRET, FnekMode.SEPARATE)
CLEAR = derive_keyset(SECRET, FnekMode.OFF)
IS_ROOT = os.geteuid() == 0


def _enc(name: bytes) -> bytes:
    assert SEPARATE.fnek is not None
    return encrypt_name(name, SEPARATE.fnek, 16)


def _add(t: tarfile.TarFile, name: bytes, data: bytes | None = None) -> None:
    info = tarfile.TarInfo(os.fsdecode(name))
    info.mtime = 1_700_000_000
    if data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        t.addfile(info)
    else:
        info.size, info.mode = len(data), 0o644
        t.addfile(info, io.BytesIO(data))


def test_against_never_leaves_source_for_a_name_that_decrypts_to_dotdot(tmp_path: Path) -> None:
    """Private/ENC('..')/ENC('trap'): SOURCE/../trap is a fifo outside SOURCE; verify must name
    the member and neither open nor block on the fifo."""
    lower = LowerTree(tmp_path / "lower", SEPARATE, 16)
    lower.file("trap", b"x")  # a valid lower file whose content is b"x"
    data = lower.lower("trap").read_bytes()
    tar = tmp_path / "dotdot.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        _add(t, b"RESTORE.txt", b"plain text\n")
        _add(t, b"Private")
        _add(t, b"Private/" + _enc(b".."))
        _add(t, b"Private/" + _enc(b"..") + b"/" + _enc(b"trap"), data)
    source = tmp_path / "source"
    source.mkdir()
    os.mkfifo(tmp_path / "trap")
    r = subprocess.run(
        [sys.executable, "-m", "ecarchive", "verify", "--against", str(source), str(tar)],
        env=dict(os.environ, PYTHONPATH=str(REPO), ECARCHIVE_PASSPHRASE=PASSPHRASE),
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    out = r.stdout.decode()
    assert r.returncode == 1, out + r.stderr.decode()
    assert "name decrypts to '..', not a file name" in out


def test_against_does_not_block_on_a_fifo_where_the_archive_has_a_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data\n")
    tar = tmp_path / "a.tar"
    assert run_cli(["create", "-o", str(tar), str(src)]).returncode == 0
    (src / "f").unlink()
    os.mkfifo(src / "f")
    r = subprocess.run(
        [sys.executable, "-m", "ecarchive", "verify", "--against", str(src), str(tar)],
        env=dict(os.environ, PYTHONPATH=str(REPO), ECARCHIVE_PASSPHRASE=PASSPHRASE),
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 1
    assert "f [" in r.stdout.decode() and "not a readable file in SOURCE" in r.stdout.decode()


def _deep_tar(path: Path, depth: int) -> Path:
    keys = CLEAR
    lower = LowerTree(path.parent / "deep-lower", keys, 16)
    leaf = lower.file("leaf", b"at the bottom").read_bytes()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        _add(t, b"RESTORE.txt", b"plain text\n")
        _add(t, b"Private")
        # no member for the directories in between: each name is first met with all of its
        # parents unresolved (a recursive resolver then needs `depth` frames)
        _add(t, b"Private" + b"/d" * depth + b"/leaf", leaf)
        # met after the deep branch: a directory walk must climb back through all its levels
        _add(t, b"Private/zz", lower.file("zz", b"after the climb").read_bytes())
    return path


def test_paths_1500_levels_deep(tmp_path: Path) -> None:
    tar = _deep_tar(tmp_path / "deep.tar", 1500)
    r = run_cli(["verify", str(tar)])
    assert r.returncode == 1, r.stderr.decode()  # no manifest, but no RecursionError either
    assert b"Traceback" not in r.stderr and b"MANIFEST.ecarchive: missing" in r.stdout
    dest = tmp_path / "dest"
    reporter = Reporter(stream=io.StringIO())
    try:
        restore_archive(str(tar), str(dest), SECRET, reporter)
        assert reporter.exit_code == 0, reporter.warnings
        assert (dest.joinpath(*["d"] * 1500) / "leaf").read_bytes() == b"at the bottom"
        assert (dest / "zz").read_bytes() == b"after the climb"
        # the same tree extracted (a directory as input): walked through descriptors, of
        # which only the deepest levels stay open, each ancestor reopened on the way back
        tree, dest2 = tmp_path / "tree", tmp_path / "dest2"
        tree.mkdir()
        subprocess.run(["tar", "xf", str(tar), "-C", str(tree)], check=True)
        reporter = Reporter(stream=io.StringIO())
        restore_archive(str(tree), str(dest2), SECRET, reporter)
        assert reporter.exit_code == 0, reporter.warnings
        assert (dest2.joinpath(*["d"] * 1500) / "leaf").read_bytes() == b"at the bottom"
        assert (dest2 / "zz").read_bytes() == b"after the climb"
    finally:
        # pytest's tmp_path cleanup (shutil.rmtree) recurses too deep for this tree, even
        # when the test failed halfway
        for deep in ("dest", "tree", "dest2"):
            subprocess.run(["rm", "-rf", str(tmp_path / deep)], check=True)


@pytest.mark.skipif(not IS_ROOT or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_verify_directory_of_files_owned_by_others(tmp_path: Path) -> None:
    """As root without CAP_FOWNER and the DAC overrides, files owned by another user are what
    an ordinary user meets on a disc or an extracted tree: readable, but not O_NOATIME."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data\n" * 100)
    tar = tmp_path / "a.tar"
    assert run_cli(["create", "-o", str(tar), str(src)]).returncode == 0
    tree = tmp_path / "tree"
    tree.mkdir()
    subprocess.run(["tar", "-xpf", str(tar), "-C", str(tree)], check=True)
    for where in (tree, src):
        subprocess.run(["chown", "-R", "65534:65534", str(where)], check=True)
    user = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    env = dict(os.environ, PYTHONPATH=str(REPO), ECARCHIVE_PASSPHRASE=PASSPHRASE)
    for args in (["verify", str(tree)], ["verify", "--against", str(src), str(tree)]):
        r = subprocess.run(
            [*user, sys.executable, "-m", "ecarchive", *args],
            env=env,
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def _readable_by_others(root: Path) -> None:
    """What a disc or a tree extracted by root shows an ordinary user: o+r files, o+rx
    directories, some of them read-only, all owned by root."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "ro").mkdir()
    (root / "a.txt").write_bytes(b"alpha\n" * 3000)
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 40)
    (root / "sub" / "deeper" / "empty").write_bytes(b"")
    (root / "ro" / "read-only.txt").write_bytes(b"kept as is\n")
    os.link(root / "a.txt", root / "sub" / "hard")
    (root / "sub" / "link").symlink_to("../a.txt")
    for path in (root / "a.txt", root / "sub" / "b.bin", root / "sub" / "deeper" / "empty"):
        path.chmod(0o644)
    (root / "ro" / "read-only.txt").chmod(0o444)
    (root / "ro").chmod(0o555)


@dataclass
class _Shared:
    """Made by root for another user to verify: SOURCE, its archive, the tree root extracted
    from it with owners kept."""

    user: tuple[int, int]
    work: Path
    src: Path
    tar: Path
    tree: Path

    def verify(self, *args: str | Path) -> tuple[int, str]:
        """`ecarchive verify ARGS` run as the other user (tests/support/as_user.py)."""
        r = subprocess.run(
            [sys.executable, "-m", "tests.support.as_user", *map(str, self.user), "verify"]
            + [str(a) for a in args],
            env=dict(os.environ, PYTHONPATH=str(REPO), ECARCHIVE_PASSPHRASE=PASSPHRASE),
            cwd=REPO,
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        shown = r.stdout.decode() + r.stderr.decode()
        assert "Traceback" not in shown, shown
        return r.returncode, shown


@pytest.fixture
def shared() -> Iterator[_Shared]:
    if not IS_ROOT:
        pytest.skip("needs root to make files owned by another user")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to verify as")
    # tmp_path lies below a root-only directory: the other user could not even reach it
    work = Path(tempfile.mkdtemp(prefix="ecarchive-other-user-"))
    try:
        work.chmod(0o755)
        src, tar, tree = work / "src", work / "a.tar", work / "tree"
        src.mkdir()
        _readable_by_others(src)
        assert run_cli(["create", "-q", "-o", str(tar), str(src)]).returncode == 0
        tar.chmod(0o644)
        tree.mkdir()
        subprocess.run(["tar", "-xpf", str(tar), "--same-owner", "-C", str(tree)], check=True)
        assert (tree / "Private").stat().st_uid == 0
        yield _Shared((nobody.pw_uid, nobody.pw_gid), work, src, tar, tree)
    finally:
        shutil.rmtree(work)


def test_verify_as_a_real_second_user(shared: _Shared) -> None:
    """Issue 9 item 7: an ordinary user verifies an archive, the tree root extracted from it
    (owners kept), the ISO image and the tree bsdtar extracts from it, with and without
    --against, on files owned by root that the user may read but not write, not O_NOATIME,
    not chown."""
    iso = shared.work / "a.iso"
    made = run_cli(["create", "-q", "--format", "iso", "-o", str(iso), str(shared.src)])
    assert made.returncode == 0
    iso.chmod(0o644)
    targets = [shared.tar, iso, shared.tree]
    if shutil.which("bsdtar"):
        disc = shared.work / "disc"
        disc.mkdir()
        subprocess.run(["bsdtar", "-xpf", str(iso), "-C", str(disc)], check=True)
        targets.append(disc)
    for target in targets:
        for extra in ([], ["--against", str(shared.src)]):
            code, shown = shared.verify(*extra, target)
            assert code == 0, f"verify {' '.join(extra)} {target}:\n{shown}"
            assert "OK" in shown and "not permitted" not in shown, shown


def test_what_a_second_user_may_not_read_is_named_not_a_traceback(shared: _Shared) -> None:
    """The same user meets a root-only file and directory inside an extracted tree (each a
    problem, the rest verified), a root-only tree and a root-only SOURCE (one fatal line)."""
    lower = shared.tree / "Private"
    files = sorted(p for p in lower.iterdir() if p.is_file())
    dirs = sorted(p for p in lower.iterdir() if p.is_dir())
    files[0].chmod(0o600)
    dirs[0].chmod(0o700)
    code, shown = shared.verify(shared.tree)
    assert code == 1
    assert f"[Private/{files[0].name}]: cannot read: Permission denied" in shown, shown
    assert f"{dirs[0].name}: cannot read directory: Permission denied" in shown, shown
    for closed in (shared.tree, shared.src):
        closed.chmod(0o700)
    code, shown = shared.verify(shared.tree)
    assert code == 2 and f"{shared.tree}: cannot read: Permission denied" in shown, shown
    code, shown = shared.verify("--against", shared.src, shared.tar)
    assert code == 2 and f"--against {shared.src}: cannot open: Permission denied" in shown, shown


_ATTACK_MANIFEST_BYTES = 64 << 20
_RSS_LIMIT_KIB = 200 << 10
_TIME_LIMIT_S = 120.0


_HEAD = (
    b"ecarchive-manifest 1\ncipher aes\nkey-bytes 16\nfile-key-sig 0123456789abcdef\n"
    b"fnek-sig -\nlower-root Private\nvolume 0001 of 0001\ncreated 0.000000000\n"
    b"entries 1\n"
)
# Short well-formed lines (directories no archive holds, 79 bytes: 850,000 of them), and the
# shortest that look like entries (9 bytes, malformed: 7.5 million of them).
_LINES: dict[str, Callable[[int], bytes]] = {
    "well-formed": lambda i: b"d 0 %s P/%07d\n" % (b"-" * 64, i),
    "tiny": lambda i: b"f 1 00 a\n",
}
_SHOWN = {
    "well-formed": ("listed in the manifest is missing", "more problems with manifest lines"),
    "tiny": ("malformed lines; not read further",),
}


def _bomb(tmp_path: Path, lines: str, *members: tuple[bytes, bytes | None]) -> Path:
    """A small .tar.gz whose MANIFEST.ecarchive holds 64 MiB of `lines`."""
    line = _LINES[lines]
    count = (_ATTACK_MANIFEST_BYTES - len(_HEAD)) // len(line(0))
    body = b"".join(line(i) for i in range(count))
    tar = tmp_path / "bomb.tar.gz"
    with tarfile.open(tar, "w:gz", compresslevel=9) as t:
        _add(t, b"RESTORE.txt", b"plain text\n")
        _add(t, b"Private")
        for name, data in members:
            _add(t, name, data)
        _add(t, b"MANIFEST.ecarchive", _HEAD + body)
        del body
    assert tar.stat().st_size < 4 << 20
    return tar


# A fresh parent whose only child is the command: RUSAGE_CHILDREN is then that child's peak.
_PROBE = (
    "import resource, subprocess, sys, time\n"
    "t = time.monotonic()\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE,"
    f" stdin=subprocess.DEVNULL, timeout={_TIME_LIMIT_S})\n"
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
    " time.monotonic() - t, len(r.stdout.splitlines()), len(r.stderr.splitlines()))\n"
    "sys.stdout.write(r.stdout.decode() + r.stderr.decode())\n"
)


def _bounded_run(*args: str) -> tuple[int, int, str]:
    """Run `ecarchive ARGS`, assert its peak RSS and time; its exit code, the number of lines
    it printed, and the last of them."""
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, sys.executable, "-m", "ecarchive", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "ECARCHIVE_PASSPHRASE": PASSPHRASE},
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    first, _, shown = r.stdout.partition("\n")
    code, rss_kib, seconds, out_lines, err_lines = first.split()
    assert int(rss_kib) <= _RSS_LIMIT_KIB, f"peak RSS {int(rss_kib) >> 10} MiB"
    assert float(seconds) < _TIME_LIMIT_S
    return int(code), int(out_lines) + int(err_lines), shown


@pytest.mark.parametrize("lines", sorted(_LINES))
def test_verify_of_a_huge_manifest_in_a_tiny_archive_is_bounded(tmp_path: Path, lines: str) -> None:
    """64 MiB of manifest lines compress to a few hundred KB: verify must not build an object
    per line (it took gigabytes and minutes), nor print a million problems."""
    code, printed, shown = _bounded_run("verify", str(_bomb(tmp_path, lines)))
    assert code == 1, shown
    assert printed < 1000, "each missing line printed on its own"
    assert all(text in shown for text in _SHOWN[lines]), shown[-3000:]


def test_restore_checks_a_huge_manifest_in_bounded_memory(tmp_path: Path) -> None:
    """restore hashes what it writes and checks it against the manifest at the end: the same
    manifest of 850,000 lines must not cost an object per line there either."""
    lower = LowerTree(tmp_path / "lower", CLEAR, 16)
    lower.file("kept", b"x")
    tar = _bomb(tmp_path, "well-formed", (b"Private/kept", lower.lower("kept").read_bytes()))
    dest = tmp_path / "dest"
    code, _, shown = _bounded_run("restore", str(tar), str(dest))
    assert code == 1, shown
    assert (dest / "kept").read_bytes() == b"x"
    assert "HMAC does not verify" in shown and "kept: not in the manifest" in shown, shown


_CHAIN = 20_000


def test_verify_follows_a_long_hard_link_chain(tmp_path: Path) -> None:
    """Private/h1 links to Private/f, h2 to h1, ... h20000 to h19999 (tar allows a link to a
    link): each name resolves to f's data without recursion and without walking the chain
    again for every name (20,000² hops)."""
    data = b"chained data\n"
    digest = hashlib.sha256(data).hexdigest().encode()
    names = [b"Private/f"] + [b"Private/h%d" % i for i in range(1, _CHAIN + 1)]
    restore = b"plain text\n"
    lines = [
        b"f %d %s RESTORE.txt\n" % (len(restore), hashlib.sha256(restore).hexdigest().encode()),
        b"d 0 %s Private\n" % (b"-" * 64),
        b"f %d %s Private/f\n" % (len(data), digest),
    ]
    lines += [b"h %d %s %s Private/f\n" % (len(data), digest, name) for name in names[1:]]
    head = _HEAD.replace(b"entries 1\n", b"entries %d\n" % len(lines))
    tar = tmp_path / "chain.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        _add(t, b"RESTORE.txt", restore)
        _add(t, b"Private")
        _add(t, names[0], data)
        for prev, name in itertools.pairwise(names):
            info = tarfile.TarInfo(os.fsdecode(name))
            info.type, info.linkname, info.mtime = tarfile.LNKTYPE, os.fsdecode(prev), 1_700_000_000
            t.addfile(info)
        _add(t, b"MANIFEST.ecarchive", head + b"".join(lines))
    started = time.monotonic()
    r = run_cli(["verify", str(tar)], passphrase=None)
    seconds = time.monotonic() - started
    out = r.stdout.decode()
    assert r.returncode == 0, out[-3000:] + r.stderr.decode()[-3000:]
    assert f"OK, {_CHAIN + 3} entries" in out
    assert seconds < 60, f"{seconds:.0f} s"
