"""The encrypting reader: one plan entry → its lower bytes (header, then extents).

The one hot path. A bounded pool of threads reads and encrypts files ahead of the sink:
`cryptography` (≥ 50) and `hashlib` release the GIL while they work on large buffers, and so
do the read system calls, so the workers run on every core while this thread, the sink's,
writes. Everything with semantics stays on the sink's thread, in the order the sink asks:
key material is drawn, warnings are given and GNU tar's rules for a file that changed while
read are applied there (`_Changes`, the one place those rules live). Workers only open, read,
pad and encrypt into buffers they are handed.

* Files up to CHUNK bytes are read whole, several to a buffer (a batch, one job).
* Larger files are opened here and cut into CHUNK-sized jobs, each read with pread. A part's
  job also hashes it, after its predecessor's (a file's hash runs in order), so the sink's
  thread hashes nothing.
* At most `window` buffers of CHUNK bytes are in flight, whatever the tree and `jobs`.

Files are opened below SOURCE's descriptor only (see `fsio`): never through a symlink, never
blocking on a FIFO or device that replaced a planned file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor

from .ecryptfs.constants import EXTENT_SIZE
from .ecryptfs.extent import encrypt_extents, encrypt_extents_from, root_iv
from .ecryptfs.header import build_header
from .errors import Reporter
from .fsio import DirHandle, NotRegularFile, TreeDirs, open_regular, pread_full, read_full
from .keysource import KeyMaterial, KeySource
from .model import Entry, Kind

# Plaintext bytes per job and per buffer; a multiple of EXTENT_SIZE. 2 MiB fills the extent
# cipher's 512-extent tile (0.53 CPU-s/GiB vs 0.73 for 1 MiB and 0.8 for 4 MiB, one thread).
CHUNK = 2 << 20
BATCH_FILES = 64  # small files per job: enough to amortise a job's cost, few to wait on
MAX_QUEUED = 4096  # entries prepared ahead, whatever their size (bounds empty files)
_ZEROS = bytes(CHUNK)
# Work that holds the GIL most of its time takes turns: a batch of small files (Python for
# every file) and a large part's interleaved cipher (512 short calls per CHUNK, each dropping
# and retaking the GIL). Two workers doing either at once handed the GIL back and forth on
# every call: two threads encrypting ran at 0.78x the throughput of one, and 50,000 small
# files took 15.9 s with -j2 against 14.6 s with -j1. With turns, the other workers read and
# hash large parts meanwhile, long calls without the GIL.
_CIPHER_TURN = threading.Lock()
Chunk = bytes | bytearray | memoryview


def default_jobs() -> int:
    """One worker per CPU. Work that holds the GIL takes turns (_CIPHER_TURN), so an extra
    worker no longer fights the others for it but reads and hashes while they encrypt (2 CPUs,
    medians of 3: -j2 against -j1 took 0.76x the time on large files, 0.88x on the mixed tree,
    1.03x on 50,000 small files)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cpus or 1)


def window_for(jobs: int) -> int:
    """Buffers in flight: each worker busy with one and one done ahead of it, plus the one
    the sink is writing; (2 + 2·jobs) CHUNKs in all (≤ 36 MiB for 8 jobs)."""
    return 2 * jobs + 2


def padded(size: int) -> int:
    return -(-size // EXTENT_SIZE) * EXTENT_SIZE


class Hashed(Iterator[Chunk]):
    """Lower bytes whose SHA-256 the workers computed beside the encryption, so the manifest
    need not hash them again on the sink's thread. `sha256` is the digest when it is known
    already (a small file), else a function giving it once every chunk was taken (a large
    file, hashed part after part)."""

    __slots__ = ("_chunks", "sha256")

    def __init__(self, chunks: Iterator[Chunk], sha256: bytes | Callable[[], bytes]) -> None:
        self._chunks = chunks
        self.sha256 = sha256

    def __next__(self) -> Chunk:
        return next(self._chunks)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def _settle(futures: Iterable[Future[None] | None]) -> None:
    """Wait until these jobs no longer touch their buffers: done, failed or cancelled (close()
    cancels what has not started; a generator abandoned by the sink is finalised after).

    Not `concurrent.futures.wait`: it counts a future cancelled by `shutdown(cancel_futures=
    True)` as pending for ever (only CANCELLED_AND_NOTIFIED is done there), and an interrupted
    run then hung in the generator's cleanup. `exception()` returns for every end state."""
    for future in futures:
        if future is not None:
            with contextlib.suppress(CancelledError):
                future.exception()


class _Changes:
    """GNU tar's rules for a file that changes while it is read, for one file: pad a file that
    shrank with zeros, cut one that grew at its planned size, warn when the mtime changed."""

    __slots__ = ("entry", "eof", "remaining", "reporter")

    def __init__(self, entry: Entry, reporter: Reporter) -> None:
        self.entry = entry
        self.reporter = reporter
        self.remaining = entry.plain_size
        self.eof = False

    def read(self, want: int, got: int, error: int = 0) -> bool:
        """Account one chunk of `want` planned bytes of which `got` were read; returns whether
        those bytes are to be replaced by zeros (read after the file had already ended)."""
        stale = self.eof and got > 0
        if got < want and not self.eof:
            self.eof = True
            name = os.fsdecode(self.entry.rel)
            missing = self.remaining - got
            if error:
                self.reporter.warn(
                    f"{name}: read error ({os.strerror(error)}); {missing} bytes padded with zeros"
                )
            else:
                self.reporter.warn(f"{name}: file shrank by {missing} bytes; padding with zeros")
        self.remaining -= want
        return stale

    def finish(self, size: int, mtime_ns: int) -> None:
        """`size` and `mtime_ns` from fstat after the last read."""
        name = os.fsdecode(self.entry.rel)
        if not self.eof and size > self.entry.plain_size:
            self.reporter.warn(
                f"{name}: file grew while read; cut at {self.entry.plain_size} bytes"
            )
        elif mtime_ns != self.entry.mtime_ns:
            self.reporter.warn(f"{name}: file changed as we read it")


def _open_failure(entry: Entry, error: OSError, *, in_path: bool) -> str:
    name = os.fsdecode(entry.rel)
    if isinstance(error, FileNotFoundError):
        return f"{name}: file removed before we read it"
    if isinstance(error, NotRegularFile) or (not in_path and error.errno == errno.ELOOP):
        return f"{name}: no longer a regular file; skipped"
    if in_path and error.errno in (errno.ELOOP, errno.ENOTDIR):
        return f"{name}: a directory on its path is no longer a directory; skipped"
    return f"{name}: cannot open: {error.strerror}; skipped"


def _fill(fd: int, view: memoryview, want: int, offset: int | None) -> tuple[int, int]:
    """Read `want` bytes into `view` and zero the rest of it; returns (bytes read, errno)."""
    error = 0
    try:
        got = read_full(fd, view[:want]) if offset is None else pread_full(fd, view[:want], offset)
    except OSError as e:
        got, error = 0, e.errno or errno.EIO
    view[got:] = _ZEROS[: len(view) - got]
    return got, error


class _Reading:
    """Reads one file's plaintext for encrypt_extents_from, a piece at a time and in order:
    `want` bytes from `offset` (None: from the file position), zeros after them, and zeros
    after the first short read (the file ended, or a read failed: `error`)."""

    __slots__ = ("error", "fd", "got", "offset", "short", "want")

    def __init__(self, fd: int, want: int, offset: int | None) -> None:
        self.fd = fd
        self.want = want
        self.offset = offset
        self.got = self.error = 0
        self.short = False

    def fill(self, view: memoryview, at: int) -> None:
        wanted = 0 if self.short else min(len(view), self.want - at)
        if wanted <= 0:
            view[:] = _ZEROS[: len(view)]
            return
        offset = None if self.offset is None else self.offset + at
        got, self.error = _fill(self.fd, view, wanted, offset)
        self.got += got
        self.short = got < wanted


class _Small:
    """One file read whole by a worker into its batch's buffer."""

    __slots__ = (
        "dir",
        "entry",
        "error",
        "fek",
        "got",
        "header",
        "mtime_ns",
        "name",
        "offset",
        "read_error",
        "sha256",
        "size",
    )

    def __init__(self, entry: Entry, header: bytes, fek: bytes, offset: int) -> None:
        self.entry = entry
        self.header = header
        self.fek = fek
        self.offset = offset
        self.dir: DirHandle | None = None
        self.name = b""
        self.error: str | None = None  # why it could not be opened, as the warning says it
        self.got = self.read_error = self.size = self.mtime_ns = 0
        self.sha256 = b""

    def run(self, buffer: memoryview) -> None:
        """In a worker: open, read, pad, encrypt, fstat."""
        handle = self.dir
        if handle is None:
            return  # its directory could not be opened (self.error says why)
        entry = self.entry
        try:
            fd, _ = open_regular(self.name, handle.fd)
        except OSError as e:
            self.error = _open_failure(entry, e, in_path=False)
            return
        finally:
            handle.release()
            self.dir = None
        try:
            data = buffer[self.offset : self.offset + padded(entry.plain_size)]
            reading = _Reading(fd, entry.plain_size, None)
            encrypt_extents_from(self.fek, root_iv(self.fek), 0, reading.fill, data)
            self.got, self.read_error = reading.got, reading.error
            digest = hashlib.sha256(self.header)
            digest.update(data)
            self.sha256 = digest.digest()
            st = os.fstat(fd)
            self.size, self.mtime_ns = st.st_size, st.st_mtime_ns
        finally:
            os.close(fd)


class _Batch:
    """Small files sharing one buffer and one job."""

    __slots__ = ("buffer", "files", "future", "left", "used")

    def __init__(self, buffer: bytearray) -> None:
        self.buffer = buffer
        self.files: list[_Small] = []
        self.used = 0
        self.left = 0  # files not yet served to the sink
        self.future: Future[None] | None = None

    def run(self) -> None:
        view = memoryview(self.buffer)
        with _CIPHER_TURN:
            for small in self.files:
                small.run(view)


class _Part:
    """CHUNK bytes (or the tail) of a large file, read with pread, encrypted and hashed by a
    worker."""

    __slots__ = ("buffer", "ended", "future", "got", "index", "previous", "read_error", "want")

    def __init__(self, buffer: bytearray, index: int, want: int, previous: _Part | None) -> None:
        self.buffer = buffer
        self.index = index  # first extent
        self.want = want
        # The part before, until this one is hashed: its hash goes first. It was submitted
        # earlier to the same FIFO pool, so it is running or done when this one waits for it.
        self.previous = previous
        self.got = self.read_error = 0
        self.ended = False  # the file had ended by the end of this part (a short read)
        self.future: Future[None] | None = None

    def run(self, fd: int, fek: bytes, iv: bytes, digest: hashlib._Hash) -> None:
        view = memoryview(self.buffer)[: padded(self.want)]
        reading = _Reading(fd, self.want, self.index * EXTENT_SIZE)
        with _CIPHER_TURN:  # the reads too: each lands in a buffer the cipher has in cache
            encrypt_extents_from(fek, iv, self.index, reading.fill, view)
        self.got, self.read_error = reading.got, reading.error
        previous, self.previous = self.previous, None
        ended = False
        if previous is not None:
            assert previous.future is not None
            try:
                if previous.future.exception() is not None:
                    return  # the file is abandoned: its hash does not matter
            except CancelledError:
                return
            ended = previous.ended
        if ended and self.got:
            # read after the file had ended (it grew back): zeros, as a serial reader that
            # stopped at the end would have stored (_Changes warns on the sink's thread)
            view[:] = _ZEROS[: len(view)]
            with _CIPHER_TURN:
                encrypt_extents(fek, iv, self.index, view, view)
        self.ended = ended or self.got < self.want
        digest.update(view)


class _Large:
    """A file larger than CHUNK: opened on the sink's thread, its parts read by workers."""

    __slots__ = (
        "entry",
        "error",
        "fd",
        "fek",
        "hash",
        "header",
        "iv",
        "last",
        "next_offset",
        "parts",
    )

    def __init__(self, entry: Entry, header: bytes, fek: bytes) -> None:
        self.entry = entry
        self.header = header
        self.fek = fek
        self.iv = root_iv(fek)
        self.fd = -1
        self.error: str | None = None
        self.next_offset = 0  # plaintext offset of the next part to schedule
        self.parts: deque[_Part] = deque()
        self.last: _Part | None = None  # the part scheduled last
        self.hash = hashlib.sha256(header)  # updated by the parts' jobs, in order

    def digest(self) -> bytes:
        return self.hash.digest()

    @property
    def scheduled(self) -> bool:
        return self.error is not None or self.next_offset >= self.entry.plain_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class EncryptingReader:
    """Yields lower bytes for FILE entries. Chunks are views into reused buffers: consume each
    before asking for the next.

    `expect(entries)` declares the order in which `open` will be asked for FILE entries, so
    the workers can read ahead; asking in another order stays correct (what was prepared is
    dropped and the entry is read when asked for)."""

    def __init__(
        self,
        keys: KeySource,
        *,
        filenames_encrypted: bool,
        reporter: Reporter,
        root_fd: int,
        jobs: int | None = None,
    ) -> None:
        self.keys = keys
        self.filenames_encrypted = filenames_encrypted
        self.reporter = reporter
        self.jobs = jobs or default_jobs()
        self.window = window_for(self.jobs)
        self._dirs = TreeDirs(root_fd)
        self._pool: ThreadPoolExecutor | None = None
        self._free: list[bytearray] = []
        self._allocated = 0
        self._upcoming: Iterator[Entry] | None = None
        self._next: Entry | None = None  # taken from _upcoming, waiting for a buffer
        self._queue: deque[tuple[Entry, _Small | _Large, _Batch | None]] = deque()
        self._open_batch: _Batch | None = None
        self._scheduling: _Large | None = None  # the large file whose parts are still to come

    # -- public --------------------------------------------------------------------------

    def expect(self, entries: Iterable[Entry]) -> None:
        self._drop()
        self._upcoming = iter(
            [e for e in entries if e.kind is Kind.FILE and e.data is None and e.source]
        )

    def open(self, entry: Entry) -> Iterator[Chunk] | None:
        """The entry's lower bytes, or None when its file cannot be read (warned; the sink
        skips it)."""
        if entry.data is not None:
            return iter((entry.data,))
        if not self._queue:
            self._schedule()
        head = self._queue[0][0] if self._queue else None
        if head is not entry and head != entry:
            self._drop()
            self._upcoming = iter((entry,))
        self._schedule()
        _, item, batch = self._queue.popleft()
        if isinstance(item, _Large):
            if item.error is not None:
                self.reporter.warn(item.error)
                return None
            return Hashed(self._serve_large(item), item.digest)
        assert batch is not None
        if batch.future is None:
            self._submit_batch()
        assert batch.future is not None
        batch.future.result()
        if item.error is not None:
            self._served(batch)
            self.reporter.warn(item.error)
            return None
        return Hashed(self._serve_small(item, batch), item.sha256)

    def zero_filled(self, entry: Entry) -> Iterator[Chunk]:
        """A valid lower file of the planned size holding zeros: what an image whose layout is
        fixed stores for a file that could not be read after the plan (the opener warned)."""
        material = self.keys.material(entry)
        yield self._header(entry, material)
        fek = material.fek
        iv = root_iv(fek)
        buffer = bytearray(CHUNK)
        for offset in range(0, entry.plain_size, CHUNK):
            view = memoryview(buffer)[: padded(min(CHUNK, entry.plain_size - offset))]
            view[:] = _ZEROS[: len(view)]
            encrypt_extents(fek, iv, offset // EXTENT_SIZE, view, view)
            yield view

    def close(self) -> None:
        """Wait for the workers and release every descriptor (also after an interruption)."""
        self._drop()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._dirs.close()

    # -- scheduling (on the sink's thread) -----------------------------------------------

    def _header(self, entry: Entry, material: KeyMaterial) -> bytes:
        return build_header(
            entry.plain_size,
            material.marker,
            material.packets,
            filenames_encrypted=self.filenames_encrypted,
        )

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="ecarchive-encrypt")
        return self._pool

    def _buffer(self) -> bytearray | None:
        if self._free:
            return self._free.pop()
        if self._allocated < self.window:
            self._allocated += 1
            return bytearray(CHUNK)
        return None

    def _schedule(self) -> None:
        """Hand work to the workers until the buffers or the expected entries run out. Key
        material is drawn only for an entry that gets a place, so it is drawn once, in order."""
        while True:
            large = self._scheduling
            if large is not None:
                if not self._schedule_parts(large):
                    return
                self._scheduling = None
            if len(self._queue) >= MAX_QUEUED:
                break
            entry = self._peek()
            if entry is None:
                break
            if entry.plain_size > CHUNK:
                self._next = None
                material = self.keys.material(entry)
                large = _Large(entry, self._header(entry, material), material.fek)
                self._queue.append((entry, large, None))
                self._open_large(large)
                self._scheduling = large
                continue
            batch = self._batch_for(padded(entry.plain_size))
            if batch is None:
                break
            self._next = None
            material = self.keys.material(entry)
            self._add_small(batch, entry, self._header(entry, material), material.fek)
        self._submit_batch()

    def _peek(self) -> Entry | None:
        if self._next is None and self._upcoming is not None:
            self._next = next(self._upcoming, None)
            if self._next is None:
                self._upcoming = None
        return self._next

    def _batch_for(self, size: int) -> _Batch | None:
        """The batch a small file of `size` padded bytes goes into, or None: no buffer free."""
        batch = self._open_batch
        if batch is not None and (batch.used + size > CHUNK or len(batch.files) >= BATCH_FILES):
            self._submit_batch()
            batch = None
        if batch is None:
            buffer = self._buffer()
            if buffer is None:
                return None
            batch = self._open_batch = _Batch(buffer)
        return batch

    def _add_small(self, batch: _Batch, entry: Entry, header: bytes, fek: bytes) -> None:
        small = _Small(entry, header, fek, batch.used)
        try:
            small.dir, small.name = self._dirs.parent(entry.rel)
        except OSError as e:
            small.error = _open_failure(entry, e, in_path=True)
        batch.files.append(small)
        batch.used += padded(entry.plain_size)
        batch.left += 1
        self._queue.append((entry, small, batch))

    def _submit_batch(self) -> None:
        batch, self._open_batch = self._open_batch, None
        if batch is not None:
            batch.future = self._executor().submit(batch.run)

    def _open_large(self, large: _Large) -> None:
        try:
            handle, name = self._dirs.parent(large.entry.rel)
        except OSError as e:
            large.error = _open_failure(large.entry, e, in_path=True)
            return
        try:
            large.fd, _ = open_regular(name, handle.fd)
        except OSError as e:
            large.error = _open_failure(large.entry, e, in_path=False)
        finally:
            handle.release()

    def _schedule_parts(self, large: _Large) -> bool:
        """Submit the large file's remaining parts while buffers last; True when all are."""
        pool = self._executor()
        size = large.entry.plain_size
        while not large.scheduled:
            buffer = self._buffer()
            if buffer is None:
                return False
            offset = large.next_offset
            part = _Part(buffer, offset // EXTENT_SIZE, min(CHUNK, size - offset), large.last)
            part.future = pool.submit(part.run, large.fd, large.fek, large.iv, large.hash)
            large.parts.append(part)
            large.last = part
            large.next_offset += CHUNK
        return True

    def _drop(self) -> None:
        """Forget what was prepared: wait for its jobs, then release buffers and files."""
        self._submit_batch()
        for _, item, batch in self._queue:
            if isinstance(item, _Large):
                _settle(part.future for part in item.parts)
                self._free.extend(part.buffer for part in item.parts)
                item.parts.clear()
                item.close()
            else:
                assert batch is not None
                _settle((batch.future,))
                if item.dir is not None:
                    item.dir.release()
                    item.dir = None
                self._served(batch)
        self._queue.clear()
        self._scheduling = None
        self._upcoming = None
        self._next = None

    def _served(self, batch: _Batch) -> None:
        batch.left -= 1
        if batch.left == 0:
            self._free.append(batch.buffer)

    # -- serving (on the sink's thread) --------------------------------------------------

    def _serve_small(self, small: _Small, batch: _Batch) -> Iterator[Chunk]:
        try:
            entry = small.entry
            yield small.header
            changes = _Changes(entry, self.reporter)
            changes.read(entry.plain_size, small.got, small.read_error)
            data = memoryview(batch.buffer)[small.offset : small.offset + padded(entry.plain_size)]
            if data:
                yield data
            changes.finish(small.size, small.mtime_ns)
        finally:
            self._served(batch)

    def _serve_large(self, large: _Large) -> Iterator[Chunk]:
        try:
            yield large.header
            changes = _Changes(large.entry, self.reporter)
            while True:
                if not large.parts:
                    self._schedule()
                    if not large.parts:
                        break
                part = large.parts[0]
                assert part.future is not None
                part.future.result()
                changes.read(part.want, part.got, part.read_error)  # the job zeroed if stale
                yield memoryview(part.buffer)[: padded(part.want)]
                large.parts.popleft()
                self._free.append(part.buffer)
            st = os.fstat(large.fd)
            changes.finish(st.st_size, st.st_mtime_ns)
        finally:
            # abandoned midway (the sink failed, or the run was interrupted)
            _settle(part.future for part in large.parts)
            self._free.extend(part.buffer for part in large.parts)
            large.parts.clear()
            large.last = None
            if self._scheduling is large:
                self._scheduling = None
                large.next_offset = large.entry.plain_size
            large.close()
