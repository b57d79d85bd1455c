"""The eCryptfs format package against published vectors and kernel-made data."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecarchive.ecryptfs.constants import (
    DEFAULT_SALT,
    FNEK_PREFIX,
    HEADER_SIZE,
    MAX_NAME_BYTES,
)
from ecarchive.ecryptfs.header import (
    HeaderError,
    build_header,
    key_packets,
    parse_header,
    unwrap_fek,
    wrap_fek,
)
from ecarchive.ecryptfs.keys import FnekMode, derive_key, derive_keyset
from ecarchive.ecryptfs.names import (
    NameDecodeError,
    decode_from_filename,
    decrypt_name,
    encode_for_filename,
    encrypt_name,
    encrypted_name_len,
)
from ecarchive.ecryptfs.sizes import lower_size
from ecarchive.ecryptfs.wrapped import WrappedPassphraseError, unwrap_passphrase, wrap_passphrase_v2

DATA = Path(__file__).parent.parent / "data"
FIXTURES = DATA / "fixtures"
PASS = b"correct horse battery staple"
KEY = derive_key(b"key for property tests")


@pytest.mark.parametrize(
    ("passphrase", "salt", "sig"),
    [
        (b"foo", "0011223344556677", "253ca7e88811d184"),
        (b"a", "aaaaaaaaaaaaaaaa", "c42ec75301dc1674"),
        (b"Password", "0011223344556677", "326bd307c877876f"),
        (b"Test", "0011223344556677", "3515cca9baaea1f4"),
        (PASS, "0011223344556677", "3ab38bb4917daae6"),
        (PASS, "3939383837373636", "dfe2081a9780d1ee"),  # the ASCII "99887766" FNEK salt
    ],
)
def test_signatures_match_ecryptfs_utils(passphrase: bytes, salt: str, sig: str) -> None:
    assert derive_key(passphrase, bytes.fromhex(salt)).sig_hex == sig


def test_fnek_conventions() -> None:
    sep = derive_keyset(PASS, FnekMode.SEPARATE)
    same = derive_keyset(PASS, FnekMode.SAME)
    off = derive_keyset(PASS, FnekMode.OFF)
    assert sep.fnek is not None and sep.fnek.sig_hex == "dfe2081a9780d1ee"
    assert same.fnek == same.file_key
    assert off.fnek is None


@pytest.mark.parametrize("key_bytes", [16, 24, 32])
def test_kernel_header_rebuilt_byte_for_byte(key_bytes: int) -> None:
    raw = (DATA / "pecryptfs" / f"aes-{key_bytes}.raw").read_bytes()
    key = derive_key(b"Test")
    header = parse_header(raw[:4096])
    assert header.plain_size == 12 and header.metadata_size == HEADER_SIZE
    packet = header.packets[0]
    assert packet.sig == key.sig
    fek = unwrap_fek(packet.efek, packet.cipher_code, key)
    assert len(fek) == key_bytes
    packets = key_packets(wrap_fek(fek, key), key_bytes, key.sig, DEFAULT_SALT)
    rebuilt = build_header(12, header.marker, packets, filenames_encrypted=False)
    assert rebuilt == raw[:HEADER_SIZE]


def _fixture_headers(name: str) -> list[bytes]:
    import libarchive

    headers = []
    with libarchive.file_reader(str(FIXTURES / f"{name}.tar")) as archive:
        for entry in archive:
            if entry.isfile and entry.size:
                headers.append(b"".join(entry.get_blocks())[:4096])
    return headers


@pytest.mark.parametrize("fixture", ["aes128-fnek-separate", "aes128-fnek-off"])
def test_kernel_fnek_header_flags(fixture: str) -> None:
    flags = {parse_header(h).flags for h in _fixture_headers(fixture)}
    assert flags == ({0x0A} if "separate" in fixture else {0x02})


@pytest.mark.parametrize(
    ("fixture", "mode", "key_bytes"),
    [
        ("aes128-fnek-separate", FnekMode.SEPARATE, 16),
        ("aes256-fnek-separate", FnekMode.SEPARATE, 32),
        ("aes128-fnek-same", FnekMode.SAME, 16),
    ],
)
def test_kernel_names_reproduced_byte_for_byte(
    fixture: str, mode: FnekMode, key_bytes: int
) -> None:
    fnek = derive_keyset(PASS, mode).fnek
    assert fnek is not None
    lines = (FIXTURES / f"{fixture}.name-map").read_bytes().splitlines()
    assert len(lines) > 15
    for line in lines:
        plain, lower = line.split(b"\t")
        assert b"/".join(encrypt_name(c, fnek, key_bytes) for c in plain.split(b"/")) == lower
        assert b"/".join(decrypt_name(c, fnek, key_bytes) for c in lower.split(b"/")) == plain


def test_kernel_symlink_targets_decrypt() -> None:
    fnek = derive_keyset(PASS, FnekMode.SEPARATE).fnek
    assert fnek is not None
    targets = []
    for line in (FIXTURES / "aes128-fnek-separate.lower-manifest").read_bytes().splitlines()[1:]:
        fields = line.split(b"\t")
        if fields[1] == b"l":
            targets.append(decrypt_name(fields[7], fnek, 16))
    plain = [
        line.split(b"\t")[7]
        for line in (FIXTURES / "plaintext.manifest").read_bytes().splitlines()[1:]
        if line.split(b"\t")[1] == b"l"
    ]
    assert sorted(targets) == sorted(plain) and len(plain) == 3
    for target in plain:  # and our encryption gives the kernel's bytes
        assert decrypt_name(encrypt_name(target, fnek, 16), fnek, 16) == target


@settings(max_examples=300, deadline=None)
@given(
    name=st.binary(min_size=1, max_size=MAX_NAME_BYTES).filter(
        lambda b: b"/" not in b and b"\0" not in b
    ),
    key_bytes=st.sampled_from([16, 24, 32]),
)
def test_names_round_trip_and_fit(name: bytes, key_bytes: int) -> None:
    lower = encrypt_name(name, KEY, key_bytes)
    assert lower.startswith(FNEK_PREFIX)
    assert len(lower) == encrypted_name_len(len(name)) <= 255
    assert decrypt_name(lower, KEY, key_bytes) == name


def test_name_length_limits() -> None:
    assert encrypted_name_len(143) == 252 and encrypted_name_len(144) > 255
    assert {encrypted_name_len(n) for n in range(1, 16)} == {84}
    assert encrypted_name_len(16) == 104


def test_name_with_other_key_is_refused() -> None:
    lower = encrypt_name(b"secret", KEY, 16)
    with pytest.raises(NameDecodeError):
        decrypt_name(lower, derive_key(b"other"), 16)
    with pytest.raises(NameDecodeError):
        decrypt_name(b"lost+found", KEY, 16)


@given(st.binary(max_size=300))
def test_filename_encoding_round_trip(data: bytes) -> None:
    assert decode_from_filename(encode_for_filename(data))[: len(data)] == data


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=70 * 1024))
def test_lower_size(n: int) -> None:
    size = lower_size(n)
    assert size % 4096 == 0 and size >= HEADER_SIZE
    assert size - HEADER_SIZE - 4096 < n <= size - HEADER_SIZE or (n == 0 and size == HEADER_SIZE)


@settings(max_examples=50, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=2**63),
    marker=st.integers(0, 2**32 - 1),
    key_bytes=st.sampled_from([16, 24, 32]),
    fnek=st.booleans(),
    fek_seed=st.binary(min_size=32, max_size=32),
)
def test_header_round_trip(
    size: int, marker: int, key_bytes: int, fnek: bool, fek_seed: bytes
) -> None:
    fek = fek_seed[:key_bytes]
    header = build_header(
        size, marker, key_packets(wrap_fek(fek, KEY), key_bytes, KEY.sig), filenames_encrypted=fnek
    )
    assert len(header) == HEADER_SIZE
    parsed = parse_header(header)
    assert parsed.plain_size == size and parsed.marker == marker
    assert parsed.flags == (0x0A if fnek else 0x02)
    assert unwrap_fek(parsed.packets[0].efek, parsed.packets[0].cipher_code, KEY) == fek


def test_bad_marker_rejected() -> None:
    header = bytearray(
        build_header(
            1, 5, key_packets(wrap_fek(bytes(16), KEY), 16, KEY.sig), filenames_encrypted=True
        )
    )
    header[12] ^= 1
    with pytest.raises(HeaderError, match="marker"):
        parse_header(bytes(header))


@pytest.mark.skipif(
    shutil.which("ecryptfs-wrap-passphrase") is None, reason="ecryptfs-utils not installed"
)
def test_unwrap_file_made_by_ecryptfs_utils(tmp_path: Path) -> None:
    target = tmp_path / "wrapped-passphrase"
    subprocess.run(
        ["ecryptfs-wrap-passphrase", str(target), "-"],
        input=b"0123456789abcdef0123456789abcdef\nlogin pw",
        check=True,
        capture_output=True,
    )
    blob = target.read_bytes()
    assert blob[:2] == b":\x02"
    assert unwrap_passphrase(blob, b"login pw") == b"0123456789abcdef0123456789abcdef"
    with pytest.raises(WrappedPassphraseError, match="wrong login"):
        unwrap_passphrase(blob, b"not it")


def test_wrap_v2_round_trip_and_v1() -> None:
    blob = wrap_passphrase_v2(b"mount pass", b"login", bytes(range(8)))
    assert unwrap_passphrase(blob, b"login") == b"mount pass"
    # a v1 file is the v2 body without ':', version and salt, under the default salt
    v1 = wrap_passphrase_v2(b"mount pass", b"login", DEFAULT_SALT)[10:]
    assert unwrap_passphrase(v1, b"login") == b"mount pass"
