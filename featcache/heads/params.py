"""Param: one declaration per head parameter (name, type, default, range, help). The head's
constructor, get_params/set_params validation and the CLI options of fit-head and sweep are all
derived from these declarations, so a new head needs no CLI edit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import ParameterError

TYPES = {int: "integer", float: "number", str: "text", bool: "true/false"}


@dataclass(frozen=True)
class Param:
    name: str
    type: type  # int, float, str or bool (of each element when ``multiple``)
    default: Any
    help: str
    low: float | None = None  # inclusive unless low_open
    high: float | None = None  # inclusive unless high_open
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    optional: bool = False  # None is a valid value (it means "decide for me", e.g. C chosen on validation)
    multiple: bool = False  # a list of values (e.g. a grid of C); such a parameter is not swept
    sweep: bool = True  # offered as a comma-separated grid by `featcache sweep`

    def __post_init__(self):
        if self.type not in TYPES:
            raise TypeError(f"Param {self.name}: type must be one of {[t.__name__ for t in TYPES]}")

    @property
    def sweepable(self) -> bool:
        return self.sweep and not self.multiple

    def range_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        hi = "" if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        return " and ".join(filter(None, (lo, hi)))

    def parse(self, text: str) -> Any:
        """A command-line string -> a value of this parameter (validated)."""
        if self.optional and text.strip().lower() in ("none", "auto"):
            return None
        if self.multiple:
            return self.validate([self._parse_one(t) for t in text.split(",") if t.strip()])
        return self.validate(self._parse_one(text))

    def _parse_one(self, text: str) -> Any:
        text = text.strip()
        try:
            if self.type is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                return text.lower() in ("true", "1", "yes")
            return self.type(text)
        except ValueError:
            raise ParameterError(self.name, f"expected {TYPES[self.type]}, got {text!r}") from None

    def validate(self, value: Any) -> Any:
        """The value, coerced to the declared type, or ParameterError saying what is allowed."""
        if value is None:
            if self.optional:
                return None
            raise ParameterError(self.name, "a value is required")
        if self.multiple:
            if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
                value = [value]
            values = [self._check(v) for v in value]
            if not values:
                raise ParameterError(self.name, "give at least one value")
            # a valid list is kept as it is: sklearn.base.clone checks the constructor kept its values
            same = isinstance(value, list) and all(a is b for a, b in zip(values, value, strict=True))
            return value if same else values
        return self._check(value)

    def _check(self, value: Any) -> Any:
        try:
            if self.type is bool:
                if not isinstance(value, bool | int):
                    raise TypeError
                value = bool(value)
            elif self.type is int:
                if isinstance(value, bool) or float(value) != int(value):
                    raise TypeError
                value = int(value)
            elif self.type is float:
                if isinstance(value, bool):
                    raise TypeError
                value = float(value)
            else:
                value = str(value)
        except (TypeError, ValueError, OverflowError):
            raise ParameterError(self.name, f"expected {TYPES[self.type]}, got {value!r}") from None
        if self.type in (int, float):
            if isinstance(value, float) and not math.isfinite(value):
                raise ParameterError(self.name, f"must be a finite number, got {value}")
            too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
            too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
            if too_low or too_high:
                raise ParameterError(self.name, f"must be {self.range_text()}, got {value:g}")
        if self.choices and value not in self.choices:
            raise ParameterError(self.name, f"must be {self.range_text()}, got {value!r}")
        return value
