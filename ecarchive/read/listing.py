"""`ecarchive list`: the decrypted table of contents of a lower tree."""

from __future__ import annotations

import sys
from typing import TextIO

from ..display import escape_path
from ..errors import Reporter
from ..model import Kind
from .decode import Decoder, Keys, PlainEntry
from .members import open_lower_tree
from .select import Selection


def format_entry(entry: PlainEntry) -> str:
    """One line: TYPE, SIZE, PATH[, TARGET], tab separated (see list_archive)."""
    size = str(entry.content.plain_size) if entry.content is not None else "-"
    fields = [entry.kind.value, size, escape_path(entry.path)]
    if entry.kind in (Kind.SYMLINK, Kind.HARDLINK):
        fields.append(escape_path(entry.target))
    return "\t".join(fields)


def list_archive(
    source: str,
    passphrase: bytes,
    reporter: Reporter,
    out: TextIO | None = None,
    selection: Selection | None = None,
) -> None:
    """Print one line per entry of SOURCE (tar/ISO file, '-' for stdin, or a directory).

    Format, tab separated, in archive order:

        TYPE  SIZE  PATH  [TARGET]

    TYPE is f (file), d (directory), l (symlink), h (hard link: another name of a file listed
    before), p (fifo), c / b (character / block device). SIZE is the plaintext size in bytes
    from the file's eCryptfs header for f, '-' for every other type. PATH is the decrypted path
    relative to the lower root; TARGET is the decrypted symlink target (l) or the path of the
    file a hard link names (h). In PATH and TARGET a backslash, tab and newline are written
    as \\\\, \\t and \\n, other control characters and bytes that are not UTF-8 as \\xNN.

    `selection` lists only some paths (see read.select). Raises WrongPassphrase and
    NoArchiveFound before printing anything, NotFoundInArchive at the end for a PATH that
    matched nothing; damaged entries are warned about and left out.
    """
    stream = out if out is not None else sys.stdout
    keys = Keys(passphrase)
    chosen = selection or Selection()
    with open_lower_tree(source, reporter) as lower:
        entries = Decoder(keys, reporter).entries(
            lower.entries, recognised=lambda: lower.side_files, source=source
        )
        for entry in entries:
            if chosen.wants(entry.path):
                stream.write(format_entry(entry) + "\n")
    stream.flush()
    chosen.check_found()
