"""Mounting and unmounting: checks first, then the FUSE loop in front or in the background.

In the background (the default, like sshfs and gocryptfs) the command returns once the kernel
has answered the mount, so `ecarchive mount SRC MNT && rsync -a MNT/ remote:` works; the
server process then has no terminal. With `foreground` it serves until unmounted; SIGINT,
SIGTERM and SIGHUP end libfuse's loop, which unmounts before returning.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import ModuleType

from ..ecryptfs.keys import KeySet
from ..errors import EXIT_FATAL, EcarchiveError, Reporter
from ..keysource import KeySource
from ..keystore import StableKeys, key_source
from .keys import InodeKeys
from .names import Names
from .readahead import raise_read_ahead_soon
from .view import LowerView

FUSE_DEVICE = "/dev/fuse"
FUSERMOUNTS = ("fusermount3", "fusermount")
_NULL = "/dev/null"
_READY = b"1"
_UMOUNT_TIMEOUT = 60
_LIBFUSE_3 = 3
_MAX_THREADS = 16  # requests served at once; crypto and preadv run without the GIL


class MountUnavailable(EcarchiveError):
    """FUSE cannot be used here: no /dev/fuse, fusermount, libfuse or mfusepy."""


class MountFailed(EcarchiveError):
    """The mount or unmount itself failed (libfuse or fusermount said why)."""


@dataclass(frozen=True, slots=True)
class MountRequest:
    source: str
    mountpoint: str
    keys: KeySet
    key_bytes: int
    excludes: tuple[str, ...] = ()
    stable_keys: bool = False
    key_store: str | None = None
    rotate_keys_on_change: bool = False
    foreground: bool = False
    allow_other: bool = False


def fusermount() -> str | None:
    for name in FUSERMOUNTS:
        found = shutil.which(name)
        if found:
            return found
    return None


def check_fuse(device: str = FUSE_DEVICE) -> None:
    """One clear error when this machine cannot mount FUSE file systems at all."""
    try:
        os.close(os.open(device, os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        raise MountUnavailable(
            f"cannot use {device}: {e.strerror}",
            hint="load the fuse module (modprobe fuse); in a container, pass /dev/fuse through",
        ) from e
    if os.geteuid() != 0 and fusermount() is None:
        # Only root mounts without the setuid helper.
        raise MountUnavailable(
            "neither fusermount3 nor fusermount is on PATH",
            hint="install fuse3 (apt-get install fuse3)",
        )


def load_fuse() -> ModuleType:
    """mfusepy, bound to libfuse 3 where it is installed (libfuse 2 otherwise)."""
    chosen = "FUSE_LIBRARY_PATH" in os.environ or "FUSE_LIBRARY_NAME" in os.environ
    # mfusepy prefers libfuse 2 when both are installed; 3 is the maintained one.
    if not chosen and ctypes.util.find_library("fuse3"):
        os.environ["FUSE_LIBRARY_NAME"] = "fuse3"
    try:
        import mfusepy
    except ImportError as e:
        raise MountUnavailable(
            f"mount needs the optional FUSE support: {e}",
            hint="pip install 'ecarchive[mount]'",
        ) from e
    except OSError as e:  # mfusepy raises it when no libfuse is installed
        raise MountUnavailable(f"mount needs libfuse: {e}", hint="apt-get install fuse3") from e
    module: ModuleType = mfusepy
    return module


def _check_dirs(req: MountRequest) -> None:
    for what, path in (("SOURCE", req.source), ("MOUNTPOINT", req.mountpoint)):
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            raise EcarchiveError(f"{what} {path}: {e.strerror}") from e
        if not stat.S_ISDIR(mode):
            raise EcarchiveError(f"{what} {path}: not a directory")
    if os.path.realpath(req.mountpoint).startswith(os.path.join(os.path.realpath(req.source), "")):
        # The view would contain itself; every walk of SOURCE would recurse into it.
        raise EcarchiveError(f"MOUNTPOINT {req.mountpoint} is inside SOURCE {req.source}")


def open_view(req: MountRequest, reporter: Reporter) -> tuple[LowerView, KeySource]:
    """The view a mount serves (also what the tests drive without FUSE)."""
    source = key_source(
        req.keys.file_key,
        req.key_bytes,
        reporter,
        stable=req.stable_keys,
        store_path=req.key_store,
        rotate_on_change=req.rotate_keys_on_change,
    )
    view = LowerView(
        os.fsencode(req.source),
        Names(req.keys.fnek, req.key_bytes),
        InodeKeys(source),
        reporter,
        excludes=req.excludes,
    )
    return view, source


def _fuse_options(req: MountRequest, fuse: ModuleType) -> dict[str, object]:
    options: dict[str, object] = {
        "ro": True,
        "default_permissions": True,
        "use_ino": True,  # plaintext inode numbers: tar and rsync -H see the hard links
        "fsname": f"ecarchive:{os.path.realpath(req.source)}",
        "subtype": "ecarchive",
    }
    if fuse.fuse_version_major == _LIBFUSE_3:
        options["max_threads"] = _MAX_THREADS
        # libfuse 3.14 prints "Ignoring invalid max threads value" for the unset default.
        options["max_idle_threads"] = _MAX_THREADS
    if req.allow_other:
        options["allow_other"] = True
    return options


def _serve(req: MountRequest, reporter: Reporter, ready: Callable[[], None] | None) -> int:
    fuse = load_fuse()
    from .fs import LowerFS, LowerFUSE  # imports mfusepy: only once it is known to load

    view, source = open_view(req, reporter)

    def started() -> None:
        if os.geteuid() == 0:
            raise_read_ahead_soon(req.mountpoint)
        if ready is not None:
            ready()

    ops = LowerFS(view, started)
    try:
        LowerFUSE(ops, req.mountpoint, foreground=True, **_fuse_options(req, fuse))
    except RuntimeError as e:
        # libfuse 3 reports a loop ended by SIGINT/SIGTERM as an error, after unmounting;
        # only a mount that never answered has failed.
        if not ops.started:
            raise MountFailed(f"cannot mount {req.mountpoint} (libfuse error {e})") from e
    finally:
        view.close()
        if isinstance(source, StableKeys):
            source.close()
    return reporter.exit_code


def mount(req: MountRequest, reporter: Reporter) -> int:
    """Mount SOURCE's lower view on MOUNTPOINT; returns the exit status."""
    req = _absolute(req)
    _check_dirs(req)
    load_fuse()
    check_fuse()
    if req.foreground:
        return _serve(req, reporter, None)
    return _background(req, reporter)


def _absolute(req: MountRequest) -> MountRequest:
    # The background server changes to / so that it keeps no directory busy.
    key_store = os.path.abspath(req.key_store) if req.key_store else None
    return replace(
        req,
        source=os.path.abspath(req.source),
        mountpoint=os.path.abspath(req.mountpoint),
        key_store=key_store,
    )


def _background(req: MountRequest, reporter: Reporter) -> int:
    """Fork the server; return 0 once it reports the mount answering, else its exit status."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the server process; its behaviour is tested end to end
        os.close(ready_r)
        os._exit(_server_child(req, reporter, ready_w))
    os.close(ready_w)
    try:
        answer = os.read(ready_r, 1)
    finally:
        os.close(ready_r)
    if answer == _READY:
        return reporter.exit_code
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code > 0 else EXIT_FATAL


def _server_child(req: MountRequest, reporter: Reporter, ready_w: int) -> int:  # pragma: no cover
    os.setsid()
    os.chdir("/")

    def ready() -> None:
        os.write(ready_w, _READY)
        os.close(ready_w)
        # Detached from here on: a caller reading our output must not wait for the server.
        null = os.open(_NULL, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)

    try:
        return _serve(req, reporter, ready)
    except EcarchiveError as e:
        print(f"{reporter.prog}: error: {e}", file=sys.stderr, flush=True)
        if e.hint:
            print(f"{reporter.prog}: hint: {e.hint}", file=sys.stderr, flush=True)
        return e.exit_code
    except BaseException as e:
        print(f"{reporter.prog}: error: mount server failed: {e!r}", file=sys.stderr, flush=True)
        return EXIT_FATAL


def umount(mountpoint: str) -> None:
    """Unmount a FUSE mount (fusermount3 -u, fusermount -u, or umount for root)."""
    tool = fusermount()
    if tool is not None:
        cmd = [tool, "-u", mountpoint]
    elif os.geteuid() == 0 and shutil.which("umount"):
        cmd = ["umount", mountpoint]
    else:
        raise MountUnavailable(
            "neither fusermount3 nor fusermount is on PATH",
            hint="install fuse3 (apt-get install fuse3)",
        )
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_UMOUNT_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MountFailed(f"cannot unmount {mountpoint}: {e}") from e
    if done.returncode != 0:
        detail = done.stderr.strip() or f"{cmd[0]} exited with {done.returncode}"
        raise MountFailed(f"cannot unmount {mountpoint}: {detail}")
