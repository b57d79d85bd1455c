"""Extent encryption: root IV, per-extent IV and AES-CBC over 4096-byte extents.

Mirrors fs/ecryptfs/crypto.c: ecryptfs_compute_root_iv, ecryptfs_derive_iv, crypt_extent.
Every extent is its own CBC chain with its own IV, which leaves two ways to go fast:

* encryption runs the chains of a whole batch side by side ("interleaved"): the batch is
  transposed so that block j of every extent is contiguous, then each of the 256 CBC steps is
  one XOR with the previous row plus one AES-ECB call over the row. OpenSSL's CBC on a single
  chain is latency bound (~1.4 GB/s per core); ECB over thousands of independent blocks is not.
  This needs numpy for the XOR and the transposes. Without numpy, or below
  _INTERLEAVE_MIN_EXTENTS, the batch is one CBC chain whose first block of each extent is
  corrected for its IV (~0.7 GB/s, vs ~1.4 GB/s interleaved, one core, AES-128).
* decryption is parallel in CBC anyway: the batch is decrypted as one chain, and the first
  block of each extent is corrected afterwards.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, cast

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

try:
    import numpy as np
except ImportError:  # pragma: no cover - tested in a subprocess without numpy
    np = None  # type: ignore[assignment]

_HAVE_NUMPY = np is not None

EXTENT_SIZE = 4096
BLOCK_SIZE = 16
BLOCKS_PER_EXTENT = EXTENT_SIZE // BLOCK_SIZE
IV_SIZE = 16
# The numpy XORs work on 64-bit words, two per AES block.
_WORD = 8
_WORDS_PER_BLOCK = BLOCK_SIZE // _WORD
# ecryptfs_derive_iv prints the extent number with "%lld" into a zeroed 16-byte field.
_IV_INDEX_FIELD = 16
_MAX_INDEX = 10 ** (_IV_INDEX_FIELD - 1) - 1
# cryptography's update_into wants room for one block beyond the input.
_UPDATE_SLACK = BLOCK_SIZE
# Below this many extents the 256 per-row Python steps of the interleaved path cost more than
# running one chain; measured on the target machine (see benchmarks/extent_bench.py).
_INTERLEAVE_MIN_EXTENTS = 56
# Extents per interleaved tile: 512 (2 MiB) halves the Python steps per MiB of 256, and with
# the blocked transposes below the tile's traffic stays cheap; 256 and 1024 were measured slower.
_INTERLEAVE_TILE_EXTENTS = 512
# A tile of fewer extents is laid out a little wider, at a multiple of an eighth of its size's
# power of two, so files of every size share ~16 layouts (building one costs ~135 µs, and each
# file of 224 KiB .. 2 MiB of a home directory used to build its own); the columns past the
# batch's extents are encrypted as garbage, at most a quarter more work.
_MIN_TILE_STEP = 8


def _tile_width(extents: int) -> int:
    step = max(_MIN_TILE_STEP, 1 << max(0, extents.bit_length() - 3))
    return min(_INTERLEAVE_TILE_EXTENTS, -(-extents // step) * step)


# The transposes copy in groups of this many extents (in) and blocks (out): one numpy copy over
# the whole tile walks the source 4 KiB apart, the same cache sets every step; small groups
# keep each group's lines cached but make numpy's outer loop run once per 16 bytes. In a
# create of the large corpus (perf samples in numpy, -j1): 8: 766/854, 16: 527/550,
# 32: 551/637, whole tile: 659/555.
_TRANSPOSE_GROUP = 16
# From this many extents on, numpy's fixed call cost beats per-extent int XORs when decrypting.
_VECTOR_FIXUP_MIN_EXTENTS = 6

_ZERO_BLOCK = bytes(BLOCK_SIZE)
_BLOCK = np.dtype((np.void, BLOCK_SIZE)) if _HAVE_NUMPY else None
# Chains start from a zero IV and fold each extent's real IV into its first block, so the mode
# object (costly to validate, per call) is built once.
_ZERO_IV_CBC = modes.CBC(_ZERO_BLOCK)
_ECB = modes.ECB()

Buffer = bytes | bytearray | memoryview
WritableBuffer = bytearray | memoryview
Fill = Callable[[memoryview, int], None]
"""fill(view, offset): put the plaintext found at byte `offset` of the batch into `view`."""


class _Digest(Protocol):
    def digest(self) -> bytes: ...


def _small_input_md5() -> Callable[[bytes], _Digest]:
    # CPython's built-in MD5 sets up far faster than hashlib's OpenSSL wrapper; on 32-byte
    # inputs, one per extent, that is most of the cost of an IV. MD5 is the format's IV
    # derivation here, not a security choice, hence usedforsecurity=False (FIPS builds).
    try:
        return cast(Callable[[bytes], _Digest], importlib.import_module("_md5").md5)
    except (ImportError, AttributeError):  # pragma: no cover - tested in a subprocess
        return partial(hashlib.md5, usedforsecurity=False)


_md5 = _small_input_md5()


def root_iv(fek: bytes) -> bytes:
    """Root IV of a file: MD5(FEK) (ecryptfs_compute_root_iv)."""
    return _md5(fek).digest()


def _check_indexes(first_index: int, count: int) -> None:
    last = first_index + max(count, 1) - 1
    if first_index < 0 or last > _MAX_INDEX:
        raise ValueError(
            f"extent indexes {first_index}..{last} leave eCryptfs's range 0..{_MAX_INDEX}"
        )


def extent_iv(root_iv: bytes, index: int) -> bytes:
    """IV of data extent `index`: MD5(root_iv || decimal(index) NUL-padded to 16 bytes).

    Mirrors ecryptfs_derive_iv; extent 0 is the first extent after the header.
    """
    _check_indexes(index, 1)
    return _md5(root_iv + (b"%d" % index).ljust(_IV_INDEX_FIELD, b"\0")).digest()


def _extent_ivs(root: bytes, first_index: int, count: int) -> bytes:
    """IVs of extents first_index .. first_index+count-1, concatenated; indexes are checked."""
    md5 = _md5
    return b"".join(
        [
            md5(root + (b"%d" % k).ljust(_IV_INDEX_FIELD, b"\0")).digest()
            for k in range(first_index, first_index + count)
        ]
    )


def _extent_count(first_index: int, src: Buffer, dst: WritableBuffer) -> int:
    """Number of extents in src, after checking lengths and indexes before any output."""
    n = memoryview(src).nbytes
    m = memoryview(dst).nbytes
    if n != m:
        raise ValueError(f"src ({n} bytes) and dst ({m} bytes) differ in size")
    if n % EXTENT_SIZE:
        raise ValueError(f"length {n} is not a multiple of the {EXTENT_SIZE}-byte extent size")
    _check_indexes(first_index, n // EXTENT_SIZE)
    return n // EXTENT_SIZE


def _bytes_view(buf: Buffer) -> memoryview:
    view = memoryview(buf)
    if not view.c_contiguous:
        raise ValueError("extent buffers must be contiguous")
    return view.cast("B")


def _xor16(a: Buffer, b: Buffer, c: Buffer) -> bytes:
    x = int.from_bytes(a, "little") ^ int.from_bytes(b, "little") ^ int.from_bytes(c, "little")
    return x.to_bytes(BLOCK_SIZE, "little")


def _encrypt_chained(
    fek: bytes, root: bytes, first_index: int, src: memoryview, dst: memoryview
) -> None:
    """Encrypt as one CBC chain into another buffer: copied there, then encrypted in place."""
    dst[:] = src
    _encrypt_chained_in_place(fek, root, first_index, dst)


def _encrypt_chained_in_place(fek: bytes, root: bytes, first_index: int, buf: memoryview) -> None:
    """Encrypt as one CBC chain; each extent's first block absorbs the chain-to-IV difference.

    The chain hands extent k the previous ciphertext block c (zero for the first) instead of
    IV_k, so its first plaintext block is fed as p ^ c ^ IV_k: the cipher then sees p ^ IV_k,
    exactly what a fresh CBC with IV_k would. That block is written back in front of the rest,
    so one call encrypts the whole extent; update_into's spare block is the next extent's,
    which it does not write."""
    count = len(buf) // EXTENT_SIZE
    ivs = _extent_ivs(root, first_index, count)
    ctx = Cipher(algorithms.AES(fek), _ZERO_IV_CBC).encryptor()
    encrypt = ctx.update_into
    previous: Buffer = _ZERO_BLOCK
    last = count - 1
    for k in range(count):
        lo = k * EXTENT_SIZE
        body = lo + BLOCK_SIZE
        hi = lo + EXTENT_SIZE
        buf[lo:body] = _xor16(buf[lo:body], previous, ivs[k * IV_SIZE : (k + 1) * IV_SIZE])
        if k < last:
            encrypt(buf[lo:hi], buf[lo : hi + BLOCK_SIZE])
        else:  # no room past the buffer: its last block on its own
            encrypt(buf[lo : hi - BLOCK_SIZE], buf[lo:hi])
            buf[hi - BLOCK_SIZE : hi] = ctx.update(buf[hi - BLOCK_SIZE : hi])
        previous = buf[hi - BLOCK_SIZE : hi]


class _TileLayout:
    """Views into a scratch tile holding `extents` extents transposed (row j = block j of each)."""

    def __init__(self, scratch: bytearray, extents: int) -> None:
        row = extents * BLOCK_SIZE
        view = memoryview(scratch)
        words = np.frombuffer(scratch, dtype=np.uint64, count=extents * EXTENT_SIZE // _WORD)
        blocks = np.frombuffer(scratch, dtype=_BLOCK, count=extents * BLOCKS_PER_EXTENT).reshape(
            BLOCKS_PER_EXTENT, extents
        )
        group = _TRANSPOSE_GROUP
        # (first extent, the tile's columns for extents first .. first+group)
        self.columns = [(e, blocks[:, e : e + group]) for e in range(0, extents, group)]
        # (first block, rows first .. first+group, transposed to the extents' layout)
        self.row_groups = [(j, blocks[j : j + group].T) for j in range(0, BLOCKS_PER_EXTENT, group)]
        self.word_rows = list(words.reshape(BLOCKS_PER_EXTENT, row // _WORD))
        self.rows = [view[j * row : (j + 1) * row] for j in range(BLOCKS_PER_EXTENT)]
        self.outs = [
            view[j * row : (j + 1) * row + _UPDATE_SLACK] for j in range(BLOCKS_PER_EXTENT)
        ]


class _Scratch(threading.local):
    """Per-thread reusable tile and fill buffer, so batches allocate nothing after the first."""

    def __init__(self) -> None:
        self.buffer: bytearray | None = None
        self.layouts: dict[int, _TileLayout] = {}
        self.piece: tuple[memoryview, Any] | None = None

    def layout(self, extents: int) -> _TileLayout:
        width = _tile_width(extents)
        found = self.layouts.get(width)
        if found is None:
            if self.buffer is None:
                self.buffer = bytearray(_INTERLEAVE_TILE_EXTENTS * EXTENT_SIZE + _UPDATE_SLACK)
            found = self.layouts[width] = _TileLayout(self.buffer, width)
        return found

    def fill_buffer(self) -> tuple[memoryview, Any]:
        """A group of extents' worth of bytes, and the same as an array of AES blocks."""
        if self.piece is None:
            raw = bytearray(_TRANSPOSE_GROUP * EXTENT_SIZE)
            blocks = np.frombuffer(raw, dtype=_BLOCK).reshape(_TRANSPOSE_GROUP, BLOCKS_PER_EXTENT)
            self.piece = (memoryview(raw), blocks)
        return self.piece


_scratch = _Scratch()


def _encrypt_tiles(
    fek: bytes,
    root: bytes,
    first_index: int,
    count: int,
    load: Callable[[int, int], Any],
    dst: memoryview,
) -> None:
    """Run the CBC chains of each tile side by side: 256 rows of XOR + one ECB call each.
    `load(e, n)` gives extents e .. e+n of the batch as an (n, 256) array of blocks."""
    ecb = Cipher(algorithms.AES(fek), _ECB).encryptor()
    target = np.frombuffer(dst, dtype=_BLOCK).reshape(count, BLOCKS_PER_EXTENT)
    scratch = _scratch
    xor = np.bitwise_xor
    copy = np.copyto
    encrypt_row = ecb.update_into
    group = _TRANSPOSE_GROUP
    for start in range(0, count, _INTERLEAVE_TILE_EXTENTS):
        extents = min(_INTERLEAVE_TILE_EXTENTS, count - start)
        tile = scratch.layout(extents)
        for e, columns in tile.columns:
            if e >= extents:
                break
            n = min(group, extents - e)
            copy(columns[:, :n], load(start + e, n).T)
        ivs = np.frombuffer(_extent_ivs(root, first_index + start, extents), dtype=np.uint64)
        first_row = tile.word_rows[0][: len(ivs)]
        xor(first_row, ivs, out=first_row)
        encrypt_row(tile.rows[0], tile.outs[0])
        words = tile.word_rows
        for row, previous, plain, out in zip(
            words[1:], words[:-1], tile.rows[1:], tile.outs[1:], strict=True
        ):
            xor(row, previous, out=row)
            encrypt_row(plain, out)
        extents_out = target[start : start + extents]
        for j, rows in tile.row_groups:
            copy(extents_out[:, j : j + group], rows[:extents])


def _encrypt_interleaved(
    fek: bytes, root: bytes, first_index: int, src: memoryview, dst: memoryview
) -> None:
    count = len(src) // EXTENT_SIZE
    source = np.frombuffer(src, dtype=_BLOCK).reshape(count, BLOCKS_PER_EXTENT)
    _encrypt_tiles(fek, root, first_index, count, lambda e, n: source[e : e + n], dst)


def _decrypt_chained(
    fek: bytes, root: bytes, first_index: int, src: memoryview, dst: memoryview, vectorised: bool
) -> None:
    """Decrypt as one CBC chain, then give each extent's first block its own IV back.

    The chain XORs extent k's first block with the previous extent's last ciphertext block c
    (zero for the first) instead of IV_k; XORing c ^ IV_k into it afterwards undoes that.
    """
    count = len(src) // EXTENT_SIZE
    size = count * EXTENT_SIZE
    ivs = _extent_ivs(root, first_index, count)
    # Taken before decrypting: src and dst may be the same memory.
    chain = _chain_values(src, count, vectorised)
    ctx = Cipher(algorithms.AES(fek), _ZERO_IV_CBC).decryptor()
    ctx.update_into(src[: size - BLOCK_SIZE], dst)
    dst[size - BLOCK_SIZE :] = ctx.update(src[size - BLOCK_SIZE :])
    if vectorised:
        fixes = np.frombuffer(chain, dtype=np.uint64) ^ np.frombuffer(ivs, dtype=np.uint64)
        words = np.frombuffer(dst, dtype=np.uint64).reshape(count, EXTENT_SIZE // _WORD)
        words[:, :_WORDS_PER_BLOCK] ^= fixes.reshape(count, _WORDS_PER_BLOCK)
        return
    for k in range(count):
        lo = k * EXTENT_SIZE
        dst[lo : lo + BLOCK_SIZE] = _xor16(
            dst[lo : lo + BLOCK_SIZE],
            chain[k * BLOCK_SIZE : (k + 1) * BLOCK_SIZE],
            ivs[k * IV_SIZE : (k + 1) * IV_SIZE],
        )


def _chain_values(src: memoryview, count: int, vectorised: bool) -> bytes:
    """What one CBC chain over src XORs into each extent's first block: zero, then the last
    ciphertext block of each extent but the final one."""
    if vectorised:
        words = np.frombuffer(src, dtype=np.uint64, count=(count - 1) * EXTENT_SIZE // _WORD)
        tails = words.reshape(count - 1, EXTENT_SIZE // _WORD)[:, -_WORDS_PER_BLOCK:]
        return _ZERO_BLOCK + tails.tobytes()
    return _ZERO_BLOCK + b"".join(
        [src[(k + 1) * EXTENT_SIZE - BLOCK_SIZE : (k + 1) * EXTENT_SIZE] for k in range(count - 1)]
    )


def encrypt_extents(
    fek: bytes, root_iv: bytes, first_index: int, src: Buffer, dst: WritableBuffer
) -> None:
    """Encrypt whole extents from src into dst; extent i of src is file extent first_index + i.

    src and dst have equal lengths, a multiple of EXTENT_SIZE; they may be the same buffer but
    must not otherwise overlap. Raises ValueError on bad lengths or an index past eCryptfs's
    15-digit limit.
    """
    count = _extent_count(first_index, src, dst)
    if not count:
        return
    source, target = _bytes_view(src), _bytes_view(dst)
    if _HAVE_NUMPY and count >= _INTERLEAVE_MIN_EXTENTS:
        _encrypt_interleaved(fek, root_iv, first_index, source, target)
    elif src is dst:
        _encrypt_chained_in_place(fek, root_iv, first_index, target)
    else:
        _encrypt_chained(fek, root_iv, first_index, source, target)


def encrypt_extents_from(
    fek: bytes, root_iv: bytes, first_index: int, fill: Fill, dst: WritableBuffer
) -> None:
    """encrypt_extents of the plaintext that `fill` supplies (read from a file, say), a group of
    extents at a time and in order, into dst (a multiple of EXTENT_SIZE).

    The plaintext passes through a small per-thread buffer that stays in the CPU's cache rather
    than being written whole into dst and read back by the transposes. Alone, both ways cost
    the same (benchmarks/fill_bench.py); beside the threads that hash and write, whose traffic
    evicts a 2 MiB buffer, creating the large corpus took 6.06 s and 8.20 CPU-s this way
    against 7.30 s and 10.18 CPU-s (medians of 5, 2 vCPU AMD EPYC)."""
    count = _extent_count(first_index, dst, dst)
    if not count:
        return
    target = _bytes_view(dst)
    if not (_HAVE_NUMPY and count >= _INTERLEAVE_MIN_EXTENTS):
        fill(target, 0)
        _encrypt_chained_in_place(fek, root_iv, first_index, target)
        return
    piece, blocks = _scratch.fill_buffer()

    def load(e: int, n: int) -> Any:
        fill(piece[: n * EXTENT_SIZE], e * EXTENT_SIZE)
        return blocks[:n]

    _encrypt_tiles(fek, root_iv, first_index, count, load, target)


def decrypt_extents(
    fek: bytes, root_iv: bytes, first_index: int, src: Buffer, dst: WritableBuffer
) -> None:
    """Decrypt whole extents from src into dst; extent i of src is file extent first_index + i.

    src and dst have equal lengths, a multiple of EXTENT_SIZE; they may be the same buffer but
    must not otherwise overlap. Raises ValueError on bad lengths or an index past eCryptfs's
    15-digit limit.
    """
    count = _extent_count(first_index, src, dst)
    if not count:
        return
    vectorised = _HAVE_NUMPY and count >= _VECTOR_FIXUP_MIN_EXTENTS
    _decrypt_chained(fek, root_iv, first_index, _bytes_view(src), _bytes_view(dst), vectorised)
