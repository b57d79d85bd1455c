"""Open a path below a directory descriptor without following any symlink, in one system call.

openat2(2) with RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH (Linux ≥ 5.6) lets the kernel refuse
every symlink and every escape on the way, which a walk of O_NOFOLLOW opens does component by
component at several system calls each: on a tree walk through FUSE that walk was most of the
view's time. Python 3.11 has no os.openat2, so it is called through libc's syscall(). Where
the call is missing (older kernels, seccomp filters), `open_beneath` walks the components.
"""

from __future__ import annotations

import ctypes
import errno
import os

_SYS_OPENAT2 = 437  # the same number on every architecture (added to the unified table in 5.6)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE = _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS | _RESOLVE_BENEATH
_WALK_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A rename racing with the lookup makes openat2 give up with EAGAIN; the walk then decides.
_RETRY_ERRNOS = (errno.EAGAIN,)
_UNSUPPORTED = (errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP)


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _openat2(dir_fd: int, path: bytes, flags: int) -> int:
    how = _OpenHow(flags, 0, _RESOLVE)
    fd: int = _syscall(_SYS_OPENAT2, dir_fd, path, ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), os.fsdecode(path))
    return fd


def _probe() -> bool:
    try:
        os.close(_openat2(-100, b".", os.O_PATH | os.O_CLOEXEC))  # -100: AT_FDCWD
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return False
        raise
    return True


HAVE_OPENAT2 = _probe()


def walk_open(dir_fd: int, parts: tuple[bytes, ...], flags: int) -> int:
    """The component-by-component fallback: every directory opened with O_NOFOLLOW."""
    fd = os.open(".", flags if not parts else _WALK_FLAGS, dir_fd=dir_fd)
    try:
        for i, name in enumerate(parts):
            child = os.open(name, flags if i == len(parts) - 1 else _WALK_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_beneath(dir_fd: int, parts: tuple[bytes, ...], flags: int) -> int:
    """Open `parts` (path components, no '/', '.' or '..') below dir_fd with `flags`; no
    symlink is followed, the last component's included when flags has O_NOFOLLOW."""
    if HAVE_OPENAT2:
        try:
            return _openat2(dir_fd, b"/".join(parts) or b".", flags)
        except OSError as e:
            if e.errno not in _RETRY_ERRNOS:
                raise
    return walk_open(dir_fd, parts, flags)
