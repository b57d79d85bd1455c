"""`ecarchive list`: the decrypted table of contents of a lower tree."""

from __future__ import annotations

import sys
from typing import TextIO

from .archive_reader import open_lower_tree
from .decoder import Decoder, Keys, PlainEntry
from .display import escape_path
from .errors import Reporter
from .model import Kind


def format_entry(entry: PlainEntry) -> str:
    """One line: TYPE, SIZE, PATH[, TARGET], tab separated (see list_archive)."""
    size = str(entry.content.plain_size) if entry.content is not None else "-"
    fields = [entry.kind.value, size, escape_path(entry.path)]
    if entry.kind in (Kind.SYMLINK, Kind.HARDLINK):
        fields.append(escape_path(entry.target))
    return "\t".join(fields)


def list_archive(
    source: str, passphrase: bytes, reporter: Reporter, out: TextIO | None = None
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

    Raises WrongPassphrase before printing anything; damaged entries are warned about and left
    out. A stream (stdin) whose lower directory comes before its RESTORE.txt (an ISO image
    piped in) is listed with that directory as the first path component: a stream cannot be
    read twice and lines are not held back.
    """
    stream = out if out is not None else sys.stdout
    keys = Keys(passphrase)
    with open_lower_tree(source, reporter) as lower:
        for entry in Decoder(keys, reporter).entries(lower.entries):
            stream.write(format_entry(entry) + "\n")
    stream.flush()
