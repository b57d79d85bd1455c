"""Names as they are shown: every path, in listings, warnings and errors alike, goes through
`escape_path`, so a crafted name can neither fake a line of output nor reach the terminal as
an escape sequence."""

from __future__ import annotations

_ESCAPES = {ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n"}
_PRINTABLE_MIN = 0x20
_DEL = 0x7F


def escape_path(raw: bytes) -> str:
    """UTF-8 shown as is; backslash, tab, newline as \\\\ \\t \\n; other bytes as \\xNN."""
    text = raw.decode("utf-8", errors="surrogateescape")
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < _PRINTABLE_MIN or code == _DEL:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)
