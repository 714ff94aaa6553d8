"""User-facing errors: the CLI prints these as one clear message (no traceback) and exits non-zero."""

from __future__ import annotations

from dataclasses import dataclass

from .paths import printable_path


@dataclass(frozen=True)
class Step:
    """One of featcache's operations as a remedy (``extract``, ``verify``, ``info``, ``fit_head``,
    ...) with some of its parameters. The library shows it as a call, ``extract(data_dir='photos',
    store='s.zarr')``; the CLI as the command line that does it (``featcache extract photos --store
    s.zarr``), so that a library message never names a CLI command or flag."""

    operation: str
    params: tuple[tuple[str, object], ...] = ()  # (library parameter, value); True: a flag

    @classmethod
    def of(cls, operation: str, **params) -> Step:
        return cls(operation, tuple(params.items()))

    def __str__(self) -> str:
        return f"{self.operation}({', '.join(f'{k}={str(v)!r}' for k, v in self.params)})"


@dataclass(frozen=True)
class Remedy:
    """What to do, as words with ``{}`` where its steps go: ``Remedy("run {} again", Step.of(...))``."""

    text: str
    steps: tuple[Step, ...] = ()

    def __init__(self, text: str, *steps: Step):
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "steps", tuple(steps))

    def worded(self, word_step) -> str:
        """The remedy with each step worded by ``word_step`` (the CLI: as a command line)."""
        return self.text.format(*(word_step(s) for s in self.steps))

    def __str__(self) -> str:
        return self.worded(str)

    def __reduce__(self):
        return Remedy, (self.text, *self.steps)


class FeatcacheError(Exception):
    """A mistake the user can fix: the message says what is wrong and what to do.

    ``remedy`` (words, or a ``Remedy`` naming featcache's operations), when given apart, is what to
    do; the message then reads "problem; remedy", and ``--json`` reports the two apart.
    ``mentions``: library parameters the remedy names, which the CLI words as its flags."""

    exit_code = 2

    def __init__(self, *args, remedy: str | Remedy | None = None, mentions: tuple[str, ...] = ()):
        self.problem = str(args[0]) if args else ""
        self.remedy = remedy
        self.mentions = tuple(mentions)
        super().__init__(*((f"{args[0]}; {remedy}", *args[1:]) if remedy and args else args))


class ParameterError(FeatcacheError, ValueError):
    """A library parameter has a bad value. ``param`` is the library's own name for it (e.g.
    ``batch_size``); the CLI words the message with the matching flag (``--batch-size``), and the
    parameters in ``mentions`` where the remedy names them."""

    def __init__(self, param: str, message: str, remedy: str | Remedy | None = None, *,
                 mentions: tuple[str, ...] = ()):
        self.param = param
        self.message = message
        super().__init__(f"{param}: {message}", remedy=remedy, mentions=mentions)

    def __reduce__(self):  # rebuilt from its fields: a distributed worker's error reaches its client whole
        return _rebuild_parameter_error, (self.param, self.message, self.remedy, self.mentions)


def _rebuild_parameter_error(param, message, remedy, mentions):
    return ParameterError(param, message, remedy, mentions=mentions)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the interrupted work saved (``saved``: words, e.g. images per configuration)."""

    def __init__(self, saved: str):
        self.saved = saved
        super().__init__(saved)


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

