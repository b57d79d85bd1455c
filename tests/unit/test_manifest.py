"""The manifest: exact size before streaming, round trip through parse, HMAC domain separation."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecarchive.ecryptfs.keys import derive_key
from ecarchive.manifest import (
    ABSENT,
    MANIFEST_NAME,
    Facts,
    ManifestBuilder,
    ManifestError,
    append_manifest,
    escape,
    mac_ok,
    manifest_key,
    manifest_size,
    parse,
    render,
    tree_time_ns,
    unescape,
    with_manifest,
)
from ecarchive.model import Entry, Kind, Plan

KEY = derive_key(b"manifest test")
OTHER = derive_key(b"not the manifest key")
FACTS = Facts(
    cipher="aes",
    key_bytes=16,
    file_sig=KEY.sig_hex,
    fnek_sig=None,
    lower_root=b"Private",
    created_ns=1_700_000_000_123_456_789,
    volume=2,
    volumes=3,
)


def mk(kind: Kind, path: bytes, size: int = 0, target: bytes = b"", mtime: int = 5) -> Entry:
    return Entry(
        kind=kind,
        path=path,
        mode=0o644,
        uid=1,
        gid=2,
        uname="u",
        gname="g",
        mtime_ns=mtime,
        size=size,
        link_target=target,
        data=b"x" * size if size else None,
    )


ENTRIES = (
    mk(Kind.FILE, b"RESTORE.txt", 7),
    mk(Kind.DIR, b"Private", mtime=99),
    mk(Kind.FILE, b"Private/a b%c\n\xff", 8192 + 4096),
    mk(Kind.HARDLINK, b"Private/link", target=b"Private/a b%c\n\xff"),
    mk(Kind.SYMLINK, b"Private/sym", target=b"../some where"),
    mk(Kind.FIFO, b"Private/fifo"),
    mk(Kind.FILE, b"Private/gone", 8192),
)
HASHES = {
    b"RESTORE.txt": hashlib.sha256(b"x" * 7).digest(),
    b"Private/a b%c\n\xff": hashlib.sha256(b"data").digest(),
    b"Private/gone": None,
}


def test_size_is_exact_and_round_trip() -> None:
    data = render(ENTRIES, HASHES, FACTS, KEY)
    assert len(data) == manifest_size(ENTRIES, FACTS)
    m = parse(data)
    assert m.facts == FACTS and not m.problems and mac_ok(m, KEY) and not mac_ok(m, OTHER)
    assert [line.path for line in m.lines] == [e.path for e in ENTRIES]
    by_path = {line.path: line for line in m.lines}
    link = by_path[b"Private/link"]
    assert link.kind is Kind.HARDLINK and link.target == b"Private/a b%c\n\xff"
    assert link.size == 8192 + 4096 and link.digest == hashlib.sha256(b"data").digest()
    sym = by_path[b"Private/sym"]
    assert (
        sym.size == len(b"../some where")
        and sym.digest == hashlib.sha256(b"../some where").digest()
    )
    assert by_path[b"Private/gone"].absent and by_path[b"Private/fifo"].digest is None
    assert ABSENT in data and b"\n\xff" not in data  # every odd byte escaped


def test_hmac_key_is_domain_separated() -> None:
    k = manifest_key(KEY)
    assert len(k) == 32 and k not in (KEY.fekek, KEY.fekek[:32], KEY.fekek[:16])
    data = render(ENTRIES, HASHES, FACTS, KEY)
    body, _, mac_line = data.rstrip(b"\n").rpartition(b"\n")
    assert (
        mac_line == b"hmac-sha256 " + hmac.new(k, body + b"\n", hashlib.sha256).hexdigest().encode()
    )
    # a raw HMAC under the FEKEK itself must not verify
    forged = (
        body
        + b"\nhmac-sha256 "
        + hmac.new(KEY.fekek, body + b"\n", "sha256").hexdigest().encode()
        + b"\n"
    )
    assert not mac_ok(parse(forged), KEY)


def test_changed_line_breaks_hmac_but_still_parses() -> None:
    data = bytearray(render(ENTRIES, HASHES, FACTS, KEY))
    pos = data.index(b" Private/sym") - 1
    data[pos] = ord("0") if data[pos] != ord("0") else ord("1")
    m = parse(bytes(data))
    assert not m.problems and not mac_ok(m, KEY)


def test_malformed_lines_are_problems_not_crashes() -> None:
    data = render(ENTRIES, HASHES, FACTS, KEY).replace(b"p 0 ", b"q 0 ")
    m = parse(data)
    assert any("malformed" in p for p in m.problems) and len(m.lines) == len(ENTRIES) - 1
    truncated = render(ENTRIES, HASHES, FACTS, KEY)[:-80]
    assert parse(truncated).mac is None
    with pytest.raises(ManifestError):
        parse(b"RESTORE.txt\n")


def test_unstreamed_file_is_an_error() -> None:
    with pytest.raises(ManifestError, match="no hash recorded"):
        render(ENTRIES, {}, FACTS, KEY)


def test_builder_hashes_what_passes_and_serves_itself() -> None:
    plan = Plan(entries=(*ENTRIES[:3], mk(Kind.FILE, b"Private/gone", 8192)), lower_root=b"Private")
    plan = with_manifest(plan, FACTS)
    last = plan.entries[-1]
    assert (
        last.path == MANIFEST_NAME
        and last.mtime_ns == 99
        and last.size == manifest_size(plan.entries, FACTS)
    )
    builder = ManifestBuilder(plan.entries, FACTS, KEY)

    def inner(entry: Entry):  # type: ignore[no-untyped-def]
        if entry.path == b"Private/gone":
            return None
        return iter([memoryview(entry.data or b"")[:3], (entry.data or b"")[3:]])

    open_data = builder.opener(inner)
    streamed = {}
    for entry in plan.entries:
        if entry.kind is Kind.FILE:
            chunks = open_data(entry)
            streamed[entry.path] = None if chunks is None else b"".join(bytes(c) for c in chunks)
    m = parse(streamed[MANIFEST_NAME] or b"")
    assert len(streamed[MANIFEST_NAME] or b"") == last.size and mac_ok(m, KEY)
    by_path = {line.path: line for line in m.lines}
    assert MANIFEST_NAME not in by_path and by_path[b"Private/gone"].absent
    body = streamed[b"Private/a b%c\n\xff"] or b""
    assert by_path[b"Private/a b%c\n\xff"].digest == hashlib.sha256(body).digest()


def test_tree_time() -> None:
    assert tree_time_ns(ENTRIES, {}) == 99
    assert tree_time_ns(ENTRIES, {"SOURCE_DATE_EPOCH": "1000"}) == 1000 * 10**9
    neg = Facts(**{**{f: getattr(FACTS, f) for f in FACTS.__slots__}, "created_ns": -1})  # type: ignore[arg-type]
    assert parse(render(ENTRIES, HASHES, neg, KEY)).facts.created_ns == -1


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(
        st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b),
        min_size=1,
        max_size=8,
        unique=True,
    ),
    sizes=st.lists(st.integers(min_value=0, max_value=10**12), min_size=8, max_size=8),
    created=st.integers(min_value=-(10**19), max_value=10**19),
)
def test_size_matches_for_any_names(names: list[bytes], sizes: list[int], created: int) -> None:
    entries = [mk(Kind.DIR, b"P")]
    hashes: dict[bytes, bytes | None] = {}
    for i, name in enumerate(names):
        path = b"P/" + name
        if i % 3 == 2:
            entries.append(mk(Kind.SYMLINK, path, target=name * 3))
        else:
            entries.append(
                Entry(
                    kind=Kind.FILE,
                    path=path,
                    mode=0,
                    uid=0,
                    gid=0,
                    uname="",
                    gname="",
                    mtime_ns=0,
                    size=sizes[i],
                )
            )
            hashes[path] = hashlib.sha256(name).digest() if i % 2 else None
    facts = Facts("aes", 32, "ab" * 8, "cd" * 8, b"P x", created, 1, 1)
    data = render(entries, hashes, facts, KEY)
    assert len(data) == manifest_size(entries, facts)
    m = parse(data)
    assert m.facts == facts and [line.path for line in m.lines] == [e.path for e in entries]
    assert all(unescape(escape(n)) == n for n in names)


def test_volume_numbers_do_not_change_the_size() -> None:
    one = Facts("aes", 16, KEY.sig_hex, None, b"Private", 0, 1, 1)
    many = Facts("aes", 16, KEY.sig_hex, None, b"Private", 0, 17, 300)
    assert manifest_size(ENTRIES, one) == manifest_size(ENTRIES, many)
    assert parse(render(ENTRIES, HASHES, many, KEY)).facts == many
    with pytest.raises(ManifestError):
        manifest_size(ENTRIES, Facts("aes", 16, KEY.sig_hex, None, b"Private", 0, 3, 2))


def test_append_manifest_to_a_volume() -> None:
    volume = append_manifest(ENTRIES[:3], FACTS)
    assert [e.path for e in volume] == [e.path for e in ENTRIES[:3]] + [MANIFEST_NAME]
    assert volume[-1].mtime_ns == 99 and volume[-1].size == manifest_size(ENTRIES[:3], FACTS)
    assert append_manifest(volume, FACTS) == volume  # idempotent: the old manifest is replaced
