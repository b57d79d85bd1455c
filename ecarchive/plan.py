"""The pre-scan: walk SOURCE once with lstat only and build the immutable plan.

Everything a sink needs (member paths with encrypted names, lower sizes, hard-link groups) is
decided here, so problems are all reported before the first output byte. Every directory is
opened relative to its parent's descriptor without following symlinks (`fsio`), the same way
the encrypting reader reaches the files later.
"""

from __future__ import annotations

import fnmatch
import glob
import grp
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from .ecryptfs.constants import MAX_NAME_BYTES, MAX_SYMLINK_TARGET_BYTES, NAME_MAX, PATH_MAX
from .ecryptfs.sizes import lower_size
from .errors import Reporter
from .fsio import open_dir, open_root
from .model import Entry, Kind, Plan

NameCipher = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class PlanOptions:
    source: bytes
    encrypt: NameCipher  # plaintext name or symlink target -> lower form
    names_encrypted: bool
    lower_root: bytes = b"Private"
    excludes: tuple[str, ...] = ()
    one_file_system: bool = False
    skip_long_names: bool = False
    top_files: tuple[tuple[bytes, bytes], ...] = field(default=())  # synthetic (name, content)
    mtime_ns: int | None = None  # for synthetic files; default: SOURCE's mtime
    # SOURCE opened once by the caller (fsio.open_root), shared with the encrypting reader;
    # None: opened and closed here
    root_fd: int | None = None
    # (st_dev, st_ino) of the archive being written, left out of itself as GNU tar does
    outputs: frozenset[tuple[int, int]] = frozenset()


@cache
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@cache
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


class Excluder:
    """GNU tar --exclude semantics: unanchored globs, '*' matches '/', a match prunes a subtree."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self._anchored = [p.lstrip("/").rstrip("/") for p in patterns if p.startswith("/")]
        self._floating = [
            p.removeprefix("./").rstrip("/") for p in patterns if not p.startswith("/")
        ]

    def __bool__(self) -> bool:
        return bool(self._anchored or self._floating)

    def excluded(self, rel: bytes) -> bool:
        text = os.fsdecode(rel)
        if any(fnmatch.fnmatchcase(text, p) for p in self._anchored):
            return True
        parts = text.split("/")
        return any(
            fnmatch.fnmatchcase("/".join(parts[i:]), p)
            for i in range(len(parts))
            for p in self._floating
        )


def exclude_pattern(path: str, source: str) -> str | None:
    """The --exclude pattern for exactly PATH (symlinks resolved) when it lies inside SOURCE,
    e.g. a file the run itself writes there (key store, snapshot); None when it is outside."""
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(source))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    return "/" + glob.escape(rel)


def read_exclude_file(path: str) -> tuple[str, ...]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return tuple(line.rstrip("\n") for line in f if line.strip())


@dataclass(slots=True)
class _Walk:
    opts: PlanOptions
    reporter: Reporter
    excluder: Excluder
    root_dev: int
    name_limit: int
    target_limit: int
    entries: list[Entry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    links: dict[tuple[int, int], int] = field(default_factory=dict)  # inode -> index of FILE
    link_counts: dict[int, int] = field(default_factory=dict)

    def entry(self, kind: Kind, st: os.stat_result, path: bytes, rel: bytes, **extra: Any) -> Entry:
        """An entry carrying the owner, mode and mtime of `st`; `extra` sets kind-specific fields."""
        fields: dict[str, Any] = {
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "uname": _user(st.st_uid),
            "gname": _group(st.st_gid),
            "mtime_ns": st.st_mtime_ns,
            "dev": st.st_dev,
            "ino": st.st_ino,
            "ctime_ns": st.st_ctime_ns,
        }
        fields.update(extra)
        return Entry(kind=kind, path=path, rel=rel, **fields)

    def name_ok(self, rel: bytes, name: bytes) -> bool:
        if len(name) <= self.name_limit:
            return True
        msg = (
            f"{os.fsdecode(rel)}: name is {len(name)} bytes; eCryptfs stores at most "
            f"{self.name_limit}"
        )
        if self.opts.skip_long_names:
            self.reporter.warn(msg + " (skipped)")
        else:
            self.problems.append(msg)
        return False

    def walk_dir(self, dir_fd: int, dir_abs: bytes, dir_rel: bytes, dir_lower: bytes) -> None:
        try:
            with os.scandir(dir_fd) as it:
                children = sorted(it, key=lambda d: os.fsencode(d.name))
        except OSError as e:
            self.problems.append(
                f"{os.fsdecode(dir_rel or b'.')}: cannot read directory: {e.strerror}"
            )
            return
        for child in children:
            name = os.fsencode(child.name)
            rel = dir_rel + b"/" + name if dir_rel else name
            if self.excluder and self.excluder.excluded(rel):
                continue
            if not self.name_ok(rel, name):
                continue
            try:
                st = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                self.reporter.warn(f"{os.fsdecode(rel)}: file removed before we read it")
                continue
            except OSError as e:
                self.problems.append(f"{os.fsdecode(rel)}: cannot stat: {e.strerror}")
                continue
            if (st.st_dev, st.st_ino) in self.opts.outputs:
                self.reporter.note(f"{os.fsdecode(rel)}: file is the archive; not dumped")
                continue
            abs_path = dir_abs + b"/" + name
            self.add(dir_fd, name, abs_path, rel, dir_lower + b"/" + self.opts.encrypt(name), st)

    def add(
        self, dir_fd: int, name: bytes, abs_path: bytes, rel: bytes, lower: bytes, st: os.stat_result
    ) -> None:
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            self.entries.append(self.entry(Kind.DIR, st, lower, rel))
            if self.opts.one_file_system and st.st_dev != self.root_dev:
                return
            try:
                fd = open_dir(name, dir_fd)
            except OSError as e:
                self.problems.append(f"{os.fsdecode(rel)}: cannot read directory: {e.strerror}")
                return
            try:
                if not os.access(b".", os.R_OK | os.X_OK, dir_fd=fd):
                    self.problems.append(
                        f"{os.fsdecode(rel)}: cannot read directory: Permission denied"
                    )
                    return
                self.walk_dir(fd, abs_path, rel, lower)
            finally:
                os.close(fd)
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key) if st.st_nlink > 1 else None
            if first is not None:
                self.link_counts[first] += 1
                target = self.entries[first].path
                self.entries.append(self.entry(Kind.HARDLINK, st, lower, rel, link_target=target))
                return
            if not os.access(name, os.R_OK, dir_fd=dir_fd):
                self.problems.append(f"{os.fsdecode(rel)}: cannot open: Permission denied")
                return
            if st.st_nlink > 1:
                self.links[key] = len(self.entries)
                self.link_counts[len(self.entries)] = 1
            self.entries.append(
                self.entry(
                    Kind.FILE,
                    st,
                    lower,
                    rel,
                    source=abs_path,
                    plain_size=st.st_size,
                    size=lower_size(st.st_size),
                )
            )
        elif stat.S_ISLNK(mode):
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError as e:
                self.problems.append(f"{os.fsdecode(rel)}: cannot read symlink: {e.strerror}")
                return
            if len(target) > self.target_limit:
                self.problems.append(
                    f"{os.fsdecode(rel)}: symlink target is {len(target)} bytes; eCryptfs stores "
                    f"at most {self.target_limit}"
                )
                return
            link_target = self.opts.encrypt(target)
            self.entries.append(self.entry(Kind.SYMLINK, st, lower, rel, link_target=link_target))
        elif stat.S_ISFIFO(mode):
            self.entries.append(self.entry(Kind.FIFO, st, lower, rel))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = Kind.CHAR if stat.S_ISCHR(mode) else Kind.BLOCK
            self.entries.append(self.entry(kind, st, lower, rel, rdev=st.st_rdev))
        elif stat.S_ISSOCK(mode):
            self.reporter.warn(f"{os.fsdecode(rel)}: socket ignored", affects_exit=False)
        else:
            self.reporter.warn(f"{os.fsdecode(rel)}: unknown file type; skipped")


def build_plan(opts: PlanOptions, reporter: Reporter) -> Plan:
    """Walk SOURCE (sorted by name bytes) and return the plan; problems are collected, not raised."""
    root_fd = opts.root_fd
    if root_fd is None:
        try:
            root_fd = open_root(opts.source)
        except OSError as e:
            return _rejected(opts, f"{os.fsdecode(opts.source)}: {e.strerror}")
        try:
            return _build(opts, root_fd, reporter)
        finally:
            os.close(root_fd)
    return _build(opts, root_fd, reporter)


def _rejected(opts: PlanOptions, problem: str) -> Plan:
    return Plan(entries=(), lower_root=opts.lower_root, problems=(problem,))


def _build(opts: PlanOptions, root_fd: int, reporter: Reporter) -> Plan:
    st = os.fstat(root_fd)
    if not stat.S_ISDIR(st.st_mode):
        return _rejected(opts, f"{os.fsdecode(opts.source)}: not a directory")
    walk = _Walk(
        opts=opts,
        reporter=reporter,
        excluder=Excluder(opts.excludes),
        root_dev=st.st_dev,
        name_limit=MAX_NAME_BYTES if opts.names_encrypted else NAME_MAX,
        target_limit=MAX_SYMLINK_TARGET_BYTES if opts.names_encrypted else PATH_MAX - 1,
    )
    synthetic_time = opts.mtime_ns if opts.mtime_ns is not None else st.st_mtime_ns
    for name, content in opts.top_files:
        walk.entries.append(
            walk.entry(
                Kind.FILE,
                st,
                name,
                b"",
                mode=0o644,
                mtime_ns=synthetic_time,
                size=len(content),
                plain_size=len(content),
                data=content,
            )
        )
    walk.entries.append(walk.entry(Kind.DIR, st, opts.lower_root, b""))
    if not os.access(b".", os.R_OK | os.X_OK, dir_fd=root_fd):
        walk.problems.append(
            f"{os.fsdecode(opts.source)}: cannot read directory: Permission denied"
        )
    else:
        walk.walk_dir(root_fd, opts.source.rstrip(b"/") or b"/", b"", opts.lower_root)
    entries = walk.entries
    for index, count in walk.link_counts.items():
        if count > 1:
            entries[index] = replace(entries[index], nlink=count)
    return Plan(
        entries=tuple(entries),
        lower_root=opts.lower_root,
        problems=tuple(walk.problems),
        data_bytes=sum(e.size for e in entries),
    )
