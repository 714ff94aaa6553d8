"""Quiet C++ libraries: TensorFlow and LiteRT write notes straight to file descriptor 2 (oneDNN,
CUDA probing, "Created TensorFlow Lite XNNPACK delegate", the converter's quantization summary),
past Python's logging and ``TF_CPP_MIN_LOG_LEVEL``. ``FEATCACHE_VERBOSE=1`` lets them through."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def stderr_silenced(keep_python: bool = False) -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the block. Python-level errors still surface:
    they are raised after stderr is restored. ``keep_python``: Python's own writes to stderr (a
    progress bar) still reach the terminal; only the C++ libraries' are hidden."""
    if os.environ.get("FEATCACHE_VERBOSE", "0") not in ("", "0"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    try:
        with open(os.devnull, "w") as devnull, os.fdopen(os.dup(saved), "w", buffering=1) as terminal:
            os.dup2(devnull.fileno(), 2)
            if keep_python and _is_fd2(python_stderr):
                sys.stderr = terminal
            yield
    finally:
        sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)


def _is_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a captured stream (tests, CliRunner): left as it is
        return False
