"""Where the passphrase comes from: file, fd, environment, wrapped-passphrase file or the tty.

Never argv: a command line is visible to every user of the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .ecryptfs.keys import PassphraseError, check_passphrase
from .ecryptfs.wrapped import WrappedPassphraseError, unwrap_passphrase
from .errors import PassphraseUnavailable

ENV_VAR = "ECARCHIVE_PASSPHRASE"
TTY = "/dev/tty"
TRIES = 3
_MAX_LINE = 4096  # a passphrase line is at most 64 bytes; refuse to read a huge file whole


@dataclass(frozen=True, slots=True)
class PassphraseSources:
    file: str | None = None
    fd: int | None = None
    wrapped: str | None = None
    use_env: bool = True
    prompt_allowed: bool = True


def _first_line(data: bytes) -> bytes:
    line = data.split(b"\n", 1)[0]
    return line[:-1] if line.endswith(b"\r") else line


def _read_limited(fd: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < _MAX_LINE and b"\n" not in chunks:
        block = os.read(fd, _MAX_LINE)
        if not block:
            break
        chunks += block
    return bytes(chunks)


def _from_file(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise PassphraseUnavailable(f"cannot read passphrase file {path}: {e.strerror}") from e
    try:
        return _first_line(_read_limited(fd))
    finally:
        os.close(fd)


def _from_fd(fd: int) -> bytes:
    try:
        return _first_line(_read_limited(fd))
    except OSError as e:
        raise PassphraseUnavailable(f"cannot read passphrase from fd {fd}: {e.strerror}") from e


def _prompt(label: str, confirm: bool) -> bytes:
    """Ask on the terminal; a mismatch or an unusable passphrase asks again, TRIES times in all
    (as gpg and ecryptfs-add-passphrase do), since a typo is the likely cause."""
    try:
        tty = os.open(TTY, os.O_RDWR | os.O_NOCTTY)
    except OSError as e:
        raise PassphraseUnavailable(
            "no passphrase given and no terminal to ask on",
            hint=f"use --passphrase-file FILE, --passphrase-fd N or set {ENV_VAR}",
        ) from e
    try:
        problem = ""
        for attempt in range(1, TRIES + 1):
            answers = [_ask(tty, label)]
            if confirm:
                answers.append(_ask(tty, f"Repeat {label.lower()}"))
            try:
                check_passphrase(answers[0])
            except PassphraseError as e:
                problem = str(e)
            else:
                if answers[0] == answers[-1]:
                    return answers[0]
                problem = "the two passphrases differ"
            if attempt < TRIES:
                os.write(tty, f"{problem}; try again.\n".encode())
    finally:
        os.close(tty)
    raise PassphraseUnavailable(f"{problem} ({TRIES} tries)")


def _ask(tty: int, text: str) -> bytes:
    """One line from the terminal with echo off."""
    import termios

    old = termios.tcgetattr(tty)
    new = old[:]
    new[3] &= ~termios.ECHO
    try:
        termios.tcsetattr(tty, termios.TCSAFLUSH, new)
        os.write(tty, f"{text}: ".encode())
        answer = _first_line(_read_limited(tty))
        os.write(tty, b"\n")
    finally:
        termios.tcsetattr(tty, termios.TCSAFLUSH, old)
    return answer


def _direct(src: PassphraseSources, label: str, confirm: bool) -> bytes:
    if src.file is not None:
        return _from_file(src.file)
    if src.fd is not None:
        return _from_fd(src.fd)
    if src.use_env and ENV_VAR in os.environ:
        return os.environb[ENV_VAR.encode()]
    if not src.prompt_allowed:
        raise PassphraseUnavailable(
            f"no passphrase source given ({ENV_VAR}, --passphrase-file, --passphrase-fd)"
        )
    return _prompt(label, confirm)


def get_passphrase(src: PassphraseSources, *, confirm: bool = False) -> bytes:
    """The mount passphrase: first source that applies; a wrapped file is unwrapped with a login one."""
    if src.wrapped is not None:
        login = _direct(src, "Login passphrase", confirm=False)
        try:
            with open(src.wrapped, "rb") as f:
                blob = f.read(_MAX_LINE)
        except OSError as e:
            raise PassphraseUnavailable(f"cannot read {src.wrapped}: {e.strerror}") from e
        try:
            return unwrap_passphrase(blob, login)
        except (WrappedPassphraseError, PassphraseError) as e:
            raise PassphraseUnavailable(f"{src.wrapped}: {e}") from e
    passphrase = _direct(src, "Passphrase", confirm)
    try:
        check_passphrase(passphrase)
    except PassphraseError as e:
        raise PassphraseUnavailable(str(e)) from e
    return passphrase
