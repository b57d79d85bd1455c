"""`restore_archive('-', DEST)` in a child process whose stdin is an archive file.

A child, so the archive really arrives as a non-seekable stream; a fatal error is printed as
`FATAL <class>: <message>` on stderr with its exit code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_CODE = """\
import sys
from ecarchive.errors import Reporter, EcarchiveError
from ecarchive.read.restore import restore_archive
r = Reporter()
try:
    restore_archive('-', sys.argv[1], sys.argv[2].encode('latin-1'), r)
except EcarchiveError as e:
    print('FATAL', f'{type(e).__name__}:', e, file=sys.stderr); sys.exit(e.exit_code)
sys.exit(r.exit_code)
"""


def restore_from_stdin(
    archive: Path, dest: Path, passphrase: bytes
) -> subprocess.CompletedProcess[bytes]:
    with archive.open("rb") as stdin:
        return subprocess.run(
            [sys.executable, "-c", _CODE, str(dest), passphrase.decode("latin-1")],
            stdin=stdin,
            capture_output=True,
            cwd=REPO,
        )
