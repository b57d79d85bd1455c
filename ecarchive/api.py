"""The Python API: what the command line does, without argparse, prompts or sys.exit.

Each call raises an `EcarchiveError` subclass (carrying its exit code) on a fatal problem and
returns the GNU-tar-like exit status otherwise (0 clean, 1 warnings such as a file that changed
while read). Warnings go to `reporter` (stderr by default).

    import ecarchive
    ecarchive.create("/home/me/Documents", "docs.iso", passphrase=b"correct horse", format="iso")
    ecarchive.restore("docs.iso", "/tmp/restored", passphrase=b"correct horse")
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal, TextIO

from .create import Destinations, Format, progress_bar, split, write_volumes
from .ecryptfs.keys import FnekMode, KeySet, derive_keyset
from .ecryptfs.names import encrypt_name
from .errors import PlanRejected, Reporter, UsageError
from .keysource import FreshKeys, KeySource
from .keystore import StableKeys
from .listing import list_archive as _list_archive
from .manifest import MANIFEST_NAME, Facts, ManifestBuilder, append_manifest, tree_time_ns
from .model import Entry
from .mount.run import MountRequest
from .mount.run import mount as _mount
from .mount.run import umount as _umount
from .plan import PlanOptions, build_plan
from .reader import EncryptingReader
from .restore import restore_archive
from .restoretext import RESTORE_NAME, MountSpec, restore_text
from .sinks.iso import volume_identifier
from .verify import verify_archive
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


def format_for(output: str, format: FormatName | None) -> FormatName:
    """The explicit format, else ISO for an output ending in .iso, else tar."""
    if format is not None:
        return format
    return "iso" if output.lower().endswith(".iso") else "tar"


def keyset(passphrase: bytes, fnek: FnekName = "separate") -> KeySet:
    return derive_keyset(passphrase, FnekMode(fnek))


def _key_store_excludes(source: str, key_store: str | None) -> tuple[str, ...]:
    """Never archive the key store itself: it changes while the archive is written."""
    if not key_store:
        return ()
    store = os.path.realpath(key_store)
    rel = os.path.relpath(store, os.path.realpath(source))
    if rel.startswith(os.pardir):
        return ()
    pattern = "/" + glob.escape(rel)
    return (pattern, pattern + "-journal")


class _Job:
    """A planned create: the plan split into volumes, each with its manifest appended."""

    def __init__(
        self,
        source: str,
        keys: KeySet,
        *,
        fmt: FormatName,
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
    ) -> None:
        lower = lower_name.encode()
        if not lower or b"/" in lower or lower in (b".", b"..", RESTORE_NAME, MANIFEST_NAME):
            raise UsageError(f"lower name {lower_name!r} is not a usable directory name")
        self.capacity = parse_media(str(media)) if media is not None else None
        if fmt == "iso":
            volume_identifier(volume_label)  # a bad label fails before anything else
        self.keys = keys
        fnek = keys.fnek

        def encrypt(name: bytes) -> bytes:
            return name if fnek is None else encrypt_name(name, fnek, key_bytes)

        text = restore_text(MountSpec(keys=keys, key_bytes=key_bytes), lower_name, iso=fmt == "iso")
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
            ),
            reporter,
        )
        if plan.problems:
            raise PlanRejected(
                plan.problems, hint="fix or --exclude these paths; nothing was written"
            )
        tree_time = tree_time_ns(plan.entries)
        self.fmt = Format(fmt, volume_label, tree_time)
        self.facts = Facts(
            cipher=cipher,
            key_bytes=key_bytes,
            file_sig=keys.file_key.sig_hex,
            fnek_sig=fnek.sig_hex if fnek else None,
            lower_root=plan.lower_root,
            created_ns=tree_time,
        )
        # The manifest's size goes into the split, so every volume is measured with its own.
        volumes = split(append_manifest(plan.entries, self.facts), self.fmt, self.capacity)
        if len(volumes) > 1:
            volumes = [
                append_manifest(v, replace(self.facts, volume=n, volumes=len(volumes)))
                for n, v in enumerate(volumes, 1)
            ]
        self.volumes = volumes

    def manifest(self, number: int, entries: tuple[Entry, ...]) -> ManifestBuilder:
        facts = replace(self.facts, volume=number, volumes=len(self.volumes))
        return ManifestBuilder(entries, facts, self.keys.file_key)


def image_sizes(
    source: str,
    *,
    format: FormatName = "iso",
    key_bytes: int = 16,
    fnek: FnekName = "separate",
    lower_name: str = DEFAULT_LOWER_NAME,
    excludes: Sequence[str] = (),
    one_file_system: bool = False,
    skip_long_names: bool = False,
    volume_label: str = DEFAULT_LABEL,
    media: str | int | None = None,
    reporter: Reporter | None = None,
) -> list[int]:
    """The size in bytes of each volume `create` would write (exact for ISO, an upper bound for
    tar), from the pre-scan alone: nothing is read, no passphrase is needed."""
    job = _Job(
        source,
        keyset(_SIZES_ONLY_PASSPHRASE, fnek),
        fmt=format,
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
    )
    return [job.fmt.size(entries) for entries in job.volumes]


def create(
    source: str,
    output: str = "-",
    *,
    passphrase: bytes,
    format: FormatName | None = None,
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
    progress: bool = False,
    reporter: Reporter | None = None,
) -> int:
    """Stream SOURCE as a tar or ISO image of eCryptfs lower files to `output` ('-' = stdout;
    with `media`, a pattern such as 'backup-%02d.iso', or `volume_command` per volume).

    Returns 0, or 1 when files changed, vanished or were skipped while read."""
    reporter = reporter or Reporter()
    fmt = format_for(output, format)
    if (volume is not None or volume_command) and media is None:
        raise UsageError("--volume and --volume-command need --media")
    if volume_command and volume is not None:
        raise UsageError("--volume-command writes every volume; drop --volume")
    if (key_store or rotate_keys_on_change) and not stable_keys:
        raise UsageError("--key-store and --rotate-keys-on-change need --stable-keys")
    keys = keyset(passphrase, fnek)
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
    )
    dest = Destinations(output, volume_count=len(job.volumes), command=volume_command, only=volume)
    dest.check()
    keysource: KeySource
    if stable_keys:
        keysource = StableKeys(
            keys.file_key,
            key_bytes,
            reporter,
            store_path=key_store,
            rotate_on_change=rotate_keys_on_change,
        )
    else:
        keysource = FreshKeys(keys.file_key, key_bytes)
    reader = EncryptingReader(
        keysource, filenames_encrypted=keys.fnek is not None, reporter=reporter
    )
    if len(job.volumes) > 1:
        reporter.note(f"{len(job.volumes)} volumes of at most {job.capacity} bytes")
    try:
        write_volumes(job.volumes, job.fmt, reader, dest, volume, progress, reporter, job.manifest)
    finally:
        if isinstance(keysource, StableKeys):
            keysource.close()
    return reporter.exit_code


def restore(
    archive: str,
    dest: str,
    *,
    passphrase: bytes,
    progress: bool = False,
    reporter: Reporter | None = None,
) -> int:
    """Decrypt ARCHIVE (tar, ISO, '-' for stdin, or an extracted directory) into DEST."""
    reporter = reporter or Reporter()
    total = os.path.getsize(archive) if os.path.isfile(archive) else None
    bar = progress_bar(total, progress)

    def advance(n: int) -> None:
        bar.update(n)

    try:
        restore_archive(archive, dest, passphrase, reporter, progress=advance)
    finally:
        bar.close()
    return reporter.exit_code


def list_archive(
    archive: str,
    *,
    passphrase: bytes,
    out: TextIO | None = None,
    reporter: Reporter | None = None,
) -> int:
    """Print one line per entry (TYPE, SIZE, PATH[, TARGET], tab separated) to `out`."""
    reporter = reporter or Reporter()
    _list_archive(archive, passphrase, reporter, out)
    return reporter.exit_code


def verify(
    archive: str,
    *,
    passphrase: bytes | None = None,
    against: str | None = None,
    out: TextIO | None = None,
    reporter: Reporter | None = None,
) -> int:
    """Check ARCHIVE against its manifest (hashes; with the passphrase also the HMAC, headers and
    names; with `against` the decrypted content against that plaintext tree)."""
    reporter = reporter or Reporter()
    code = verify_archive(
        archive, passphrase=passphrase, against=against, reporter=reporter, out=out or sys.stdout
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
