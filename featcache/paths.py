"""File names as text that always prints and serialises."""

from __future__ import annotations

import os


def printable_path(path: str | os.PathLike) -> str:
    """The path as text: bytes of a name that are not UTF-8 (held as surrogate escapes in a str)
    become \\xNN escapes. A UTF-8 path comes back unchanged."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
