"""A pipe the archive is written to gets room for a whole block of the tar sink."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ecarchive.output import PIPE_SIZE, Output

F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def test_a_fifo_output_is_widened(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert fcntl.fcntl(reader, F_GETPIPE_SZ) < PIPE_SIZE
        with Output(str(fifo)).open() as fd:
            assert fcntl.fcntl(fd, F_GETPIPE_SZ) == PIPE_SIZE
            os.write(fd, b"x")
        assert os.read(reader, 10) == b"x"
    finally:
        os.close(reader)
    assert fifo.exists()  # written, never removed


def test_a_regular_file_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "out.tar"
    with Output(str(target)).open() as fd:
        os.write(fd, b"data")
    assert target.read_bytes() == b"data"
