"""Extent cipher: kernel-made known answers, IV derivation, fast path vs. per-extent reference."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from ecarchive.ecryptfs import extent
from ecarchive.ecryptfs.extent import (
    EXTENT_SIZE,
    decrypt_extents,
    encrypt_extents,
    encrypt_extents_from,
    extent_iv,
    root_iv,
)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "pecryptfs"

# Facts from tests/data/pecryptfs/README.md and the format doc (§1.1, §2.2, §2.4); the header
# is parsed here by hand so this test does not depend on the header module.
PASSPHRASE = b"Test"
SALT = bytes.fromhex("0011223344556677")
HASH_ITERATIONS = 65536
HEADER_SIZE = 8192
TAG3_LENGTH_OFFSET = 0x1B
TAG3_CIPHER_OFFSET = 0x1D
TAG3_EFEK_OFFSET = 0x29
TAG3_FIXED_BODY = 13
AES_KEY_BYTES_BY_CODE = {0x07: 16, 0x08: 24, 0x09: 32}
PLAINTEXT = b"Hello World\n"


def _fekek(passphrase: bytes, salt: bytes) -> bytes:
    digest = hashlib.sha512(salt + passphrase).digest()
    for _ in range(HASH_ITERATIONS - 1):
        digest = hashlib.sha512(digest).digest()
    return digest


def _unwrap_fek(header: bytes, fekek: bytes) -> bytes:
    key_bytes = AES_KEY_BYTES_BY_CODE[header[TAG3_CIPHER_OFFSET]]
    efek_len = header[TAG3_LENGTH_OFFSET] - TAG3_FIXED_BODY
    efek = header[TAG3_EFEK_OFFSET : TAG3_EFEK_OFFSET + efek_len]
    dec = Cipher(algorithms.AES(fekek[:key_bytes]), modes.ECB()).decryptor()
    return (dec.update(efek) + dec.finalize())[:key_bytes]


@pytest.fixture(scope="module")
def fekek() -> bytes:
    return _fekek(PASSPHRASE, SALT)


@pytest.mark.parametrize("name", ["aes-16.raw", "aes-24.raw", "aes-32.raw"])
def test_decrypts_kernel_made_extent(name: str, fekek: bytes) -> None:
    lower = (DATA / name).read_bytes()
    fek = _unwrap_fek(lower[:HEADER_SIZE], fekek)
    data = lower[HEADER_SIZE : HEADER_SIZE + EXTENT_SIZE]
    out = bytearray(EXTENT_SIZE)
    decrypt_extents(fek, root_iv(fek), 0, data, out)
    # The kernel zero-fills the last extent before encrypting it.
    assert bytes(out) == PLAINTEXT.ljust(EXTENT_SIZE, b"\0")
    # And encryption with the same key and index reproduces the kernel's bytes exactly.
    again = bytearray(EXTENT_SIZE)
    encrypt_extents(fek, root_iv(fek), 0, out, again)
    assert bytes(again) == data


FIXTURES = REPO / "tests" / "data" / "fixtures"
FIXTURE_PASSPHRASE = b"correct horse battery staple"
BIG_FILE = "random-1MiB.bin"


def _manifest_sha256(path: str) -> str:
    # Fields: path, type, mode, size, mtime, nlink, sha256, ...
    for line in (FIXTURES / "plaintext.manifest").read_text().splitlines():
        fields = line.split("\t")
        if fields[0] == path:
            return fields[6]
    raise LookupError(path)


def _lower_file(tree: str, path: str) -> bytes:
    name_map = (FIXTURES / f"{tree}.name-map").read_text().splitlines()
    lower_name = dict(line.split("\t") for line in name_map)[path]
    # The fixture tars were packed from inside the lower directory: members are "./name".
    with tarfile.open(FIXTURES / f"{tree}.tar") as tar:
        member = tar.extractfile(tar.getmember(f"./{lower_name}"))
        assert member is not None
        return member.read()


@pytest.fixture(scope="module")
def fixture_fekek() -> bytes:
    return _fekek(FIXTURE_PASSPHRASE, SALT)


@pytest.mark.parametrize("tree", ["aes128-fnek-off", "aes256-fnek-separate"])
@pytest.mark.parametrize("path", ["interleaved", "chained"])
def test_kernel_made_file_of_256_extents(tree: str, path: str, fixture_fekek: bytes) -> None:
    """Extent indexes 0..255 (multi-digit IV fields) against a file the kernel wrote."""
    lower = _lower_file(tree, BIG_FILE)
    fek = _unwrap_fek(lower[:HEADER_SIZE], fixture_fekek)
    data = memoryview(lower)[HEADER_SIZE:]
    plain = bytearray(len(data))
    decrypt_extents(fek, root_iv(fek), 0, data, plain)
    assert hashlib.sha256(plain).hexdigest() == _manifest_sha256(BIG_FILE)
    again = bytearray(len(data))
    ENCRYPTORS[path](fek, root_iv(fek), 0, memoryview(plain), memoryview(again))
    assert again == data


def test_root_iv_is_md5_of_fek() -> None:
    fek = bytes(range(16))
    assert root_iv(fek) == hashlib.md5(fek).digest()


@pytest.mark.parametrize(
    ("index", "field"),
    [
        (0, b"0" + b"\0" * 15),
        (9, b"9" + b"\0" * 15),
        (12, b"12" + b"\0" * 14),
        (4096, b"4096" + b"\0" * 12),
        (10**15 - 1, b"9" * 15 + b"\0"),
    ],
)
def test_extent_iv_uses_nul_padded_decimal(index: int, field: bytes) -> None:
    root = bytes(range(100, 116))
    assert extent_iv(root, index) == hashlib.md5(root + field).digest()


@pytest.mark.parametrize("index", [-1, 10**15])
def test_extent_iv_rejects_out_of_range_index(index: int) -> None:
    with pytest.raises(ValueError, match="extent indexes"):
        extent_iv(bytes(16), index)


def _reference_encrypt(fek: bytes, first_index: int, plain: bytes) -> bytes:
    """One CBC chain per extent, written independently of the module under test."""
    root = hashlib.md5(fek).digest()
    out = []
    for k in range(len(plain) // EXTENT_SIZE):
        field = str(first_index + k).encode().ljust(16, b"\0")
        iv = hashlib.md5(root + field).digest()
        enc = Cipher(algorithms.AES(fek), modes.CBC(iv)).encryptor()
        out.append(enc.update(plain[k * EXTENT_SIZE : (k + 1) * EXTENT_SIZE]) + enc.finalize())
    return b"".join(out)


def _pseudo_random(seed: bytes, size: int) -> bytes:
    # AES-CTR keystream: cheap, deterministic per example, and no two blocks alike.
    enc = Cipher(algorithms.AES(hashlib.sha256(seed).digest()), modes.CTR(bytes(16))).encryptor()
    return enc.update(bytes(size))


Crypt = Callable[[bytes, bytes, int, memoryview, memoryview], None]


def _decrypt_numpy(fek: bytes, root: bytes, first: int, src: memoryview, dst: memoryview) -> None:
    extent._decrypt_chained(fek, root, first, src, dst, vectorised=True)


def _decrypt_plain(fek: bytes, root: bytes, first: int, src: memoryview, dst: memoryview) -> None:
    extent._decrypt_chained(fek, root, first, src, dst, vectorised=False)


# Every code path, called directly so that each one is checked whatever size the public
# functions would route to it.
def _in_place(encrypt: Callable[[bytes, bytes, int, memoryview], None]) -> Crypt:
    """Encrypt a copy of src where it lies, inside a larger buffer whose bytes after it (the
    spare block update_into is handed) must come out untouched."""

    def run(fek: bytes, root: bytes, first: int, src: memoryview, dst: memoryview) -> None:
        guard = b"\xa5" * 64
        room = bytearray(bytes(src) + guard)
        view = memoryview(room)[: len(src)]
        encrypt(fek, root, first, view)
        assert room[len(src) :] == guard, "wrote past the buffer"
        dst[:] = view

    return run


def _from_fill(fek: bytes, root: bytes, first: int, src: memoryview, dst: memoryview) -> None:
    """encrypt_extents_from with a fill that copies from src, checking it is asked for every
    byte once, in order."""
    asked: list[tuple[int, int]] = []

    def fill(view: memoryview, offset: int) -> None:
        asked.append((offset, len(view)))
        view[:] = src[offset : offset + len(view)]

    encrypt_extents_from(fek, root, first, fill, dst)
    covered = 0
    for offset, size in asked:
        assert offset == covered, asked
        covered += size
    assert covered == len(src)


ENCRYPTORS: dict[str, Crypt] = {
    "public": lambda f, r, i, s, d: encrypt_extents(f, r, i, s, d),
    "public-in-place": _in_place(lambda f, r, i, b: encrypt_extents(f, r, i, b, b)),
    "chained": extent._encrypt_chained,
    "chained-in-place": _in_place(extent._encrypt_chained_in_place),
    "from-fill": _from_fill,
    "interleaved": extent._encrypt_interleaved,
}
DECRYPTORS: dict[str, Crypt] = {
    "public": lambda f, r, i, s, d: decrypt_extents(f, r, i, s, d),
    "numpy-fixup": _decrypt_numpy,
    "int-fixup": _decrypt_plain,
}

keys = st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
MAX_FIRST = 10**15 - 64
indexes = st.one_of(
    st.integers(min_value=0, max_value=20),
    st.integers(min_value=0, max_value=MAX_FIRST),
    st.sampled_from([9, 99, 999, 10**6 - 1, 10**14 - 1, MAX_FIRST]),
)


@pytest.mark.parametrize("path", ENCRYPTORS)
@settings(max_examples=40, deadline=None)
@given(fek=keys, first_index=indexes, count=st.integers(1, 64), seed=st.binary(min_size=32))
def test_encryption_matches_per_extent_reference(
    path: str, fek: bytes, first_index: int, count: int, seed: bytes
) -> None:
    plain = _pseudo_random(seed, count * EXTENT_SIZE)
    out = bytearray(len(plain))
    ENCRYPTORS[path](fek, root_iv(fek), first_index, memoryview(plain), memoryview(out))
    assert bytes(out) == _reference_encrypt(fek, first_index, plain)


@pytest.mark.parametrize("path", DECRYPTORS)
@settings(max_examples=40, deadline=None)
@given(fek=keys, first_index=indexes, count=st.integers(1, 64), seed=st.binary(min_size=32))
def test_decryption_inverts_per_extent_reference(
    path: str, fek: bytes, first_index: int, count: int, seed: bytes
) -> None:
    plain = _pseudo_random(seed, count * EXTENT_SIZE)
    out = bytearray(len(plain))
    cipher_text = _reference_encrypt(fek, first_index, plain)
    DECRYPTORS[path](fek, root_iv(fek), first_index, memoryview(cipher_text), memoryview(out))
    assert bytes(out) == plain


# Two full interleaved tiles and a partial one, so tiles and their IV offsets are exercised.
MANY_EXTENTS = 2 * extent._INTERLEAVE_TILE_EXTENTS + 37


@pytest.mark.parametrize("key_bytes", [16, 32])
def test_many_extents_match_reference(key_bytes: int) -> None:
    fek = hashlib.sha256(b"many").digest()[:key_bytes]
    plain = _pseudo_random(b"many", MANY_EXTENTS * EXTENT_SIZE)
    out = bytearray(len(plain))
    encrypt_extents(fek, root_iv(fek), 5, plain, out)
    assert bytes(out) == _reference_encrypt(fek, 5, plain)
    back = bytearray(len(plain))
    decrypt_extents(fek, root_iv(fek), 5, out, back)
    assert bytes(back) == plain


# Tile widths are rounded up (extent._tile_width): batches of every width, one after another in
# the same thread, so each finds columns left over from a wider one in its tile.
WIDTH_COUNTS = [512, 56, 57, 63, 65, 100, 129, 255, 257, 300, 511, 513, 700, 64]


@pytest.mark.parametrize("path", ["public", "from-fill", "interleaved"])
def test_every_tile_width_matches_reference(path: str) -> None:
    fek = hashlib.sha256(b"widths").digest()[:16]
    for count in WIDTH_COUNTS:
        plain = _pseudo_random(b"w%d" % count, count * EXTENT_SIZE)
        out = bytearray(len(plain))
        ENCRYPTORS[path](fek, root_iv(fek), 7, memoryview(plain), memoryview(out))
        assert bytes(out) == _reference_encrypt(fek, 7, plain), count


@pytest.mark.parametrize("count", [1, 3, extent._INTERLEAVE_MIN_EXTENTS, MANY_EXTENTS])
def test_in_place_round_trip(count: int) -> None:
    fek = bytes(range(16))
    plain = _pseudo_random(b"in place", count * EXTENT_SIZE)
    buf = bytearray(plain)
    encrypt_extents(fek, root_iv(fek), 3, buf, buf)
    assert bytes(buf) == _reference_encrypt(fek, 3, plain)
    decrypt_extents(fek, root_iv(fek), 3, buf, buf)
    assert bytes(buf) == plain


@pytest.mark.parametrize("count", [2, extent._INTERLEAVE_MIN_EXTENTS + 1])
def test_writes_into_a_view_of_a_larger_buffer(count: int) -> None:
    fek = bytes(range(32))
    plain = _pseudo_random(b"view", count * EXTENT_SIZE)
    big = bytearray(b"\xaa" * ((count + 2) * EXTENT_SIZE))
    window = memoryview(big)[EXTENT_SIZE:-EXTENT_SIZE]
    encrypt_extents(fek, root_iv(fek), 7, memoryview(plain), window)
    assert big[:EXTENT_SIZE] == b"\xaa" * EXTENT_SIZE
    assert big[-EXTENT_SIZE:] == b"\xaa" * EXTENT_SIZE
    assert bytes(window) == _reference_encrypt(fek, 7, plain)
    decrypt_extents(fek, root_iv(fek), 7, bytes(window), window)
    assert bytes(window) == plain
    assert big[-EXTENT_SIZE:] == b"\xaa" * EXTENT_SIZE


NO_NUMPY_SCRIPT = """
import hashlib, sys
# None in sys.modules makes the import raise ImportError: no numpy, no built-in _md5.
sys.modules["numpy"] = None
sys.modules["_md5"] = None
from ecarchive.ecryptfs import extent
assert not extent._HAVE_NUMPY
assert extent._md5(b"abc").digest() == hashlib.md5(b"abc").digest()
fek = bytes(range(16))
plain = bytes(range(256)) * 16 * 100
out = bytearray(len(plain))
extent.encrypt_extents(fek, extent.root_iv(fek), 11, plain, out)
back = bytearray(len(plain))
extent.decrypt_extents(fek, extent.root_iv(fek), 11, out, back)
assert back == plain
print(hashlib.sha256(out).hexdigest())
"""


def test_works_without_numpy_or_builtin_md5() -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_NUMPY_SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    plain = bytes(range(256)) * 16 * 100
    expected = hashlib.sha256(_reference_encrypt(bytes(range(16)), 11, plain)).hexdigest()
    assert result.stdout.strip() == expected


@pytest.mark.parametrize("crypt", [encrypt_extents, decrypt_extents])
@pytest.mark.parametrize(("src_len", "dst_len"), [(100, 100), (EXTENT_SIZE, 2 * EXTENT_SIZE)])
def test_rejects_bad_lengths(crypt: Crypt, src_len: int, dst_len: int) -> None:
    with pytest.raises(ValueError, match=r"multiple|differ"):
        crypt(bytes(16), bytes(16), 0, memoryview(bytes(src_len)), memoryview(bytearray(dst_len)))


@pytest.mark.parametrize("crypt", [encrypt_extents, decrypt_extents])
@pytest.mark.parametrize(("first", "count"), [(-1, 1), (10**15 - 1, 2), (10**15, 1)])
def test_rejects_indexes_past_the_iv_field(crypt: Crypt, first: int, count: int) -> None:
    dst = bytearray(count * EXTENT_SIZE)
    with pytest.raises(ValueError, match="extent indexes"):
        crypt(bytes(16), bytes(16), first, memoryview(bytes(len(dst))), memoryview(dst))
    assert dst == bytearray(len(dst)), "nothing may be written before the error"


def test_last_valid_index_is_accepted() -> None:
    fek = bytes(range(16))
    plain = _pseudo_random(b"last", EXTENT_SIZE)
    out = bytearray(EXTENT_SIZE)
    encrypt_extents(fek, root_iv(fek), 10**15 - 1, plain, out)
    assert bytes(out) == _reference_encrypt(fek, 10**15 - 1, plain)


def test_empty_input_is_a_no_op() -> None:
    dst = bytearray()
    encrypt_extents(bytes(16), bytes(16), 0, b"", dst)
    decrypt_extents(bytes(16), bytes(16), 0, b"", dst)
    assert dst == bytearray()
