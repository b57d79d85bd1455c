"""The passphrase prompt on a real terminal (a pty): a mismatch asks again, three tries."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from pathlib import Path

from tests.cli.conftest import REPO, run_cli

GOOD = b"correct horse battery staple"


class Terminal:
    """`python3 -m ecarchive ARGS` with a pty as its controlling terminal and stdin/stdout."""

    def __init__(self, args: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if k != "ECARCHIVE_PASSPHRASE"}
        env["PYTHONPATH"] = str(REPO)
        pid, fd = pty.fork()
        if pid == 0:  # the child: pty.fork made the pty its controlling terminal
            try:
                os.execve(sys.executable, [sys.executable, "-m", "ecarchive", *args], env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.seen = b""

    def expect(self, text: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"waited for {text!r}, saw {self.seen!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                assert chunk, f"terminal closed while waiting for {text!r}, saw {self.seen!r}"
                self.seen += chunk
        self.seen = self.seen[self.seen.index(text) + len(text) :]

    def type(self, line: bytes) -> None:
        os.write(self.fd, line + b"\n")

    def wait(self) -> tuple[int, bytes]:
        rest = b""
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            rest += chunk
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status), self.seen + rest


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"secret")
    return src


def _answer(term: Terminal, first: bytes, repeat: bytes) -> None:
    term.expect(b"Passphrase: ")
    term.type(first)
    term.expect(b"Repeat passphrase: ")
    term.type(repeat)


def test_mismatch_asks_again_and_the_third_try_counts(tmp_path: Path) -> None:
    out = tmp_path / "a.tar"
    term = Terminal(["create", str(_source(tmp_path)), "-o", str(out), "-q"])
    _answer(term, GOOD, b"correct horse battery stapel")
    term.expect(b"the two passphrases differ; try again.")
    _answer(term, b"", b"")  # empty: not a passphrase eCryptfs accepts
    term.expect(b"try again.")
    _answer(term, GOOD, GOOD)
    code, rest = term.wait()
    assert code == 0, rest
    assert GOOD not in rest, "the passphrase was echoed"
    # the archive is made with the passphrase typed the third time
    listing = run_cli(["list", str(out)], passphrase=GOOD.decode())
    assert listing.returncode == 0 and b"f" in listing.stdout, listing.stderr


def test_three_mismatches_give_up_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "a.tar"
    term = Terminal(["create", str(_source(tmp_path)), "-o", str(out)])
    for n in range(3):
        _answer(term, b"one", f"two{n}".encode())
    code, rest = term.wait()
    assert code == 2, rest
    assert b"passphrases differ (3 tries)" in rest
    assert not out.exists()
