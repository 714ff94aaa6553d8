"""User-facing errors: the CLI prints these as one clear message (no traceback) and exits non-zero."""

from __future__ import annotations


class FeatcacheError(Exception):
    """A mistake the user can fix: the message says what is wrong and what to do."""

    exit_code = 2


class WeightsUnavailableError(FeatcacheError):
    """Pretrained weights cannot be had on this machine (no network, no cache, no local file)."""


class ImageDecodeError(FeatcacheError):
    """One image file cannot be decoded; extraction skips it and records why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
