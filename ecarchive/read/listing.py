"""`ecarchive list`: the decrypted table of contents of a lower tree."""

from __future__ import annotations

import enum
import json
import os
import stat
import sys
import time
from typing import TextIO

from ..display import escape_path
from ..errors import Reporter
from ..model import FILE_TYPE, Kind
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


class Style(enum.Enum):
    SHORT = "short"  # TYPE SIZE PATH [TARGET], tab separated
    LONG = "long"  # -l: like tar tvf
    JSON = "json"  # --json: one object per line


def _mode_text(entry: PlainEntry) -> str:
    text = stat.filemode(FILE_TYPE[entry.kind] | entry.lower.mode)
    return "h" + text[1:] if entry.kind is Kind.HARDLINK else text


def _size(entry: PlainEntry) -> int:
    return entry.content.plain_size if entry.content is not None else 0


def format_long(entry: PlainEntry) -> str:
    """mode owner/group size date time path [-> target | link to target], as tar tvf."""
    e = entry.lower
    owner = f"{e.uname or e.uid}/{e.gname or e.gid}"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime_ns // 1_000_000_000))
    line = f"{_mode_text(entry)} {owner} {_size(entry):>10} {when} {escape_path(entry.path)}"
    if entry.kind is Kind.SYMLINK:
        line += f" -> {escape_path(entry.target)}"
    elif entry.kind is Kind.HARDLINK:
        line += f" link to {escape_path(entry.target)}"
    return line


def format_json(entry: PlainEntry) -> str:
    """One JSON object; names are decoded with surrogateescape, so bytes that are not UTF-8
    come back as \\udcXX escapes (json.loads + os.fsencode gives the bytes back)."""
    e = entry.lower
    record: dict[str, object] = {
        "type": entry.kind.value,
        "path": os.fsdecode(entry.path),
        "size": _size(entry) if entry.kind is Kind.FILE else None,
        "mode": f"{e.mode:04o}",
        "uid": e.uid,
        "gid": e.gid,
        "user": e.uname or None,
        "group": e.gname or None,
        "mtime_ns": e.mtime_ns,
    }
    if entry.kind in (Kind.SYMLINK, Kind.HARDLINK):
        record["target"] = os.fsdecode(entry.target)
    if entry.kind in (Kind.CHAR, Kind.BLOCK):
        record["rdev"] = [os.major(e.rdev), os.minor(e.rdev)]
    return json.dumps(record)


_FORMATS = {Style.SHORT: format_entry, Style.LONG: format_long, Style.JSON: format_json}


def list_archive(
    source: str,
    passphrase: bytes,
    reporter: Reporter,
    out: TextIO | None = None,
    selection: Selection | None = None,
    style: Style = Style.SHORT,
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

    `style` LONG gives `tar tvf` lines (mode, owner/group, size, date, path), JSON one object
    per line (type, path, size, mode, uid, gid, user, group, mtime_ns, target, rdev).
    `selection` lists only some paths (see read.select). Raises WrongPassphrase and
    NoArchiveFound before printing anything, NotFoundInArchive at the end for a PATH that
    matched nothing; damaged entries are warned about and left out.
    """
    stream = out if out is not None else sys.stdout
    keys = Keys(passphrase)
    chosen = selection or Selection()
    line = _FORMATS[style]
    with open_lower_tree(source, reporter) as lower:
        entries = Decoder(keys, reporter).entries(
            lower.entries, recognised=lambda: lower.side_files, source=source
        )
        for entry in entries:
            if chosen.wants(entry.path):
                stream.write(line(entry) + "\n")
    stream.flush()
    chosen.check_found()
