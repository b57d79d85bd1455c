"""Which plaintext paths a partial restore or list takes: PATH arguments, --include, --exclude.

As GNU tar: a PATH names a member and, for a directory, everything below it; a PATH that names
nothing in the archive is an error ("Not found in archive"). Globs (fnmatch, '*' matching '/'
too, as tar's default) are matched unanchored, against the path and every tail of it that
starts at a component, and against every parent directory: excluding a directory excludes its
subtree, including one includes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fnmatch import fnmatchcase

from ..display import escape_path
from ..errors import EcarchiveError


class NotFoundInArchive(EcarchiveError):
    """A PATH given to restore or list matched no member."""


def _tails(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[i:]) for i in range(len(parts))]


def _matches(path: str, globs: Sequence[str]) -> bool:
    parts = path.split("/")
    for end in range(1, len(parts) + 1):  # the path and each of its parents
        for tail in _tails("/".join(parts[:end])):
            if any(fnmatchcase(tail, g) for g in globs):
                return True
    return False


class Selection:
    def __init__(
        self,
        paths: Sequence[bytes] = (),
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> None:
        self.paths = tuple(p.strip(b"/") for p in paths)
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self._found: set[bytes] = set()

    @property
    def everything(self) -> bool:
        return not (self.paths or self.include or self.exclude)

    def wants(self, plain: bytes) -> bool:
        if self.everything:
            return True
        if self.paths:
            hit = next(
                (p for p in self.paths if plain == p or plain.startswith(p + b"/") or not p),
                None,
            )
            if hit is None:
                return False
            self._found.add(hit)
        name = os.fsdecode(plain)
        if self.include and not _matches(name, self.include):
            return False
        return not (self.exclude and _matches(name, self.exclude))

    def check_found(self) -> None:
        """NotFoundInArchive naming every PATH that matched nothing."""
        missing = [p for p in self.paths if p not in self._found]
        if missing:
            names = ", ".join(escape_path(p) for p in missing)
            raise NotFoundInArchive(f"not found in archive: {names}")
