"""What the kernel tests share: fixture metadata, manifests, RESTORE.txt parsing, job scripts."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.kernel.vm import JobResult
from tests.support.trees import Record, load

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "data" / "fixtures"
PASSPHRASE = "correct horse battery staple"
FIXTURE_NAMES = (
    "aes128-fnek-separate",
    "aes256-fnek-separate",
    "aes128-fnek-same",
    "aes128-fnek-off",
)
MANIFEST_NONE = "-"
ECARCHIVE_TIMEOUT = 600
MAX_TEXT_MEMBER = 1 << 20
# Signatures of PASSPHRASE with the default salts (kernel-oracle.md, fixtures/*.env).
SIG = "3ab38bb4917daae6"
FNEK_SIG = "dfe2081a9780d1ee"


@dataclasses.dataclass(frozen=True)
class Fixture:
    name: str
    tar: Path
    mount_options: str
    sig: str
    fnek_sig: str | None

    @property
    def separate_fnek(self) -> bool:
        """True when the FNEK is its own key (needs `ecryptfs-add-passphrase --fnek`)."""
        return self.fnek_sig is not None and self.fnek_sig != self.sig


def _env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value  # later lines win: the .env repeats keys per phase
    return values


def fixture(name: str) -> Fixture:
    env = _env(FIXTURES / f"{name}.env")
    return Fixture(
        name=name,
        tar=FIXTURES / f"{name}.tar",
        # The .env stores the options shell-escaped (`\,`).
        mount_options=env["MOUNT_OPTIONS"].replace("\\,", ","),
        sig=env["SIG"],
        fnek_sig=env.get("FNEK_SIG") or None,
    )


def load_manifest(path: Path) -> dict[str, Record]:
    """Read an `oracle-manifest v1` file (tests/data/fixtures/plaintext.manifest)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("fields=", 1)[1].split(",")
    records: dict[str, Record] = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t"), strict=True))

        def opt(key: str, row: dict[str, str] = row) -> str | None:
            return None if row[key] == MANIFEST_NONE else row[key]

        mtime = int(row["mtime"])
        records[row["path"]] = Record(
            path=row["path"],
            type=row["type"],
            mode=int(row["mode"], 8),
            size=int(opt("size") or 0),
            mtime_ns=mtime * 10**9,
            mtime_s=mtime,
            sha256=opt("sha256"),
            target=opt("target"),
            hlgroup=opt("hlgroup"),
            nlink=int(opt("nlink") or 0),
            uid=0,
            gid=0,
        )
    return records


def guest_snapshot(result: JobResult, name: str = "view.json") -> dict[str, Record]:
    """A snapshot the job wrote with `walk`; a readable failure if the job never got there."""
    path = result.file(name)
    if not path.exists():
        raise AssertionError(f"job wrote no {name}\n{result.describe()}")
    with path.open(encoding="utf-8") as f:
        return load(f)


def _mounts_ecryptfs(tokens: list[str]) -> bool:
    """`mount [-i] -t ecryptfs ...` (also ecarchive's read-only ISO variant)."""
    return any(a == "-t" and b == "ecryptfs" for a, b in itertools.pairwise(tokens))


def mount_lines(restore_txt: str, lower: str, upper: str) -> list[str]:
    """The `mount [-i] -t ecryptfs` lines of RESTORE.txt with only the two paths replaced.

    `lower` and `upper` are inserted as raw shell words (e.g. '"$SCRATCH/x/Private"');
    everything else (flags, the -o option string) is kept verbatim, so the test exercises
    exactly what a user would paste.
    """
    out = []
    for line in restore_txt.splitlines():
        if not line.strip().startswith("mount "):
            continue
        tokens = shlex.split(line, comments=True)
        if not _mounts_ecryptfs(tokens):
            continue
        positional = []
        index = 1
        while index < len(tokens):
            token = tokens[index]
            if token in ("-t", "-o"):
                index += 2
                continue
            if not token.startswith("-"):
                positional.append(index)
            index += 1
        if len(positional) != 2:
            raise ValueError(f"RESTORE.txt mount line without LOWER and UPPER: {line!r}")
        words = [shlex.quote(t) for t in tokens]
        words[positional[0]], words[positional[1]] = lower, upper
        out.append(" ".join(words))
    return out


def key_lines(restore_txt: str) -> list[str]:
    """The lines of RESTORE.txt that feed the passphrase to ecryptfs-add-passphrase."""
    # Prose lines mention the tool too; only a command line starts with printf.
    return [
        line.strip()
        for line in restore_txt.splitlines()
        if line.strip().startswith("printf") and "ecryptfs-add-passphrase" in line
    ]


def run_ecarchive(*args: str, timeout: int = ECARCHIVE_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """`python -m ecarchive ARGS` from this checkout, passphrase from the environment."""
    env = {**os.environ, "ECARCHIVE_PASSPHRASE": PASSPHRASE, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "ecarchive", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_member(tar: Path, name: str) -> str:
    """One small text member of a tar, read by streaming (no random access needed)."""
    with tarfile.open(tar, mode="r|") as archive:
        for member in archive:
            if member.name.removeprefix("./") == name:
                extracted = archive.extractfile(member)
                if extracted is None:
                    break
                return extracted.read(MAX_TEXT_MEMBER).decode("utf-8")
    raise AssertionError(f"{tar.name} has no {name} member")
