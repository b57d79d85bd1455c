"""Output into a pipe whose reader left (`ecarchive list ... | head -1`): end quietly, as
`tar tf | head` does, instead of a BrokenPipeError traceback."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

# what a shell reports for a command ended by SIGPIPE, as tar is
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def quiet_on_broken_pipe(run: Callable[[], int]) -> int:
    try:
        code = run()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that flush is silent
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code
