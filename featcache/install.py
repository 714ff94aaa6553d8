"""How to install an optional part of featcache into the Python that runs it (not whichever
``pip`` comes first on the PATH, which is often another environment's)."""

from __future__ import annotations

import shlex
import sys


def pip_install(*requirements: str) -> str:
    """A command line installing ``requirements`` for this interpreter, e.g.
    ``/work/.venv/bin/python -m pip install 'featcache[dask]'``."""
    return " ".join([shlex.quote(sys.executable), "-m", "pip", "install", *map(shlex.quote, requirements)])
