"""User-facing errors: the CLI prints these as one clear message (no traceback) and exits non-zero."""

from __future__ import annotations

from .paths import printable_path


class FeatcacheError(Exception):
    """A mistake the user can fix: the message says what is wrong and what to do.

    ``remedy``, when given apart, is what to do; the message then reads "problem; remedy" and
    ``--json`` reports the two apart (``problem``, ``remedy``)."""

    exit_code = 2

    def __init__(self, *args, remedy: str | None = None):
        self.problem = str(args[0]) if args else ""
        self.remedy = remedy
        super().__init__(*((f"{args[0]}; {remedy}", *args[1:]) if remedy and args else args))


class ParameterError(FeatcacheError, ValueError):
    """A library parameter has a bad value. ``param`` is the library's own name for it (e.g.
    ``batch_size``); the CLI words the message with the matching flag (``--batch-size``)."""

    def __init__(self, param: str, message: str, remedy: str | None = None, *, mentions: tuple[str, ...] = ()):
        self.param = param
        self.message = message
        self.mentions = tuple(mentions)  # other parameters named in message and remedy: worded as flags too
        super().__init__(f"{param}: {message}", remedy=remedy)

    def __reduce__(self):  # rebuilt from its fields: a distributed worker's error reaches its client whole
        return _rebuild_parameter_error, (self.param, self.message, self.remedy, self.mentions)


def _rebuild_parameter_error(param, message, remedy, mentions):
    return ParameterError(param, message, remedy, mentions=mentions)


class RegistryError(FeatcacheError):
    """A backbone, head or store type registered twice, or a plugin that cannot be loaded."""


class WeightsUnavailableError(ParameterError):
    """Pretrained weights cannot be had on this machine (no network, no cache, no local file)."""

    def __init__(self, message: str):
        super().__init__("weights", message)

    def __reduce__(self):
        return WeightsUnavailableError, (self.message,)


class ImageDecodeError(FeatcacheError):
    """One image file cannot be decoded; extraction skips it and records why."""

    def __init__(self, path, reason: str):
        self.path = printable_path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return ImageDecodeError, (self.path, self.reason)


def describe_error(exc: BaseException) -> str:
    """One line about an exception from a third-party reader (Keras, NumPy, JSON), whose messages
    can run over many lines: the CLI prints errors as one line."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def shortlist(items: list[str], shown: int) -> str:
    """The first ``shown`` names, comma-separated, and how many more: one readable line."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more

