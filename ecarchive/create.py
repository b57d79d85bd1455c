"""Orchestration of `create`: plan → volumes → sink → destination.

The CLI hands over parsed options; this module knows which sink writes which volume where,
and nothing about argument syntax or the eCryptfs format.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from .errors import OutputFailed, Reporter, UsageError
from .iso import SECTOR_SIZE
from .manifest import MAX_VOLUMES, ManifestBuilder
from .model import Entry
from .output import Output
from .passphrase import ENV_VAR
from .progress import Progress
from .reader import EncryptingReader
from .sinks.base import ArchiveFormat, Chunk, Sink
from .sinks.iso import IsoSink
from .sinks.tar import TarSink
from .volumes import split_volumes

TTY = "/dev/tty"
# Never handed to a --volume-command: the burner has no business with the passphrase.
PRIVATE_ENV = (ENV_VAR,)


@dataclass(frozen=True, slots=True)
class Format:
    """The archive format with what its sink needs besides the entries."""

    kind: ArchiveFormat
    volume_label: str
    volume_time_ns: int

    def sink(self, entries: Sequence[Entry]) -> Sink:
        if self.kind is ArchiveFormat.ISO:
            return IsoSink(
                entries, volume_label=self.volume_label, volume_time_ns=self.volume_time_ns
            )
        return TarSink(entries)

    def size(self, entries: Sequence[Entry]) -> int:
        """Exact for ISO, an upper bound for tar (libarchive picks its pax records)."""
        return self.sink(entries).size()


def split(entries: Sequence[Entry], fmt: Format, capacity: int | None) -> list[tuple[Entry, ...]]:
    if capacity is None:
        return [tuple(entries)]
    return split_volumes(entries, capacity, lambda es: fmt.size(es))


def _counted(chunks: Iterator[Chunk], bar: Progress) -> Iterator[Chunk]:
    for chunk in chunks:
        yield chunk
        bar.update(len(chunk))


def write_volume(
    entries: Sequence[Entry],
    fmt: Format,
    reader: EncryptingReader,
    fd: int,
    bar: Progress,
    reporter: Reporter,
    manifest: ManifestBuilder,
) -> int:
    """Stream one volume to `fd` with the format's sink; its manifest is the last member.
    Returns the bytes written."""
    sink = fmt.sink(entries)

    hashed = manifest.opener(reader.open)  # a file that vanished is ABSENT in the manifest

    def open_data(entry: Entry) -> Iterator[Chunk] | None:
        if entry.source is not None:
            bar.file_done()
        chunks = hashed(entry)
        if chunks is None and sink.fixed_layout:
            chunks = reader.zero_filled(entry)  # the image's layout already holds its extent
        if chunks is None:
            bar.update(entry.size)
            return None
        return _counted(chunks, bar)

    for warning in sink.warnings:
        reporter.warn(warning, affects_exit=False)
    reader.expect(sink.read_order())  # the workers read and encrypt ahead in this order
    return sink.write(open_data, fd)


def output_identities(output: str, command: str | None) -> frozenset[tuple[int, int]]:
    """(st_dev, st_ino) of every existing file the output names, for the plan to leave out."""
    if command:
        return frozenset()
    names = [output]
    if "%" in output:
        try:
            names = [output % n for n in range(1, MAX_VOLUMES + 1)]
        except (TypeError, ValueError):
            return frozenset()  # Destinations says what is wrong with the pattern
    found = (Output(name).identity() for name in names)
    return frozenset(i for i in found if i is not None)


class Destinations:
    """Where volume n (1-based) goes: one output, a numbered file pattern, or a command."""

    def __init__(
        self,
        output: str,
        *,
        volume_count: int,
        command: str | None,
        only: int | None,
        sizes: Sequence[int] | None = None,
    ) -> None:
        """`sizes`: each volume's exact size, given to `command` (ISO images only)."""
        self.output = output
        self.command = command
        self.count = volume_count
        self.sizes = sizes
        numbered = "%" in output
        if numbered:
            try:
                output % 1
            except (TypeError, ValueError) as e:
                raise UsageError(
                    f"-o {output!r}: not a usable volume pattern (like backup-%02d.iso)"
                ) from e
        if volume_count > 1 and not (numbered or command or only):
            raise UsageError(
                f"the archive needs {volume_count} volumes",
                hint="use -o NAME-%02d.iso, --volume N or --volume-command CMD",
            )
        if only is not None and not 1 <= only <= volume_count:
            raise UsageError(f"--volume {only}: the archive has {volume_count} volume(s)")
        self.numbered = numbered

    def selected(self, only: int | None) -> list[int]:
        return [only] if only is not None else list(range(1, self.count + 1))

    def check(self) -> None:
        """Fail before volume 1 is written on what would stop the run later."""
        if not self.command and not self.numbered:
            Output(self.output).check_not_terminal()
        if self.command and len(self.selected(None)) > 1:
            _check_terminal()

    @contextlib.contextmanager
    def open(self, number: int, first: bool) -> Iterator[int]:
        if self.command:
            if not first:
                _wait_for_disc(number, self.count)
            size = self.sizes[number - 1] if self.sizes is not None else None
            with _command(self.command, number, self.count, size) as fd:
                yield fd
            return
        name = self.output % number if self.numbered else self.output
        with Output(name).open() as fd:
            yield fd


def _no_terminal() -> UsageError:
    return UsageError(
        "--volume-command waits for Enter on the terminal between volumes, and there is none",
        hint="run it from a terminal, or write the volumes to files with -o NAME-%02d.iso",
    )


def _check_terminal() -> None:
    try:
        os.close(os.open(TTY, os.O_RDWR | os.O_NOCTTY))
    except OSError as e:
        raise _no_terminal() from e


def _wait_for_disc(number: int, count: int) -> None:
    try:
        with open(TTY, "r+b", buffering=0) as tty:
            tty.write(
                f"Insert the medium for volume {number} of {count} and press Enter: ".encode()
            )
            tty.readline()
    except OSError as e:
        raise _no_terminal() from e


@contextlib.contextmanager
def _command(command: str, number: int, count: int, size: int | None) -> Iterator[int]:
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
    env.update(ECARCHIVE_VOLUME=str(number), ECARCHIVE_VOLUMES=str(count))
    if size is not None:  # what growisofs tracksize: and cdrecord tsize= need up front
        env.update(
            ECARCHIVE_VOLUME_BYTES=str(size), ECARCHIVE_VOLUME_SECTORS=str(size // SECTOR_SIZE)
        )
    proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    try:
        yield proc.stdin.fileno()
    finally:
        proc.stdin.close()
        rc = proc.wait()
    if rc != 0:
        raise OutputFailed(f"volume {number}: command {command!r} exited with status {rc}")


def write_volumes(
    volumes: list[tuple[Entry, ...]],
    fmt: Format,
    reader: EncryptingReader,
    dest: Destinations,
    only: int | None,
    progress: bool,
    reporter: Reporter,
    manifest: Callable[[int, tuple[Entry, ...]], ManifestBuilder],
) -> int:
    """Write the selected volumes in turn, each with the manifest builder made for it.
    Returns the bytes written."""
    numbers = dest.selected(only)
    total = sum(e.size for n in numbers for e in volumes[n - 1])
    files = sum(e.source is not None for n in numbers for e in volumes[n - 1])
    bar = Progress(total, progress, files=files)
    written = 0
    try:
        for i, number in enumerate(numbers):
            entries = volumes[number - 1]
            with dest.open(number, first=i == 0) as fd:
                man = manifest(number, entries)
                written += write_volume(entries, fmt, reader, fd, bar, reporter, man)
    finally:
        bar.close()
    return written
