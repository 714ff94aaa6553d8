"""File names as text that always prints and serialises."""

from __future__ import annotations

import os
import re

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # scheme:// (a Path keeps one slash); not a drive letter


def printable_path(path: str | os.PathLike) -> str:
    """The path as text: bytes of a name that are not UTF-8 (held as surrogate escapes in a str)
    become \\xNN escapes. A UTF-8 path comes back unchanged."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def names_a_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL (``s3://bucket/x``, also as a Path that kept one slash), not a local path."""
    return _URL.match(os.fspath(path)) is not None
