"""A second process that encrypts extents while this one reads and writes.

`cryptography` keeps the GIL while it encrypts, so threads cannot overlap AES with reading,
hashing and writing; a forked process can. The coprocessor is deliberately dumb: it owns no
file, key source or reporter. The reading process fills a slot of shared memory with
plaintext extents, names the slot, the FEK and the first extent index in a fixed-size request
on a pipe, and later reads a one-byte answer: the slot now holds the ciphertext (encrypted in
place). Everything with semantics (key material, GNU tar's shrink/grow rules, warnings, output
order) stays in the reading process, which therefore behaves exactly as without the helper.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import struct
import weakref

from .ecryptfs.extent import encrypt_extents
from .errors import EcarchiveError

SLOT_SIZE = 1 << 20  # plaintext per request; a multiple of the extent size
SLOTS = 4  # one being written out, two queued at the helper, one encrypted here meanwhile
IN_FLIGHT = 2  # requests queued at the helper, so it never waits for the next one
_MAX_KEY = 32
_IV = 16
_REQUEST = struct.Struct(f"=BIQB{_MAX_KEY}s{_IV}s")  # slot, length, first index, key length, key, IV
_OK = b"\0"
_FAILED = b"\1"
_ERROR_LENGTH = struct.Struct("=I")
_NULL = "/dev/null"


class CoprocessorFailed(EcarchiveError):
    """The encrypting helper process died or reported an error."""


def _read_exact(fd: int, n: int) -> bytes:
    parts: list[bytes] = []
    while n:
        part = os.read(fd, n)
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _serve(requests: int, answers: int, memory: mmap.mmap) -> None:
    """The helper's loop: encrypt slots in place until the request pipe closes."""
    view = memoryview(memory)
    while True:
        raw = _read_exact(requests, _REQUEST.size)
        if len(raw) < _REQUEST.size:
            return
        slot, length, first, key_len, key, iv = _REQUEST.unpack(raw)
        region = view[slot * SLOT_SIZE : slot * SLOT_SIZE + length]
        try:
            encrypt_extents(key[:key_len], iv, first, region, region)
        except Exception as e:  # reported to the reading process, which raises it
            message = f"{type(e).__name__}: {e}".encode()
            os.write(answers, _FAILED + _ERROR_LENGTH.pack(len(message)) + message)
            continue
        finally:
            region.release()
        os.write(answers, _OK)


def _child(requests: int, answers: int, memory: mmap.mmap) -> None:
    # Hold no descriptor of the parent's: a pipe reader waiting for EOF on the archive must
    # not wait for this process too.
    null = os.open(_NULL, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    keep = sorted({0, 1, 2, requests, answers})
    low = 3
    for fd in keep[3:]:
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))
    _serve(requests, answers, memory)


class Coprocessor:
    """The helper process and its shared slots. Requests are answered in order."""

    def __init__(self) -> None:
        self.memory = mmap.mmap(-1, SLOTS * SLOT_SIZE, flags=mmap.MAP_SHARED)
        self.slots = [
            memoryview(self.memory)[i * SLOT_SIZE : (i + 1) * SLOT_SIZE] for i in range(SLOTS)
        ]
        req_r, req_w = os.pipe()
        ans_r, ans_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the helper, which never returns
            try:
                os.close(req_w)
                os.close(ans_r)
                _child(req_r, ans_w, self.memory)
            finally:
                os._exit(0)
        os.close(req_r)
        os.close(ans_w)
        self.pid = pid
        self._requests = req_w
        self._answers = ans_r
        self._finalizer = weakref.finalize(self, _stop, pid, req_w, ans_r)

    def submit(self, slot: int, length: int, fek: bytes, root_iv: bytes, first: int) -> None:
        """Ask for `length` bytes of `slot` to be encrypted in place as extents first, ..."""
        request = _REQUEST.pack(slot, length, first, len(fek), fek, root_iv)
        try:
            os.write(self._requests, request)
        except OSError as e:
            raise CoprocessorFailed(f"the encrypting helper is gone: {e.strerror}") from e

    def ready(self) -> bool:
        """Whether the oldest request is done (wait() would not block)."""
        return bool(select.select([self._answers], [], [], 0)[0])

    def wait(self) -> None:
        """Block until the oldest request is done."""
        status = _read_exact(self._answers, 1)
        if status == _OK:
            return
        if status == _FAILED:
            (n,) = _ERROR_LENGTH.unpack(_read_exact(self._answers, _ERROR_LENGTH.size))
            raise CoprocessorFailed(
                f"the encrypting helper failed: {_read_exact(self._answers, n).decode()}"
            )
        raise CoprocessorFailed("the encrypting helper exited unexpectedly")

    def close(self) -> None:
        self._finalizer()


def _stop(pid: int, requests: int, answers: int) -> None:
    os.close(requests)  # the helper sees EOF and exits
    os.close(answers)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
