"""What a user watches while `create` or `restore` runs, and the summary line at the end."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from .model import Kind

_MB = 1_000_000  # MB/s in SI units, as dd, rsync and pv print them


class Progress:
    """A byte bar on stderr with files done (of the total, when known) beside the bytes."""

    def __init__(self, total: int | None, enabled: bool, *, files: int | None = None) -> None:
        self._bar: tqdm[Any] = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
            leave=False,
        )
        self._total_files = files
        self.files = 0

    def update(self, n: int) -> None:
        self._bar.update(n)

    def file_done(self, count: int = 1) -> None:
        self.files += count
        if not self._bar.disable:
            of = "" if self._total_files is None else f"/{self._total_files}"
            # tqdm redraws on byte updates only after its adaptive `miniters`: a file count that
            # changed is shown once mininterval has passed, not held back until the next redraw
            # (a short restore used to end without ever showing one)
            stale = time.time() - self._bar.last_print_t >= self._bar.mininterval
            self._bar.set_postfix_str(f"{self.files}{of} files", refresh=stale)

    def close(self) -> None:
        if not self._bar.disable:
            self._bar.refresh()  # the final counts, even when the run was shorter than a redraw
        self._bar.close()


@dataclass
class Tally:
    """Counts for the summary: members by kind, bytes read and written, time since start."""

    files: int = 0  # regular files, as the progress bar counts them
    directories: int = 0
    other: int = 0  # further hard links, symlinks, fifos, devices
    bytes_in: int = 0
    bytes_out: int = 0
    started: float = field(default_factory=time.monotonic)
    # told of each file as it is counted: restore reads ahead of what it has written, so a bar
    # fed only by bytes read would show its files late or never
    on_file: Callable[[], None] | None = None

    def count(self, kind: Kind) -> None:
        if kind is Kind.FILE:
            self.files += 1
            if self.on_file is not None:
                self.on_file()
        elif kind is Kind.DIR:
            self.directories += 1
        else:
            self.other += 1

    def summary(self, verb: str, warnings: int) -> str:
        """One line, like `tar --totals` and rsync's closing lines, for stderr."""
        seconds = time.monotonic() - self.started
        rate = self.bytes_out / _MB / seconds if seconds > 0 else 0.0
        other = f", {self.other} other" if self.other else ""
        return (
            f"{verb} {self.files} files, {self.directories} directories{other}; "
            f"read {self.bytes_in:,} bytes, wrote {self.bytes_out:,} bytes "
            f"in {seconds:.1f} s ({rate:.1f} MB/s); "
            f"{warnings} warning{'' if warnings == 1 else 's'}"
        )
