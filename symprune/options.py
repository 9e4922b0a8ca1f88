"""Declared constraints of config options: allowed values and ranges, as dataclass field metadata.

A schema field (symprune/config.py, and every component's parameter dataclass) says what it accepts with
``option(default, choices=..., range=...)``; its meaning is the attribute docstring under it. The checks
themselves, with their wording, stay where they are: a declared tuple or ``Range`` is enforced by the
dataclass's ``__post_init__`` when the config is built; ``choices`` given as ``"module:NAME"`` (a tuple or
mapping importable from there, e.g. the model dtypes) are checked by the run's plan, which can afford to
import it. The configuration reference (``python -m symprune.config_reference``) prints the declarations,
and tests/test_docs.py checks that every enforced one is enforced, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """A closed, open or half-open interval; ``None``: unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '≤'} {self.high:g}"
        return "any"


POSITIVE = Range(low=1)  # a positive integer
NON_NEGATIVE = Range(low=0)
UNIT = Range(low=0, high=1, high_open=True)  # [0, 1): a sparsity


def option(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           choices: tuple | str | None = None, range: Range | None = None) -> Any:
    """A dataclass field with its allowed values (``choices``) or interval (``range``) declared."""
    metadata: dict[str, Any] = {}
    if choices is not None:
        metadata["choices"] = choices
    if range is not None:
        metadata["range"] = range
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def allowed_values(item: dataclasses.Field) -> tuple | None:
    """The values a field accepts (a ``"module:NAME"`` declaration imported now), or None if undeclared."""
    choices = item.metadata.get("choices")
    if isinstance(choices, str):
        module, name = choices.split(":")
        choices = getattr(importlib.import_module(module), name)
    return None if choices is None else tuple(choices)


def checked_when_built(item: dataclasses.Field) -> bool:
    """Whether the dataclass itself enforces the field's declaration (rather than the run's plan)."""
    return not isinstance(item.metadata.get("choices"), str)


def value_range(item: dataclasses.Field) -> Range | None:
    return item.metadata.get("range")
