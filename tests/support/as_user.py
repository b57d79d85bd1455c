"""Run the ecarchive command line as another user, for real.

`python3 -m tests.support.as_user UID GID ARGS...`, started as root. The interpreter and its
packages may sit where the other user cannot read (a root-only home), so everything is imported
first; then the groups, gids and uids are set to the other user's, which drops every capability
(no keep-caps), and the command line runs with exactly what that user may do. Exit 3 when the
drop did not take (a test that passes as root would prove nothing).
"""

from __future__ import annotations

import os
import sys

import ecarchive.api  # noqa: F401  (everything verify needs, imported while it can be read)
from ecarchive.cli import main

NOT_DROPPED = 3


def _capabilities() -> tuple[int, int]:
    with open("/proc/self/status", "rb") as f:  # bytes: a codec would be a late import
        fields = dict(line.split(b":", 1) for line in f if line.startswith(b"Cap"))
    return int(fields[b"CapPrm"], 16), int(fields[b"CapEff"], 16)


def run(uid: int, gid: int, argv: list[str]) -> int:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getgroups() or _capabilities() != (0, 0):
        print("as_user: privileges not dropped", file=sys.stderr)
        return NOT_DROPPED
    return main(argv)


if __name__ == "__main__":
    sys.exit(run(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]))
