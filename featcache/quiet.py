"""Quiet C++ libraries: TensorFlow and LiteRT write notes straight to file descriptor 2 (oneDNN,
CUDA probing, "Created TensorFlow Lite XNNPACK delegate", the converter's quantization summary),
past Python's logging and ``TF_CPP_MIN_LOG_LEVEL``. ``FEATCACHE_VERBOSE=1`` lets them through."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the block. Python-level errors still surface:
    they are raised after stderr is restored."""
    if os.environ.get("FEATCACHE_VERBOSE", "0") not in ("", "0"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
