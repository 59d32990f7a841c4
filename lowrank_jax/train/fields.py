"""Config fields that declare their bounds, and the one check that enforces them.

A section of the config declares each value's type by its annotation and its range or
choices with :func:`setting`; :func:`check_fields` then checks every field of a section
the same way, so a section's ``__post_init__`` keeps only the rules that relate fields.

>>> @dataclasses.dataclass(frozen=True)
... class Section:
...   rate: float = setting(1e-3, above=0)
...   beta: float = setting(0.9, at_least=0, below=1)
...   steps: int = setting(10, at_least=1)
...   kind: str = setting("cosine", choices=("cosine", "constant"))
>>> check_fields(Section(rate=float("inf")), "schedule.")
Traceback (most recent call last):
...
ValueError: schedule.rate=inf must be a finite number > 0
>>> check_fields(Section(beta=1.0), "schedule.")
Traceback (most recent call last):
...
ValueError: schedule.beta=1.0 must be a finite number in [0, 1)
>>> check_fields(Section(steps=True), "schedule.")
Traceback (most recent call last):
...
ValueError: schedule.steps=True must be an integer >= 1
>>> check_fields(Section(kind="linear"), "schedule.")
Traceback (most recent call last):
...
ValueError: schedule.kind='linear' is unknown; allowed: cosine, constant
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

_BOUNDS = "bounds"


@dataclasses.dataclass(frozen=True)
class Bounds:
  """What a field allows beyond its type: a range (inclusive or strict ends) or choices."""

  at_least: float | None = None
  above: float | None = None
  at_most: float | None = None
  below: float | None = None
  choices: tuple | None = None

  def holds(self, value) -> bool:
    return not (
        (self.at_least is not None and value < self.at_least)
        or (self.above is not None and value <= self.above)
        or (self.at_most is not None and value > self.at_most)
        or (self.below is not None and value >= self.below)
    )

  def describe(self) -> str:
    """The range in words: ``>= 1``, ``> 0`` or ``in [0, 1)`` (empty when unbounded)."""
    low = (self.at_least, "[") if self.at_least is not None else (self.above, "(")
    high = (self.at_most, "]") if self.at_most is not None else (self.below, ")")
    if low[0] is not None and high[0] is not None:
      return f"in {low[1]}{low[0]:g}, {high[0]:g}{high[1]}"
    if low[0] is not None:
      return f"{'>=' if low[1] == '[' else '>'} {low[0]:g}"
    if high[0] is not None:
      return f"{'<=' if high[1] == ']' else '<'} {high[0]:g}"
    return ""


def setting(default: Any = dataclasses.MISSING, **bounds) -> Any:
  """A dataclass field with ``default`` (a list or dict is copied per instance) and the
  :class:`Bounds` given as keywords (``at_least``, ``above``, ``at_most``, ``below``,
  ``choices``)."""
  metadata = {_BOUNDS: Bounds(**bounds)}
  if isinstance(default, (list, dict)):
    return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def _kinds(hint) -> tuple[set, bool]:
  """The plain types an annotation allows, and whether it allows ``None``."""
  if typing.get_origin(hint) in (typing.Union, types.UnionType):
    args = typing.get_args(hint)
    return {typing.get_origin(a) or a for a in args if a is not type(None)}, type(None) in args
  return {typing.get_origin(hint) or hint}, False


def _element(hint) -> type:
  """The element type of a ``tuple[T, ...]`` annotation (``int`` for any other)."""
  if typing.get_origin(hint) is tuple:
    return typing.get_args(hint)[0]
  return int


def _requirement(kinds: set, bounds: Bounds, optional: bool, element: type = int) -> str:
  """``an integer >= 1``, ``a finite number in [0, 1)``, ``true or false``, ... ."""
  span = bounds.describe()
  if tuple in kinds:
    elements = {float: "finite numbers", str: "strings"}.get(element, "integers")
    text = f"a list of {elements} {span}".rstrip()
  elif int in kinds and float not in kinds:
    text = f"an integer {span}".rstrip()
  elif float in kinds:
    text = f"a finite number {span}".rstrip()
  elif bool in kinds:
    text = "true or false"
  elif dict in kinds:
    text = "a mapping"
  else:
    text = "a string"
  return text + (" or null" if optional else "")


def _fits(value, kinds: set, bounds: Bounds, element: type = int) -> bool:
  if isinstance(value, bool):
    return bool in kinds
  if isinstance(value, int) and (int in kinds or float in kinds):
    return bounds.holds(value)
  if isinstance(value, float) and float in kinds:
    return math.isfinite(value) and bounds.holds(value)
  if isinstance(value, tuple) and tuple in kinds:
    return all(type(v) in (int, element) and _fits(v, {element}, bounds) for v in value)
  return type(value) in kinds and not kinds & {int, float, tuple}


def check_fields(section, prefix: str) -> None:
  """Checks every field of the dataclass instance ``section`` against its annotation and
  declared :class:`Bounds`; raises a one-line ``ValueError`` naming ``prefix + name``."""
  hints = typing.get_type_hints(type(section))
  for field in dataclasses.fields(section):
    value = getattr(section, field.name)
    bounds = field.metadata.get(_BOUNDS, Bounds())
    kinds, optional = _kinds(hints[field.name])
    element = _element(hints[field.name])
    shown = list(value) if isinstance(value, tuple) else value  # as the user writes it
    key = f"{prefix}{field.name}={shown!r}"
    if value is None and optional:
      continue
    if bounds.choices is not None:
      if value not in bounds.choices:
        shown = ", ".join(str(c) for c in bounds.choices)
        raise ValueError(f"{key} is unknown; allowed: {shown}")
    elif not _fits(value, kinds, bounds, element):
      raise ValueError(f"{key} must be {_requirement(kinds, bounds, optional, element)}")


def coerce(hint, value, key: str):
  """A float field takes an int or a string such as ``1e-3`` (YAML 1.1 reads it as text), and
  so does every entry of a list of floats; any other value passes as it is, for
  :func:`check_fields` to judge."""
  kinds, _ = _kinds(hint)
  if tuple in kinds and _element(hint) is float and isinstance(value, (list, tuple)):
    return tuple(coerce(float, v, key) for v in value)
  if float not in kinds or value is None or isinstance(value, bool):
    return value
  try:
    return float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{key}={value!r} is not a number") from None
