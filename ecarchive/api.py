"""The Python API: what the command line does, without argparse, prompts or sys.exit.

Each call raises an `EcarchiveError` subclass (carrying its exit code) on a fatal problem and
returns the GNU-tar-like exit status otherwise (0 clean, 1 warnings such as a file that changed
while read). Warnings go to `reporter` (stderr by default).

    import ecarchive
    ecarchive.create("/home/me/Documents", "docs.iso", passphrase=b"correct horse", format="iso")
    ecarchive.restore("docs.iso", "/tmp/restored", passphrase=b"correct horse")
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Literal, TextIO

from .chain import list_deletions, restore_chain
from .create import Destinations, Format, output_identities, split, write_volumes
from .ecryptfs.keys import FnekMode, KeySet, derive_keyset
from .ecryptfs.names import encrypt_name
from .errors import PlanRejected, Reporter, UsageError
from .fsio import open_root
from .incremental import Incremental, Keying, deletions_in_first_volume
from .keystore import StableKeys, key_source
from .manifest import MANIFEST_NAME, Facts, ManifestBuilder, append_manifest, tree_time_ns
from .model import Entry, Kind
from .mount.run import MountRequest
from .mount.run import mount as _mount
from .mount.run import umount as _umount
from .plan import PlanOptions, build_plan, exclude_pattern
from .progress import Progress, Tally
from .read.listing import Style
from .read.listing import list_archive as _list_archive
from .read.restore import Existing
from .read.select import Selection
from .read.verify import verify_archive
from .reader import EncryptingReader
from .restoretext import RESTORE_NAME, MountSpec, restore_text
from .sinks.base import ArchiveFormat
from .sinks.iso import volume_identifier
from .volumes import parse_media

FormatName = Literal["tar", "iso"]
FnekName = Literal["separate", "same", "off"]
DEFAULT_LABEL = "ECARCHIVE"
DEFAULT_LOWER_NAME = "Private"
# --print-size asks for no passphrase: signatures and encrypted names have fixed lengths.
_SIZES_ONLY_PASSPHRASE = b"sizes only"

__all__ = [
    "DEFAULT_LABEL",
    "DEFAULT_LOWER_NAME",
    "check_output_name",
    "create",
    "format_for",
    "image_sizes",
    "keyset",
    "list_archive",
    "mount",
    "restore",
    "umount",
    "verify",
]


def format_for(
    output: str, format: FormatName | ArchiveFormat | None, media: str | int | None = None
) -> ArchiveFormat:
    """The explicit format, else the output's extension (.iso, .tar), else ISO when splitting
    for discs (`media`: what growisofs burns is an image, not a tar), else tar."""
    if format is not None:
        return ArchiveFormat(format)
    name = output.lower()
    if name.endswith(".iso"):
        return ArchiveFormat.ISO
    if name.endswith(".tar") or media is None:
        return ArchiveFormat.TAR
    return ArchiveFormat.ISO


# GNU tar's --auto-compress suffixes, and lz4: names that promise a compressed archive
_COMPRESSED_SUFFIXES = (
    ".gz", ".tgz", ".taz", ".z", ".bz2", ".tbz", ".tbz2", ".tz2", ".tb2", ".xz", ".txz",
    ".lz", ".lzma", ".tlz", ".lzo", ".lz4", ".zst", ".tzst",
)  # fmt: skip


def check_output_name(output: str) -> None:
    """Refuse an output named like a compressed archive: ciphertext does not compress, and an
    uncompressed tar under that name would fool every tool that trusts the name."""
    suffix = next((s for s in _COMPRESSED_SUFFIXES if output.lower().endswith(s)), None)
    if suffix is not None:
        raise UsageError(
            f"-o {output}: eCryptfs data is encrypted and does not compress, "
            f"so ecarchive writes no {suffix} archive",
            hint="name it .tar or .iso; a compressor in a pipe would only spend time",
        )


def keyset(passphrase: bytes, fnek: FnekName = "separate") -> KeySet:
    return derive_keyset(passphrase, FnekMode(fnek))


def _key_store_excludes(source: str, key_store: str | None) -> tuple[str, ...]:
    """Never archive the key store itself: it changes while the archive is written."""
    pattern = exclude_pattern(key_store, source) if key_store else None
    return () if pattern is None else (pattern, pattern + "-journal")


@contextlib.contextmanager
def _source(source: str) -> Iterator[int | None]:
    """SOURCE opened once: the plan walks it and the reader reads through this descriptor, so
    SOURCE replaced in between (or a symlink in its path changed) cannot redirect the read."""
    try:
        fd = open_root(os.fsencode(source))
    except OSError:
        yield None  # the plan reports why
        return
    try:
        yield fd
    finally:
        os.close(fd)


class _Job:
    """A planned create: the plan split into volumes, each with its manifest appended."""

    def __init__(
        self,
        source: str,
        keys: KeySet,
        *,
        fmt: ArchiveFormat,
        key_bytes: int,
        cipher: str,
        lower_name: str,
        excludes: Sequence[str],
        key_store: str | None,
        one_file_system: bool,
        skip_long_names: bool,
        volume_label: str,
        media: str | int | None,
        reporter: Reporter,
        root_fd: int | None,
        outputs: frozenset[tuple[int, int]] = frozenset(),
        listed_incremental: str | None = None,
        level: int | None = None,
        stable_keys: bool = False,
        sizes_only: bool = False,
    ) -> None:
        lower = lower_name.encode()
        if not lower or b"/" in lower or lower in (b".", b"..", RESTORE_NAME, MANIFEST_NAME):
            raise UsageError(f"lower name {lower_name!r} is not a usable directory name")
        self.capacity = parse_media(str(media)) if media is not None else None
        if fmt is ArchiveFormat.ISO:
            volume_identifier(volume_label)  # a bad label fails before anything else
        self.keys = keys
        fnek = keys.fnek

        def encrypt(name: bytes) -> bytes:
            return name if fnek is None else encrypt_name(name, fnek, key_bytes)

        spec = MountSpec(keys=keys, key_bytes=key_bytes)
        self.incremental: Incremental | None = None
        chain_note = b""
        if listed_incremental is not None:
            keying = Keying(keys.file_key.sig_hex, fnek.sig_hex if fnek else None, key_bytes, lower)
            self.incremental = Incremental(
                listed_incremental,
                None if sizes_only else keying,
                full=level == 0,
                check_ctime=not stable_keys,  # its xattr writes move ctime
            )
            chain_note = self.incremental.restore_note()
            excludes = (*excludes, *self.incremental.excludes(source))
        text = restore_text(spec, lower_name, iso=fmt is ArchiveFormat.ISO) + chain_note
        plan = build_plan(
            PlanOptions(
                source=os.fsencode(source),
                encrypt=encrypt,
                names_encrypted=fnek is not None,
                lower_root=lower,
                excludes=tuple(excludes) + _key_store_excludes(source, key_store),
                one_file_system=one_file_system,
                skip_long_names=skip_long_names,
                top_files=((RESTORE_NAME, text),),
                root_fd=root_fd,
                outputs=outputs,
            ),
            reporter,
        )
        if plan.problems:
            raise PlanRejected(
                plan.problems, hint="fix or --exclude these paths; nothing was written"
            )
        entries = plan.entries
        if self.incremental is not None:
            entries = self.incremental.select(entries, encrypt)
        tree_time = tree_time_ns(plan.entries)
        self.fmt = Format(fmt, volume_label, tree_time)
        self.facts = Facts(
            cipher=cipher,
            key_bytes=key_bytes,
            file_sig=keys.file_key.sig_hex,
            fnek_sig=fnek.sig_hex if fnek else None,
            lower_root=plan.lower_root,
            created_ns=tree_time,
            chain=self.incremental.chain() if self.incremental else None,
        )
        # The manifest's size goes into the split, so every volume is measured with its own.
        volumes = split(append_manifest(entries, self.facts), self.fmt, self.capacity)
        if len(volumes) > 1:
            count = len(volumes)

            def numbered(entries: tuple[Entry, ...], n: int) -> tuple[Entry, ...]:
                """RESTORE.txt says which volume it is on (same length: the split holds)."""
                text = restore_text(
                    spec, lower_name, iso=fmt is ArchiveFormat.ISO, volume=n, volumes=count
                )
                text += chain_note
                return tuple(
                    replace(e, data=text) if e.path == RESTORE_NAME and e.source is None else e
                    for e in entries
                )

            volumes = [
                append_manifest(numbered(v, n), replace(self.facts, volume=n, volumes=count))
                for n, v in enumerate(deletions_in_first_volume(volumes), 1)
            ]
        self.volumes = volumes

    def manifest(self, number: int, entries: tuple[Entry, ...]) -> ManifestBuilder:
        facts = replace(self.facts, volume=number, volumes=len(self.volumes))
        return ManifestBuilder(entries, facts, self.keys.file_key)


def image_sizes(
    source: str,
    *,
    format: FormatName | ArchiveFormat = "iso",
    key_bytes: int = 16,
    fnek: FnekName = "separate",
    lower_name: str = DEFAULT_LOWER_NAME,
    excludes: Sequence[str] = (),
    one_file_system: bool = False,
    skip_long_names: bool = False,
    volume_label: str = DEFAULT_LABEL,
    media: str | int | None = None,
    listed_incremental: str | None = None,
    level: int | None = None,
    reporter: Reporter | None = None,
) -> list[int]:
    """The size in bytes of each volume `create` would write (exact for ISO, an upper bound for
    tar), from the pre-scan alone: nothing is read, no passphrase is needed."""
    with _source(source) as root_fd:
        job = _Job(
            source,
            keyset(_SIZES_ONLY_PASSPHRASE, fnek),
            fmt=format_for("", format),
            key_bytes=key_bytes,
            cipher="aes",
            lower_name=lower_name,
            excludes=excludes,
            key_store=None,
            one_file_system=one_file_system,
            skip_long_names=skip_long_names,
            volume_label=volume_label,
            media=media,
            reporter=reporter or Reporter(),
            root_fd=root_fd,
            listed_incremental=listed_incremental,
            level=level,
            sizes_only=True,
        )
    return [job.fmt.size(entries) for entries in job.volumes]


def create(
    source: str,
    output: str = "-",
    *,
    passphrase: bytes,
    format: FormatName | ArchiveFormat | None = None,
    key_bytes: int = 16,
    fnek: FnekName = "separate",
    cipher: str = "aes",
    lower_name: str = DEFAULT_LOWER_NAME,
    excludes: Sequence[str] = (),
    one_file_system: bool = False,
    skip_long_names: bool = False,
    volume_label: str = DEFAULT_LABEL,
    media: str | int | None = None,
    volume: int | None = None,
    volume_command: str | None = None,
    stable_keys: bool = False,
    key_store: str | None = None,
    rotate_keys_on_change: bool = False,
    listed_incremental: str | None = None,
    level: int | None = None,
    jobs: int | None = None,
    progress: bool = False,
    summary: bool = False,
    reporter: Reporter | None = None,
) -> int:
    """Stream SOURCE as a tar or ISO image of eCryptfs lower files to `output` ('-' = stdout;
    with `media`, a pattern such as 'backup-%02d.iso', or `volume_command` per volume).
    `jobs` threads read and encrypt (default: one per CPU).
    `summary`: a closing line with counts, bytes, time and warnings through `reporter`.

    With `listed_incremental` (a snapshot file, GNU tar's -g): level 0 when it does not exist
    or `level` is 0, else only what changed since; the snapshot is replaced once every volume
    is written (see ecarchive.incremental).

    Returns 0, or 1 when files changed, vanished or were skipped while read."""
    tally = Tally()
    reporter = reporter or Reporter()
    check_output_name(output)
    fmt = format_for(output, format, media)
    if (volume is not None or volume_command) and media is None:
        raise UsageError("--volume and --volume-command need --media")
    if volume_command and volume is not None:
        raise UsageError("--volume-command writes every volume; drop --volume")
    if (key_store or rotate_keys_on_change) and not stable_keys:
        raise UsageError("--key-store and --rotate-keys-on-change need --stable-keys")
    if listed_incremental is not None and volume is not None:
        raise UsageError(
            "--volume writes one volume, and the snapshot needs the whole archive",
            hint="write every volume in one run (-o NAME-%02d.iso or --volume-command)",
        )
    if level is not None and listed_incremental is None:
        raise UsageError("--level needs --listed-incremental")
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs}: at least one worker is needed")
    keys = keyset(passphrase, fnek)
    with _source(source) as root_fd:
        job = _Job(
            source,
            keys,
            fmt=fmt,
            key_bytes=key_bytes,
            cipher=cipher,
            lower_name=lower_name,
            excludes=excludes,
            key_store=key_store,
            one_file_system=one_file_system,
            skip_long_names=skip_long_names,
            volume_label=volume_label,
            media=media,
            reporter=reporter,
            root_fd=root_fd,
            outputs=output_identities(output, volume_command),
            listed_incremental=listed_incremental,
            level=level,
            stable_keys=stable_keys,
        )
        assert root_fd is not None  # else the plan was rejected
        iso = fmt is ArchiveFormat.ISO
        sizes = [job.fmt.size(v) for v in job.volumes] if volume_command and iso else None
        dest = Destinations(
            output, volume_count=len(job.volumes), command=volume_command, only=volume, sizes=sizes
        )
        dest.check()
        keysource = key_source(
            keys.file_key,
            key_bytes,
            reporter,
            stable=stable_keys,
            store_path=key_store,
            rotate_on_change=rotate_keys_on_change,
            root_fd=root_fd,
        )
        reader = EncryptingReader(
            keysource,
            filenames_encrypted=keys.fnek is not None,
            reporter=reporter,
            root_fd=root_fd,
            jobs=jobs,
        )
        if len(job.volumes) > 1:
            reporter.note(f"{len(job.volumes)} volumes of at most {job.capacity} bytes")
        try:
            with job.incremental.committing() if job.incremental else contextlib.nullcontext():
                tally.bytes_out = write_volumes(
                    job.volumes, job.fmt, reader, dest, volume, progress, reporter, job.manifest
                )
        finally:
            reader.close()
            if isinstance(keysource, StableKeys):
                keysource.close()
    if summary:
        for number in dest.selected(volume):
            for entry in job.volumes[number - 1]:
                if entry.source is not None or entry.kind is not Kind.FILE:  # not RESTORE.txt
                    tally.count(entry.kind)
                    tally.bytes_in += entry.plain_size
        reporter.note(tally.summary("created", len(reporter.warnings)))
    return reporter.exit_code


def restore(
    archive: str | Sequence[str],
    dest: str,
    *,
    passphrase: bytes,
    progress: bool = False,
    summary: bool = False,
    reporter: Reporter | None = None,
    existing: Existing = Existing.REPLACE,
    paths: Sequence[bytes] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> int:
    """Decrypt ARCHIVE (tar, ISO, '-' for stdin, or an extracted directory; or several, such
    as the volumes of a set) into DEST. Archives of an incremental chain (their manifests say
    so) are applied in order, each level's deletions first (ecarchive.chain).

    `existing`: what happens to a file already in DEST (GNU tar's default, --keep-old-files,
    --skip-old-files). `paths`, `include`, `exclude`: restore only those plaintext paths.
    `summary`: a closing line with counts, bytes, time and warnings through `reporter`."""
    reporter = reporter or Reporter()
    archives = [archive] if isinstance(archive, str) else list(archive)
    sizes = [os.path.getsize(a) if os.path.isfile(a) else None for a in archives]
    total = None if None in sizes else sum(s or 0 for s in sizes)
    bar = Progress(total, progress)
    tally = Tally(on_file=bar.file_done)

    def advance(n: int) -> None:
        tally.bytes_in += n
        bar.update(n)

    try:
        restore_chain(
            archives,
            dest,
            passphrase,
            reporter,
            progress=advance,
            tally=tally,
            existing=existing,
            selection=Selection(paths, include, exclude),
        )
    finally:
        bar.close()
    if summary:
        if total is not None:  # an archive file: headers and padding are read too
            tally.bytes_in = total
        reporter.note(tally.summary("restored", len(reporter.warnings)))
    return reporter.exit_code


def list_archive(
    archive: str,
    *,
    passphrase: bytes,
    out: TextIO | None = None,
    reporter: Reporter | None = None,
    paths: Sequence[bytes] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    style: Style = Style.SHORT,
) -> int:
    """Print one line per entry (TYPE, SIZE, PATH[, TARGET], tab separated; `style` LONG as
    tar tvf, JSON one object per line) to `out`; with `paths`, `include`, `exclude` only those
    plaintext paths."""
    reporter = reporter or Reporter()
    selection = Selection(paths, include, exclude)
    _list_archive(archive, passphrase, reporter, out, selection, style)
    list_deletions(archive, passphrase, reporter, out, selection, style)
    return reporter.exit_code


def verify(
    archive: str,
    *,
    passphrase: bytes | None = None,
    against: str | None = None,
    out: TextIO | None = None,
    reporter: Reporter | None = None,
    as_json: bool = False,
) -> int:
    """Check ARCHIVE against its manifest (hashes; with the passphrase also the HMAC, headers and
    names; with `against` the decrypted content against that plaintext tree)."""
    reporter = reporter or Reporter()
    code = verify_archive(
        archive,
        passphrase=passphrase,
        against=against,
        reporter=reporter,
        out=out or sys.stdout,
        as_json=as_json,
    )
    return max(code, reporter.exit_code)


def mount(
    source: str,
    mountpoint: str,
    *,
    passphrase: bytes,
    key_bytes: int = 16,
    fnek: FnekName = "separate",
    excludes: Sequence[str] = (),
    stable_keys: bool = False,
    key_store: str | None = None,
    rotate_keys_on_change: bool = False,
    foreground: bool = False,
    allow_other: bool = False,
    reporter: Reporter | None = None,
) -> int:
    """Mount a read-only FUSE view of SOURCE as an eCryptfs lower directory on MOUNTPOINT.

    Names, sizes and keys are those `create` would write; copy the view (rsync, tar) and mount
    the copy with `mount -t ecryptfs`, or `restore` it. Returns once the mount answers (in the
    background), or after it is unmounted with `foreground`. Needs the `mount` extra."""
    reporter = reporter or Reporter()
    if (key_store or rotate_keys_on_change) and not stable_keys:
        raise UsageError("--key-store and --rotate-keys-on-change need --stable-keys")
    request = MountRequest(
        source,
        mountpoint,
        keyset(passphrase, fnek),
        key_bytes,
        excludes=tuple(excludes) + _key_store_excludes(source, key_store),
        stable_keys=stable_keys,
        key_store=key_store,
        rotate_keys_on_change=rotate_keys_on_change,
        foreground=foreground,
        allow_other=allow_other,
    )
    return _mount(request, reporter)


def umount(mountpoint: str) -> int:
    """Unmount what `mount` mounted (fusermount3 -u)."""
    _umount(mountpoint)
    return 0
