"""MANIFEST.ecarchive: what every archive (and every volume) must contain, authenticated.

eCryptfs has no integrity protection, so each archive carries, beside its lower directory, one
line per member with the SHA-256 of the member's bytes, plus archive-wide facts, closed by an
HMAC-SHA256. The hashes alone catch bit rot and bad burns without any secret; the HMAC (under
a key only the passphrase gives) catches deliberate edits, including recomputed hashes.

The text, ASCII, one item per line, every line ending in '\\n':

    ecarchive-manifest 1
    cipher aes
    key-bytes 16
    file-key-sig 0123456789abcdef
    fnek-sig fedcba9876543210            ("-" when names are stored in clear)
    lower-root Private
    volume 0001 of 0001                  (fixed width, so the size is known before the split)
    created 1764151200.000000000         (seconds.nanoseconds since the epoch, see tree_time_ns)
    chain 0123…cdef level 1 archive 01…ef after 01…ef   (only in incremental archives, see
                                         incremental.ChainFacts)
    entries 3
    f 8192 <64 hex> RESTORE.txt
    d 0 ---…--- Private
    l 104 <64 hex> Private/ECRYPTFS_FNEK_ENCRYPTED.FW…
    h 12288 <64 hex> Private/ECRYPTFS_FNEK_ENCRYPTED.FX… Private/ECRYPTFS_FNEK_ENCRYPTED.FY…
    hmac-sha256 <64 hex>

Entry lines: type (model.Kind letters), size, digest, path and, for a hard link, the path of
the file it names. The digest is the SHA-256 of the member's data for f and h (the file's data),
of the stored target for l, and 64 '-' for types without data. A file that vanished while the
archive was written is listed with the digest `ABSENT` (it is in the plan, not in the archive).
Sizes: lower size for f and h, target length for l, 0 otherwise. Paths and targets are the
archive's own bytes with every byte outside '!'..'~' and '%' written as %XX.

Every line's length follows from the plan alone (digests are fixed-width hex), so
`manifest_size()` is exact before the first byte is streamed: an ISO reserves the extent, a tar
writes the manifest as its last member.

The HMAC covers every byte before the `hmac-sha256 ` line. Its key is
HKDF-SHA256(file key's 64-byte FEKEK, info=b"ecarchive manifest v1"): domain-separated from the
FEKEK, so the manifest key never wraps or unwraps a file key and vice versa.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .ecryptfs.keys import KeyringKey
from .model import Entry, Kind, Plan

MANIFEST_NAME = b"MANIFEST.ecarchive"
MAGIC_LINE = b"ecarchive-manifest 1\n"
HMAC_LABEL = b"ecarchive manifest v1"
HMAC_PREFIX = b"hmac-sha256 "
DIGEST_HEX = 2 * hashlib.sha256().digest_size
NO_DATA = b"-" * DIGEST_HEX
ABSENT = b"ABSENT".ljust(DIGEST_HEX, b"-")
MANIFEST_MODE = 0o644
NS_PER_S = 1_000_000_000
# Fixed-width volume numbers: a volume's manifest size must not depend on how many volumes
# the split ends up with, because the split itself needs that size.
VOLUME_DIGITS = 4
MAX_VOLUMES = 10**VOLUME_DIGITS - 1
_PLAIN = frozenset(range(0x21, 0x7F)) - {ord("%")}
_PLAIN_BYTES = bytes(sorted(_PLAIN))
_KIND_LETTER = {kind: kind.value.encode() for kind in Kind}
# Manifest lines go to the HMAC and the sink this many bytes at a time, not one by one.
_RENDER_BATCH = 1 << 16

Chunk = bytes | bytearray | memoryview
Opener = Callable[[Entry], "Iterator[Chunk] | None"]


class ManifestError(ValueError):
    """The manifest cannot be read, or cannot be written from what was streamed."""


@dataclass(frozen=True, slots=True)
class Facts:
    """Archive-wide facts written at the top of the manifest."""

    cipher: str
    key_bytes: int
    file_sig: str  # hex, as ecryptfs_sig
    fnek_sig: str | None  # hex, None when names are in clear
    lower_root: bytes
    created_ns: int
    volume: int = 1
    volumes: int = 1
    chain: bytes | None = None  # incremental.ChainFacts.text(); None outside a chain


_UNPLAIN = re.compile(rb"[^!-$&-~]")  # every byte outside _PLAIN


def escape(raw: bytes) -> bytes:
    if not raw.translate(None, _PLAIN_BYTES):
        return raw  # nearly every path (encrypted names are plain); the regex costs ~1 µs
    return _UNPLAIN.sub(lambda m: b"%%%02X" % m[0][0], raw)


def unescape(text: bytes) -> bytes:
    if b"%" not in text:
        return text  # nearly every path; the loop below costs ~0.1 ms per path
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == ord("%"):
            try:
                out.append(int(text[i + 1 : i + 3], 16))
            except ValueError as e:
                raise ManifestError(f"bad %-escape in {text!r}") from e
            i += 3
        else:
            out.append(text[i])
            i += 1
    return bytes(out)


def tree_time_ns(entries: Iterable[Entry], environ: Mapping[str, str] | None = None) -> int:
    """The manifest's creation time: SOURCE_DATE_EPOCH when set, else the newest mtime in the
    plan. Never the clock: two runs over an unchanged tree must write the same manifest."""
    env = os.environ if environ is None else environ
    epoch = env.get("SOURCE_DATE_EPOCH")
    if epoch is not None and epoch.strip().lstrip("-").isdigit():
        return int(epoch) * NS_PER_S
    return max((e.mtime_ns for e in entries), default=0)


def _time_text(ns: int) -> bytes:
    sign = b"-" if ns < 0 else b""
    sec, frac = divmod(abs(ns), NS_PER_S)
    return b"%s%d.%09d" % (sign, sec, frac)


def _parse_time(text: bytes) -> int:
    sign = -1 if text.startswith(b"-") else 1
    sec, _, frac = text.lstrip(b"-").partition(b".")
    if not sec.isdigit() or len(frac) != 9 or not frac.isdigit():
        raise ManifestError(f"bad time {text!r}")
    return sign * (int(sec) * NS_PER_S + int(frac))


def header_lines(facts: Facts, count: int) -> bytes:
    if not 1 <= facts.volume <= facts.volumes <= MAX_VOLUMES:
        raise ManifestError(f"volume {facts.volume} of {facts.volumes} is out of range")
    return b"".join(
        [
            MAGIC_LINE,
            b"cipher %s\n" % facts.cipher.encode(),
            b"key-bytes %d\n" % facts.key_bytes,
            b"file-key-sig %s\n" % facts.file_sig.encode(),
            b"fnek-sig %s\n" % (facts.fnek_sig or "-").encode(),
            b"lower-root %s\n" % escape(facts.lower_root),
            b"volume %0*d of %0*d\n" % (VOLUME_DIGITS, facts.volume, VOLUME_DIGITS, facts.volumes),
            b"created %s\n" % _time_text(facts.created_ns),
            b"chain %s\n" % facts.chain if facts.chain is not None else b"",
            b"entries %d\n" % count,
        ]
    )


def listed(entries: Iterable[Entry]) -> list[Entry]:
    """The plan entries the manifest describes: all but the manifest itself."""
    return [e for e in entries if e.path != MANIFEST_NAME]


def _entry_line(entry: Entry, size: int, digest: bytes) -> bytes:
    line = b"%s %d %s %s" % (_KIND_LETTER[entry.kind], size, digest, escape(entry.path))
    if entry.kind is Kind.HARDLINK:
        line += b" " + escape(entry.link_target)
    return line + b"\n"


def _hmac_line_size() -> int:
    return len(HMAC_PREFIX) + DIGEST_HEX + 1


def _sizes(entries: Sequence[Entry]) -> Iterator[tuple[Entry, int]]:
    file_sizes = {e.path: e.size for e in entries if e.kind is Kind.FILE}
    for e in entries:
        if e.kind is Kind.FILE:
            yield e, e.size
        elif e.kind is Kind.HARDLINK:
            yield e, file_sizes.get(e.link_target, 0)
        elif e.kind is Kind.SYMLINK:
            yield e, len(e.link_target)
        else:
            yield e, 0


def manifest_size(entries: Iterable[Entry], facts: Facts) -> int:
    """Exact byte length of the manifest for `entries` (the manifest entry itself is ignored)."""
    members = listed(entries)
    total = len(header_lines(facts, len(members))) + _hmac_line_size()
    for entry, size in _sizes(members):
        total += len(_entry_line(entry, size, NO_DATA))
    return total


def manifest_key(file_key: KeyringKey) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HMAC_LABEL).derive(
        file_key.fekek
    )


def _digest_field(entry: Entry, hashes_: Mapping[bytes, bytes | None]) -> bytes:
    if entry.kind is Kind.SYMLINK:
        return hashlib.sha256(entry.link_target).hexdigest().encode()
    if entry.kind not in (Kind.FILE, Kind.HARDLINK):
        return NO_DATA
    data_path = entry.link_target if entry.kind is Kind.HARDLINK else entry.path
    if data_path not in hashes_:
        raise ManifestError(f"{os.fsdecode(data_path)}: no hash recorded; was it streamed?")
    digest = hashes_[data_path]
    return ABSENT if digest is None else digest.hex().encode()


def iter_render(
    entries: Iterable[Entry], hashes_: Mapping[bytes, bytes | None], facts: Facts, key: KeyringKey
) -> Iterator[bytes]:
    """The manifest in pieces. `hashes_` maps each FILE's archive path to the SHA-256 of the
    bytes written for it, or to None when the file was not written (it vanished)."""
    members = listed(entries)
    mac = hmac.new(manifest_key(key), digestmod=hashlib.sha256)
    head = header_lines(facts, len(members))
    mac.update(head)
    yield head
    lines: list[bytes] = []
    pending = 0
    for entry, size in _sizes(members):
        line = _entry_line(entry, size, _digest_field(entry, hashes_))
        lines.append(line)
        pending += len(line)
        if pending >= _RENDER_BATCH:
            batch = b"".join(lines)
            mac.update(batch)
            yield batch
            lines.clear()
            pending = 0
    if lines:
        batch = b"".join(lines)
        mac.update(batch)
        yield batch
    yield HMAC_PREFIX + mac.hexdigest().encode() + b"\n"


def render(
    entries: Iterable[Entry], hashes_: Mapping[bytes, bytes | None], facts: Facts, key: KeyringKey
) -> bytes:
    """The whole manifest; len(render(...)) == manifest_size(entries, facts)."""
    return b"".join(iter_render(entries, hashes_, facts, key))


def manifest_entry(entries: Sequence[Entry], facts: Facts) -> Entry:
    """The manifest's own entry: owner and mtime of SOURCE (the lower root directory), so
    nothing in it depends on the clock."""
    root = next(
        (e for e in entries if e.path == facts.lower_root and e.kind is Kind.DIR), entries[0]
    )
    size = manifest_size(entries, facts)
    return Entry(
        kind=Kind.FILE,
        path=MANIFEST_NAME,
        mode=MANIFEST_MODE,
        uid=root.uid,
        gid=root.gid,
        uname=root.uname,
        gname=root.gname,
        mtime_ns=root.mtime_ns,
        size=size,
        plain_size=size,
    )


def append_manifest(entries: Sequence[Entry], facts: Facts) -> tuple[Entry, ...]:
    """`entries` (one archive or one volume) with its manifest as the last entry."""
    members = listed(entries)
    return (*members, manifest_entry(members, facts))


def with_manifest(plan: Plan, facts: Facts) -> Plan:
    """`plan` with the manifest appended as its last entry (written after every hash is known)."""
    entries = append_manifest(plan.entries, facts)
    return replace(plan, entries=entries, data_bytes=sum(e.size for e in entries))


@dataclass(slots=True)
class ManifestBuilder:
    """Hashes each FILE's bytes as a sink streams them and renders the manifest at the end.

    Wrap the sink's opener once: `open_data = builder.opener(open_data)`. The wrapped opener
    hashes every FILE, records files the inner opener skips, and serves the manifest entry.
    """

    entries: Sequence[Entry]
    facts: Facts
    key: KeyringKey
    hashes: dict[bytes, bytes | None] = field(default_factory=dict)

    def hashing(self, entry: Entry, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
            yield chunk
        self.hashes[entry.path] = digest.digest()

    def recorded(
        self, entry: Entry, chunks: Iterator[Chunk], sha256: Callable[[], bytes]
    ) -> Iterator[Chunk]:
        """`chunks`, whose SHA-256 `sha256()` gives once they are all taken."""
        yield from chunks
        self.hashes[entry.path] = sha256()

    def skipped(self, entry: Entry) -> None:
        self.hashes[entry.path] = None

    def render(self) -> bytes:
        return render(self.entries, self.hashes, self.facts, self.key)

    def opener(self, inner: Opener) -> Opener:
        def open_data(entry: Entry) -> Iterator[Chunk] | None:
            if entry.path == MANIFEST_NAME:
                return iter(iter_render(self.entries, self.hashes, self.facts, self.key))
            chunks = inner(entry)
            if chunks is None:
                self.skipped(entry)
                return None
            known = getattr(chunks, "sha256", None)  # hashed already where it was encrypted
            if isinstance(known, bytes):
                self.hashes[entry.path] = known
                return chunks
            if known is not None:
                return self.recorded(entry, chunks, known)  # known once every chunk is taken
            return self.hashing(entry, chunks)

        return open_data


@dataclass(frozen=True, slots=True)
class Line:
    """One parsed entry line."""

    number: int  # 1-based line number in the manifest
    kind: Kind
    size: int
    digest: bytes | None  # raw 32 bytes; None for types without data
    absent: bool  # the file vanished while the archive was written
    path: bytes
    target: bytes = b""  # hard links: the archive path of the file


@dataclass(frozen=True, slots=True)
class Manifest:
    facts: Facts
    lines: tuple[Line, ...]
    declared_entries: int
    mac: bytes | None  # the hmac-sha256 value, None if the line is missing
    signed: bytes  # the bytes the HMAC covers
    problems: tuple[str, ...]  # malformed lines, count mismatch: each a message


_KINDS = {k.value.encode(): k for k in Kind}
_FACT_KEYS = (
    b"cipher",
    b"key-bytes",
    b"file-key-sig",
    b"fnek-sig",
    b"lower-root",
    b"volume",
    b"created",
    b"entries",
)
_OPTIONAL_FACT_KEYS = (b"chain",)


def _parse_line(number: int, raw: bytes) -> Line:
    parts = raw.split(b" ")
    if len(parts) not in (4, 5) or parts[0] not in _KINDS or not parts[1].isdigit():
        raise ManifestError(f"manifest line {number} is malformed")
    kind = _KINDS[parts[0]]
    if (len(parts) == 5) != (kind is Kind.HARDLINK):
        raise ManifestError(f"manifest line {number} is malformed")
    digest_text = parts[2]
    absent = digest_text == ABSENT
    digest: bytes | None = None
    if digest_text not in (NO_DATA, ABSENT):
        try:
            digest = bytes.fromhex(digest_text.decode("ascii"))
        except ValueError as e:
            raise ManifestError(f"manifest line {number} has a bad digest") from e
        if len(digest) * 2 != DIGEST_HEX:
            raise ManifestError(f"manifest line {number} has a bad digest")
    return Line(
        number=number,
        kind=kind,
        size=int(parts[1]),
        digest=digest,
        absent=absent,
        path=unescape(parts[3]),
        target=unescape(parts[4]) if len(parts) == 5 else b"",
    )


def _parse_facts(values: dict[bytes, bytes]) -> tuple[Facts, int]:
    missing = [k.decode() for k in _FACT_KEYS if k not in values]
    if missing:
        raise ManifestError(f"manifest lacks {', '.join(missing)}")
    try:
        volume, of, volumes = values[b"volume"].split(b" ")
        if of != b"of":
            raise ValueError
        fnek = values[b"fnek-sig"].decode("ascii")
        facts = Facts(
            cipher=values[b"cipher"].decode("ascii"),
            key_bytes=int(values[b"key-bytes"]),
            file_sig=values[b"file-key-sig"].decode("ascii"),
            fnek_sig=None if fnek == "-" else fnek,
            lower_root=unescape(values[b"lower-root"]),
            created_ns=_parse_time(values[b"created"]),
            volume=int(volume),
            volumes=int(volumes),
            chain=values.get(b"chain"),
        )
        return facts, int(values[b"entries"])
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"manifest header is malformed: {e}") from e


# Two %-escaped PATH_MAX paths and the fixed fields; a longer line is not one of ours.
MAX_LINE = 2 * 3 * 4096 + 256
# Problems named one by one; beyond this many a count stands for the rest.
MAX_PROBLEMS = 100
# Every line we write is well-formed: past this many malformed ones the text is not ours, and
# reading on (millions of 8-byte lines fit in a small compressed archive) would only cost time.
MAX_MALFORMED = 1000


class ManifestReader:
    """A manifest read as its bytes pass: `feed` yields each entry line as soon as it is
    complete, the HMAC is computed over the bytes on their way, and nothing is kept but the
    line being assembled, so memory does not depend on the manifest's length (a crafted
    manifest of millions of tiny lines in a small compressed archive must not cost gigabytes).

    `feed` raises ManifestError when the text is not a manifest (bad first line, a header
    missing or malformed before the first entry, a line longer than MAX_LINE); malformed entry
    lines are counted in `problems` so one bad line does not hide the rest. Call `close` at
    the end for the checks that need the whole text (count, final newline)."""

    def __init__(self, key: KeyringKey | None = None) -> None:
        self._mac = hmac.new(manifest_key(key), digestmod=hashlib.sha256) if key else None
        self._tail = bytearray()
        self._values: dict[bytes, bytes] = {}
        self.number = 0  # lines read
        self.signed_bytes = 0  # bytes before the hmac-sha256 line
        self.facts: Facts | None = None
        self.declared = 0
        self.entries = 0  # entry lines, well-formed or not
        self.malformed = 0
        self.mac: bytes | None = None
        self.problems: list[str] = []
        self.unnamed = 0  # problems beyond MAX_PROBLEMS
        self._ended = False  # the hmac line was read
        self._after = False  # text followed it

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.unnamed += 1

    def feed(self, chunk: Chunk) -> Iterator[Line]:
        data = bytes(chunk)
        pos = 0
        while (end := data.find(b"\n", pos)) >= 0:
            if self._tail:
                self._tail += data[pos:end]
                raw = bytes(self._tail)
                self._tail.clear()
            else:
                raw = data[pos:end]
            pos = end + 1
            if len(raw) > MAX_LINE:
                raise ManifestError(f"manifest line {self.number + 1} is too long")
            line = self._line(raw)
            if line is not None:
                yield line
        self._tail += data[pos:]
        if len(self._tail) > MAX_LINE:
            raise ManifestError(f"manifest line {self.number + 1} is too long")

    def _line(self, raw: bytes) -> Line | None:
        self.number += 1
        number = self.number
        if self._ended:
            if not self._after:
                self._after = True
                self.problem(f"manifest line {number - 1}: text follows the HMAC line")
            return None
        if number == 1:
            if raw + b"\n" != MAGIC_LINE:
                raise ManifestError("not an ecarchive manifest (bad first line)")
            self._signed(raw)
            return None
        if raw.startswith(HMAC_PREFIX):
            self._header_done()
            self._ended = True
            try:
                self.mac = bytes.fromhex(raw[len(HMAC_PREFIX) :].decode("ascii"))
            except ValueError:
                self.problem(f"manifest line {number}: the HMAC is not hex")
            return None
        self._signed(raw)
        key, _, value = raw.partition(b" ")
        if key in _FACT_KEYS + _OPTIONAL_FACT_KEYS and not self.entries:
            self._values[key] = value
            return None
        self._header_done()
        self.entries += 1
        try:
            return _parse_line(number, raw)
        except ManifestError as e:
            self.malformed += 1
            if self.malformed > MAX_MALFORMED:
                raise ManifestError(
                    f"manifest line {number}: more than {MAX_MALFORMED} malformed lines; "
                    "not read further"
                ) from e
            self.problem(str(e))
            return None

    def _signed(self, raw: bytes) -> None:
        self.signed_bytes += len(raw) + 1
        if self._mac is not None:
            self._mac.update(raw)
            self._mac.update(b"\n")

    def _header_done(self) -> None:
        if self.facts is None:
            self.facts, self.declared = _parse_facts(self._values)

    def close(self) -> Facts:
        """The facts, once every byte was fed; adds the problems only the end shows."""
        if self.number == 0:
            raise ManifestError("not an ecarchive manifest (bad first line)")
        if self._tail:
            self.problem("manifest does not end with a newline")
        self._header_done()
        assert self.facts is not None
        if self.declared != self.entries:
            wellformed = self.entries - self.malformed
            self.problem(f"manifest says {self.declared} entries but lists {wellformed}")
        if self.unnamed:
            self.problems.append(f"... and {self.unnamed} more manifest problems")
        return self.facts

    def mac_ok(self) -> bool:
        """Whether the HMAC line matches the bytes before it (False without a key)."""
        if self._mac is None or self.mac is None:
            return False
        return hmac.compare_digest(self._mac.digest(), self.mac)


def parse(data: bytes) -> Manifest:
    """Read a whole manifest held in memory (see ManifestReader for one read as it passes).
    Raises ManifestError if it is not one; malformed entry lines are `problems`."""
    reader = ManifestReader()
    lines = tuple(reader.feed(data))
    facts = reader.close()
    return Manifest(
        facts=facts,
        lines=lines,
        declared_entries=reader.declared,
        mac=reader.mac,
        signed=data[: reader.signed_bytes if reader.mac is not None else len(data)],
        problems=tuple(reader.problems),
    )


def mac_ok(manifest: Manifest, key: KeyringKey) -> bool:
    if manifest.mac is None:
        return False
    expected = hmac.new(manifest_key(key), manifest.signed, hashlib.sha256).digest()
    return hmac.compare_digest(expected, manifest.mac)
