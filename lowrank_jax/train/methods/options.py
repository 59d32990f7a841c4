"""A method's own options (``optimizer.options``): typed, bounded, with defaults.

Each method's module (:mod:`lowrank_jax.train.methods`) declares its options class, whose
defaults are its :mod:`lowrank_jax.optim` factory's own (:func:`factory_default` reads them
from the factory's signature, so they are written once). The config parses
``optimizer.options`` into that class once, when it loads, so a misspelled or mistyped
option fails in one line before anything is built, and ``lowrank-jax train --print-config``
lists the options of the chosen method with their defaults.

>>> from lowrank_jax.train.methods.projected import GaLoreOptions
>>> parse_options(GaLoreOptions, {"rank": 32}).rank
32
>>> parse_options(GaLoreOptions, {"rnak": 32})
Traceback (most recent call last):
...
ValueError: unknown option optimizer.options.rnak; allowed: rank, update_proj_gap, scale, projection
>>> parse_options(GaLoreOptions, {"scale": "abc"})
Traceback (most recent call last):
...
ValueError: optimizer.options.scale='abc' is not a number
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, ClassVar
from collections.abc import Callable

from lowrank_jax.train.fields import check_fields, coerce

PREFIX = "optimizer.options."


def factory_default(factory: Callable, name: str) -> Any:
  """The default of ``factory``'s argument ``name``: an option's default is the optimizer's.

  >>> from lowrank_jax import optim
  >>> factory_default(optim.galore, "update_proj_gap")
  200
  """
  return inspect.signature(factory).parameters[name].default


class MethodOptions:
  """Checks its fields on construction; :meth:`factory_kwargs` are the factory's keywords.

  Attributes:
    periods: the names of the options that are periods in steps, which the run warns about
      when longer than itself (:mod:`lowrank_jax.train.periods`).
  """

  periods: ClassVar[tuple[str, ...]] = ()

  def __post_init__(self):
    check_fields(self, PREFIX)

  def for_run(self, schedule) -> MethodOptions:
    """The options with the defaults that depend on the run's ``schedule`` section filled in."""
    del schedule
    return self

  def factory_kwargs(self, mesh=None) -> dict[str, Any]:
    del mesh
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class NoOptions(MethodOptions):
  """A method without options of its own (the Adam family: AdamW, the factorized methods)."""


def parse_options(cls: type, values: dict, linear_fields: tuple[str, ...] = ()):
  """``values`` (``optimizer.options``) as an instance of the options class ``cls``.

  ``linear_fields`` are the ``model.linear`` keys of the method's linear kind: an option of
  that name is the model's setting given in the optimizer's place, and the error says so.

  >>> parse_options(NoOptions, {"rank": 8}, linear_fields=("rank", "alpha"))
  Traceback (most recent call last):
  ...
  ValueError: unknown option optimizer.options.rank; allowed: none: the method takes no options; did you mean model.linear.rank=8?

  Raises:
    ValueError: not a mapping, an unknown option (listing the allowed ones), a mistyped
      or out-of-range value.
  """
  if not isinstance(values, dict):
    raise ValueError(f"optimizer.options={values!r} must be a mapping")
  names = [f.name for f in dataclasses.fields(cls)]
  for key in values:
    if key not in names:
      allowed = ", ".join(names) if names else "none: the method takes no options"
      meant = f"; did you mean model.linear.{key}={values[key]!r}?" if key in linear_fields else ""
      raise ValueError(f"unknown option {PREFIX}{key}; allowed: {allowed}{meant}")
  hints = typing.get_type_hints(cls)
  return cls(**{key: coerce(hints[key], value, PREFIX + key) for key, value in values.items()})
