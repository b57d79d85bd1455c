"""A second process that reads and encrypts while this one writes.

`cryptography` keeps the GIL while it encrypts, so threads cannot overlap AES with hashing and
writing; a forked process can. The helper is deliberately dumb: it owns no key source,
reporter or output. It takes two kinds of request, each naming a slot of shared memory:

* extents: the slot holds plaintext extents of one file; encrypt them in place.
* batch: read these small files (path, planned size, mtime) into the slot at these offsets,
  pad each to whole extents and encrypt it with its own FEK; report per file whether it
  opened, how much it read, and whether it grew or its mtime changed.

Answers come back in request order; each request gets a ticket to claim its answer with.
Everything with semantics (key material, warnings, output order) stays in the process that
asks, which therefore behaves exactly as without the helper.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import gc
import mmap
import os
import select
import stat
import struct
import weakref
from collections import deque
from dataclasses import dataclass

from .ecryptfs.constants import EXTENT_SIZE
from .ecryptfs.extent import encrypt_extents
from .errors import EcarchiveError

SLOT_SIZE = 1 << 20  # bytes per slot; a multiple of the extent size
SLOTS = 4  # extent slots: one being written out, two queued at the helper, one encrypted here
IN_FLIGHT = 2  # extent requests queued at the helper, so it never waits for the next one
BATCH_SLOTS = 3  # slots of small files: one being written out, two read ahead
BATCH_FILES = 128  # files per batch; keeps a batch's answer within one atomic pipe write
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0)

_MAX_KEY = 32
_IV = 16
_EXTENTS, _BATCH = 1, 2
_EXTENT_REQUEST = struct.Struct(f"=BBIQB{_MAX_KEY}s{_IV}s")  # kind, slot, length, first, key
_BATCH_REQUEST = struct.Struct("=BBII")  # kind, slot, files, payload bytes
_BATCH_FILE = struct.Struct(f"=HQqB{_MAX_KEY}s{_IV}sI")  # path length, size, mtime, key, offset
_BATCH_RESULT = struct.Struct("=BBiQ")  # status, flags, errno, bytes read
_OK = b"\0"
_FAILED = b"\1"
_ERROR_LENGTH = struct.Struct("=I")
_NULL = "/dev/null"


class CoprocessorFailed(EcarchiveError):
    """The encrypting helper process died or reported an error."""


class Status(enum.IntEnum):
    READ = 0
    VANISHED = 1
    OPEN_FAILED = 2
    NOT_REGULAR = 3


GREW = 1
CHANGED = 2


@dataclass(frozen=True, slots=True)
class SmallFile:
    path: bytes
    plain_size: int
    mtime_ns: int
    fek: bytes
    root_iv: bytes
    offset: int  # where its lower data (after the header) goes in the slot


@dataclass(frozen=True, slots=True)
class SmallResult:
    status: Status
    flags: int  # GREW | CHANGED
    error: int  # errno when status is OPEN_FAILED
    read: int  # plaintext bytes read (less than planned: the file shrank)


def padded(size: int) -> int:
    return -(-size // EXTENT_SIZE) * EXTENT_SIZE


def _read_exact(fd: int, n: int) -> bytes:
    parts: list[bytes] = []
    while n:
        part = os.read(fd, n)
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def open_plain(path: bytes) -> int:
    try:
        return os.open(path, OPEN_FLAGS)
    except PermissionError:
        # O_NOATIME is refused on files we do not own unless we are root
        return os.open(path, OPEN_FLAGS & ~getattr(os, "O_NOATIME", 0))


def read_full(fd: int, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return got


def _read_small(file: SmallFile, region: memoryview) -> SmallResult:
    """The helper's side of one batched file: GNU tar's rules, as reader._Plaintext."""
    try:
        fd = open_plain(file.path)
    except FileNotFoundError:
        return SmallResult(Status.VANISHED, 0, 0, 0)
    except OSError as e:
        return SmallResult(Status.OPEN_FAILED, 0, e.errno or errno.EIO, 0)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return SmallResult(Status.NOT_REGULAR, 0, 0, 0)
        size = padded(file.plain_size)
        data = region[file.offset : file.offset + size]
        got = read_full(fd, data[: file.plain_size])
        data[got:] = bytes(size - got)
        encrypt_extents(file.fek, file.root_iv, 0, data, data)
        st = os.fstat(fd)
        flags = 0
        if got == file.plain_size and st.st_size > file.plain_size:
            flags = GREW
        elif st.st_mtime_ns != file.mtime_ns:
            flags = CHANGED
        return SmallResult(Status.READ, flags, 0, got)
    finally:
        os.close(fd)


def _serve(requests: int, answers: int, memory: mmap.mmap) -> None:
    """The helper's loop: work through requests until the request pipe closes."""
    view = memoryview(memory)
    while True:
        kind = _read_exact(requests, 1)
        if not kind:
            return
        try:
            if kind[0] == _EXTENTS:
                raw = kind + _read_exact(requests, _EXTENT_REQUEST.size - 1)
                _, slot, length, first, key_len, key, iv = _EXTENT_REQUEST.unpack(raw)
                region = view[slot * SLOT_SIZE : slot * SLOT_SIZE + length]
                encrypt_extents(key[:key_len], iv, first, region, region)
                answer = _OK
            else:
                raw = kind + _read_exact(requests, _BATCH_REQUEST.size - 1)
                _, slot, count, size = _BATCH_REQUEST.unpack(raw)
                payload = _read_exact(requests, size)
                region = view[slot * SLOT_SIZE : (slot + 1) * SLOT_SIZE]
                results = [_read_small(f, region) for f in _unpack_batch(payload, count)]
                answer = _OK + b"".join(
                    _BATCH_RESULT.pack(r.status, r.flags, r.error, r.read) for r in results
                )
        except Exception as e:  # reported to the asking process, which raises it
            message = f"{type(e).__name__}: {e}".encode()
            answer = _FAILED + _ERROR_LENGTH.pack(len(message)) + message
        _write_all(answers, answer)


def _pack_batch(files: list[SmallFile]) -> bytes:
    return b"".join(
        _BATCH_FILE.pack(
            len(f.path), f.plain_size, f.mtime_ns, len(f.fek), f.fek, f.root_iv, f.offset
        )
        + f.path
        for f in files
    )


def _unpack_batch(payload: bytes, count: int) -> list[SmallFile]:
    files = []
    pos = 0
    for _ in range(count):
        path_len, size, mtime, key_len, key, iv, offset = _BATCH_FILE.unpack_from(payload, pos)
        pos += _BATCH_FILE.size
        files.append(SmallFile(payload[pos : pos + path_len], size, mtime, key[:key_len], iv, offset))
        pos += path_len
    return files


def _child(requests: int, answers: int, memory: mmap.mmap) -> None:
    # The parent's heap is shared copy-on-write; a collection would touch every object in it
    # and copy those pages. The loop makes no reference cycles worth collecting.
    gc.disable()
    gc.freeze()
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
    """The helper process and its shared slots: `slots` for extents, then `batch_slots`."""

    def __init__(self) -> None:
        total = SLOTS + BATCH_SLOTS
        self.memory = mmap.mmap(-1, total * SLOT_SIZE, flags=mmap.MAP_SHARED)
        views = [memoryview(self.memory)[i * SLOT_SIZE : (i + 1) * SLOT_SIZE] for i in range(total)]
        self.slots = views[:SLOTS]
        self.batch_slots = views[SLOTS:]
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
        self._owed: deque[tuple[int, int]] = deque()  # (ticket, answer bytes after status)
        self._answered: dict[int, bytes] = {}
        self._tickets = 0
        self._finalizer = weakref.finalize(self, _stop, pid, req_w, ans_r)

    def _send(self, request: bytes, answer_size: int) -> int:
        try:
            _write_all(self._requests, request)
        except OSError as e:
            raise CoprocessorFailed(f"the encrypting helper is gone: {e.strerror}") from e
        self._tickets += 1
        self._owed.append((self._tickets, answer_size))
        return self._tickets

    def submit(self, slot: int, length: int, fek: bytes, root_iv: bytes, first: int) -> int:
        """Ask for `length` bytes of extent slot `slot` to be encrypted in place as extents
        first, first+1, ...; returns the ticket."""
        return self._send(
            _EXTENT_REQUEST.pack(_EXTENTS, slot, length, first, len(fek), fek, root_iv), 0
        )

    def submit_batch(self, slot: int, files: list[SmallFile]) -> int:
        """Ask for `files` to be read and encrypted into batch slot `slot`; returns the ticket."""
        payload = _pack_batch(files)
        request = _BATCH_REQUEST.pack(_BATCH, SLOTS + slot, len(files), len(payload)) + payload
        return self._send(request, len(files) * _BATCH_RESULT.size)

    def ready(self, ticket: int) -> bool:
        """Whether wait(ticket) would not block."""
        if ticket in self._answered:
            return True
        return bool(self._owed and self._owed[0][0] == ticket) and bool(
            select.select([self._answers], [], [], 0)[0]
        )

    def wait(self, ticket: int) -> bytes:
        """Block until request `ticket` is done; returns its answer (batch results)."""
        while ticket not in self._answered:
            if not self._owed:
                raise CoprocessorFailed(f"no request {ticket} is waiting for an answer")
            owed, size = self._owed.popleft()
            status = _read_exact(self._answers, 1)
            if status == _FAILED:
                (n,) = _ERROR_LENGTH.unpack(_read_exact(self._answers, _ERROR_LENGTH.size))
                detail = _read_exact(self._answers, n).decode(errors="replace")
                raise CoprocessorFailed(f"the encrypting helper failed: {detail}")
            if status != _OK:
                raise CoprocessorFailed("the encrypting helper exited unexpectedly")
            self._answered[owed] = _read_exact(self._answers, size)
        return self._answered.pop(ticket)

    def results(self, ticket: int) -> list[SmallResult]:
        """wait() for a batch, its answer decoded."""
        answer = self.wait(ticket)
        return [
            SmallResult(Status(s), flags, err, got)
            for s, flags, err, got in _BATCH_RESULT.iter_unpack(answer)
        ]

    def close(self) -> None:
        self._finalizer()


def _stop(pid: int, requests: int, answers: int) -> None:
    os.close(requests)  # the helper sees EOF and exits
    os.close(answers)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
