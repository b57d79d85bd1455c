"""Lower entries → plaintext entries: which keys apply, names, symlink targets, file contents.

The user gives only the passphrase. The file key comes from the default salt; the filename key
is either the separate FNEK (`ecryptfs-add-passphrase --fnek`) or the file key itself
(`mount.ecryptfs`), told apart by the signature in the first encrypted name. Names without the
`ECRYPTFS_FNEK_ENCRYPTED.` prefix are clear names, as the kernel shows them.

A wrong passphrase is told apart from a damaged file over the archive, not by its first
member: entries are held back (and damage is not reported yet) until one signature (in a name
or a header) has matched this passphrase. Foreign signatures in FOREIGN_LIMIT members with no
match at all, or only foreign ones to the end, mean the passphrase is wrong; once one matched,
each foreign one is that member's damage. An input in which nothing at all is eCryptfs (no
matching or foreign signature, no ecarchive side file) is no archive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..display import escape_path
from ..ecryptfs.constants import AES_CODES, EXTENT_SIZE, FNEK_SALT, HEADER_READ_SIZE
from ..ecryptfs.extent import decrypt_extents, root_iv
from ..ecryptfs.header import HeaderError, parse_header, unwrap_fek
from ..ecryptfs.keys import FnekMode, KeyringKey, derive_key
from ..ecryptfs.names import (
    NameDecodeError,
    decrypt_name,
    encrypt_name,
    is_encrypted_name,
    name_sig,
)
from ..ecryptfs.sizes import extent_count
from ..errors import NoArchiveFound, Reporter, WrongPassphrase
from ..model import Kind
from .members import DataReader, LowerEntry, MemberUnreadable, Path

CHUNK = 1 << 20  # lower bytes decrypted per call; a multiple of EXTENT_SIZE
EXTENTS_PER_CHUNK = CHUNK // EXTENT_SIZE
_NAME_KEY_BYTES = tuple(AES_CODES)  # the kernel uses the mount's key size for names: 16, 24, 32
_KEY_BYTES_OF_CODE = {code: n for n, code in AES_CODES.items()}
_NAME_CACHE_MAX = 4096
_BAD_NAMES = (b"", b".", b"..")
# Members signed by other keys, none by ours, after which the passphrase is called wrong: more
# than a few damaged members, few enough that a wrong passphrase is said at once.
FOREIGN_LIMIT = 16
# Damage held back before the archive is recognised; beyond it, an input with no ecarchive
# side file is no archive.
HELD_MAX = 1000


def unsafe_name(plain: bytes) -> bool:
    """A decrypted name no directory entry can have ('..', a '/' or NUL inside, empty)."""
    return plain in _BAD_NAMES or b"/" in plain or b"\0" in plain


class DamagedEntry(Exception):
    """One entry cannot be decrypted (bad marker, bad packet, truncated, another key)."""


@dataclass(frozen=True, slots=True)
class FileKey:
    fek: bytes
    root_iv: bytes
    plain_size: int
    metadata_size: int


class Keys:
    """The keys one passphrase gives, and what the archive showed about how they are used."""

    def __init__(self, passphrase: bytes) -> None:
        self.file_key = derive_key(passphrase)
        self.separate_fnek = derive_key(passphrase, FNEK_SALT)
        self.fnek: KeyringKey | None = None
        self.fnek_mode: FnekMode | None = None
        self.name_key_bytes: int | None = None
        self.verified = False  # some signature in the archive matched this passphrase
        self.foreign = 0  # foreign signatures met before one matched
        self._first_foreign: tuple[str, bytes, str] | None = None

    def _foreign(self, what: str, sig: bytes, expected: str) -> DamagedEntry:
        if not self.verified:
            self.foreign += 1
            if self._first_foreign is None:
                self._first_foreign = (what, sig, expected)
        return DamagedEntry(f"{what} encrypted with another key ({sig.hex()})")

    def wrong_passphrase(self) -> WrongPassphrase:
        what, sig, expected = self._first_foreign or ("files", b"", self.file_key.sig_hex)
        return WrongPassphrase(
            f"wrong passphrase: the archive's {what} were encrypted with key {sig.hex()}, "
            f"this passphrase gives {expected}",
            hint="check the passphrase (RESTORE.txt in the archive names the signatures)",
        )

    def _pick_fnek(self, sig: bytes) -> KeyringKey:
        if self.fnek is not None:
            if sig != self.fnek.sig:
                raise self._foreign("names", sig, self.fnek.sig_hex)
            return self.fnek
        if sig == self.separate_fnek.sig:
            self.fnek, self.fnek_mode = self.separate_fnek, FnekMode.SEPARATE
        elif sig == self.file_key.sig:
            self.fnek, self.fnek_mode = self.file_key, FnekMode.SAME
        else:
            expected = f"{self.separate_fnek.sig_hex} or {self.file_key.sig_hex}"
            raise self._foreign("names", sig, expected)
        return self.fnek

    def _detect_name_key_bytes(self, lower: bytes, fnek: KeyringKey) -> int | None:
        """The key size whose decryption re-encrypts to the very same lower name.

        Names are deterministic (write_tag_70_packet), so only the right size round-trips.
        """
        for n in _NAME_KEY_BYTES:
            try:
                plain = decrypt_name(lower, fnek, n)
            except NameDecodeError:
                continue
            if encrypt_name(plain, fnek, n) == lower:
                return n
        return None

    def name(self, lower: bytes) -> bytes:
        """A lower name or symlink target in plaintext (clear names are returned as they are)."""
        if not is_encrypted_name(lower):
            return lower
        try:
            sig = name_sig(lower)
        except NameDecodeError as e:
            raise DamagedEntry(f"undecodable encrypted name: {e}") from e
        fnek = self._pick_fnek(sig)
        self.verified = True
        key_bytes = self.name_key_bytes or self._detect_name_key_bytes(lower, fnek)
        if key_bytes is None:
            raise DamagedEntry("encrypted name does not decrypt with any AES key size")
        self.name_key_bytes = key_bytes
        try:
            return decrypt_name(lower, fnek, key_bytes)
        except NameDecodeError as e:
            raise DamagedEntry(f"encrypted name does not decrypt: {e}") from e

    def file_key_of(self, first_page: bytes | memoryview) -> FileKey:
        """parse the header and unwrap the file's FEK (ecryptfs_read_metadata)."""
        try:
            header = parse_header(bytes(first_page))
        except HeaderError as e:
            raise DamagedEntry(str(e)) from e
        packet = header.packet_for(self.file_key.sig)
        if packet is None:
            raise self._foreign("files", header.packets[0].sig, self.file_key.sig_hex)
        key_bytes = _KEY_BYTES_OF_CODE.get(packet.cipher_code)
        if key_bytes is None:
            raise DamagedEntry(f"cipher {header.cipher_name(packet)} is not supported")
        try:
            fek = unwrap_fek(packet.efek, packet.cipher_code, self.file_key)
        except HeaderError as e:
            raise DamagedEntry(str(e)) from e
        self.verified = True
        if self.name_key_bytes is None:
            self.name_key_bytes = key_bytes
        return FileKey(fek, root_iv(fek), header.plain_size, header.metadata_size)


def _read_full(data: DataReader, view: memoryview) -> int:
    try:
        return data.readinto(view)
    except MemberUnreadable as e:
        raise DamagedEntry(str(e)) from e


class FileContent:
    """A file's plaintext, decrypted extent by extent as the lower bytes stream past."""

    def __init__(
        self, key: FileKey, data: DataReader, buffers: tuple[memoryview, memoryview, memoryview]
    ):
        self.key = key
        self._data = data
        # two input buffers in turn: a reader may still be looking at the previous chunk's
        # bytes (restore hashes them on another thread) while the next one is read
        self._ins = buffers[:2]
        self._out = buffers[2]

    @property
    def plain_size(self) -> int:
        return self.key.plain_size

    def chunks(self) -> Iterator[memoryview]:
        """Plaintext in pieces of at most CHUNK bytes; each view is reused by the next one.

        Extents past the header's size are ignored; raises DamagedEntry when data is missing.
        """
        key = self.key
        remaining = key.plain_size
        lower_left = extent_count(remaining) * EXTENT_SIZE
        index = 0
        while remaining > 0:
            want = min(CHUNK, lower_left)
            lower = self._ins[index // EXTENTS_PER_CHUNK % 2]
            got = _read_full(self._data, lower[:want])
            if got < want:
                done = index * EXTENT_SIZE + got
                raise DamagedEntry(
                    f"truncated: {done} of {extent_count(key.plain_size) * EXTENT_SIZE} bytes "
                    "of encrypted data"
                )
            decrypt_extents(key.fek, key.root_iv, index, lower[:want], self._out[:want])
            take = min(want, remaining)
            yield self._out[:take]
            index += want // EXTENT_SIZE
            lower_left -= want
            remaining -= take


@dataclass(slots=True)
class PlainEntry:
    """A decrypted entry: plaintext path relative to the restore root, '/'-separated."""

    kind: Kind
    path: bytes
    lower: LowerEntry  # mode, owner, times, device number
    target: bytes = b""  # SYMLINK: plaintext target; HARDLINK: plaintext path of the file
    content: FileContent | None = None  # FILE

    @property
    def display(self) -> str:
        return escape_path(self.path)


class Decoder:
    """Turns lower entries into plaintext entries, warning about (and skipping) damaged ones."""

    def __init__(self, keys: Keys, reporter: Reporter) -> None:
        self.keys = keys
        self.reporter = reporter
        self._names: dict[bytes, bytes] = {}
        self._bad: set[Path] = set()  # directories whose subtree is skipped
        self._in = memoryview(bytearray(CHUNK))
        self._in2 = memoryview(bytearray(CHUNK))
        self._out = memoryview(bytearray(CHUNK))

    def _component(self, lower: bytes) -> bytes:
        plain = self._names.get(lower)
        if plain is None:
            plain = self.keys.name(lower)
            if unsafe_name(plain):
                raise DamagedEntry(f"decrypted name {plain!r} is not a safe file name")
            if len(self._names) >= _NAME_CACHE_MAX:
                self._names.clear()
            self._names[lower] = plain
        return plain

    def _plain_path(self, path: Path) -> bytes:
        return b"/".join(self._component(c) for c in path)

    def _in_bad_dir(self, path: Path) -> bool:
        return bool(self._bad) and any(path[:i] in self._bad for i in range(1, len(path)))

    def _open_file(self, entry: LowerEntry) -> FileContent:
        assert entry.data is not None
        page = self._in[:HEADER_READ_SIZE]
        got = _read_full(entry.data, page)
        key = self.keys.file_key_of(page[:got])
        if got < HEADER_READ_SIZE:
            raise DamagedEntry("truncated inside the eCryptfs header")
        skip = key.metadata_size - HEADER_READ_SIZE
        while skip > 0:
            n = min(skip, CHUNK)
            if _read_full(entry.data, self._in[:n]) < n:
                raise DamagedEntry("truncated inside the eCryptfs header")
            skip -= n
        return FileContent(key, entry.data, (self._in, self._in2, self._out))

    def _decode(self, entry: LowerEntry) -> PlainEntry:
        """Raises DamagedEntry with a message that starts with the best path known."""
        try:
            path = self._plain_path(entry.path)
        except DamagedEntry as e:
            raise DamagedEntry(f"{entry.display}: {e}") from e
        plain = PlainEntry(kind=entry.kind, path=path, lower=entry)
        try:
            if entry.kind is Kind.SYMLINK:
                plain.target = self.keys.name(entry.symlink)
                if not plain.target or b"\0" in plain.target:
                    raise DamagedEntry("decrypted symlink target is empty or has a NUL byte")
            elif entry.kind is Kind.HARDLINK:
                plain.target = self._plain_path(entry.link_path)
            elif entry.kind is Kind.FILE:
                plain.content = self._open_file(entry)
        except DamagedEntry as e:
            raise DamagedEntry(f"{escape_path(path)}: {e}") from e
        return plain

    def entries(
        self,
        lower: Iterator[LowerEntry],
        *,
        recognised: Callable[[], bool] = lambda: True,
        source: str = "",
    ) -> Iterator[PlainEntry]:
        """Plaintext entries in archive order. Until the passphrase is confirmed by a matching
        signature, entries (and the damage found) are held back, so a wrong passphrase or an
        input that is no archive is found before the caller acts on anything.

        `recognised()` tells whether the input showed ecarchive's side files; when it did not
        and nothing was eCryptfs either, NoArchiveFound is raised (naming `source`).
        """
        keys = self.keys
        pending: list[PlainEntry] = []
        held: list[str] = []
        for entry in lower:
            if self._in_bad_dir(entry.path):
                if entry.kind is Kind.DIR:
                    self._bad.add(entry.path)
                continue
            try:
                plain = self._decode(entry)
            except DamagedEntry as e:
                if entry.kind is Kind.DIR:
                    self._bad.add(entry.path)
                if keys.verified:
                    self.reporter.warn(f"{e}; skipped")
                    continue
                if keys.foreign >= FOREIGN_LIMIT:
                    raise keys.wrong_passphrase() from None
                held.append(f"{e}; skipped")
                if len(held) > HELD_MAX:
                    if not recognised():
                        raise self._no_archive(source) from None
                    self._flush(held)
                continue
            if not keys.verified:
                pending.append(plain)
                continue
            self._flush(held)
            if pending:
                yield from pending
                pending.clear()
            yield plain
        if not keys.verified:
            if keys.foreign:
                raise keys.wrong_passphrase()
            if not recognised():
                raise self._no_archive(source)
        self._flush(held)
        yield from pending

    def _flush(self, held: list[str]) -> None:
        for message in held:
            self.reporter.warn(message)
        held.clear()

    @staticmethod
    def _no_archive(source: str) -> NoArchiveFound:
        return NoArchiveFound(f"{source}: no ecarchive archive found")
