"""Argument checks shared by the optimizer factories.

Every factory validates its static arguments when it is called (never inside
``jit``), and raises a one-line ``ValueError`` that names the argument, the bad
value and what is allowed. Hyperparameters that ``optax.inject_hyperparams``
may turn into arrays (``b1``, ``scale``, ...) are only checked when they are
plain Python numbers.

>>> check_positive_int("rank", 4)
4
>>> check_positive_int("rank", 0)
Traceback (most recent call last):
...
ValueError: rank must be a positive Python int, got 0.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection


def check_positive_int(name: str, value) -> int:
  """Returns ``value`` if it is a Python int >= 1 (a static shape argument)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    hint = ""
    if hasattr(value, "shape"):
      hint = " (with optax.inject_hyperparams, list it in static_args)"
    raise ValueError(f"{name} must be a positive Python int, got {value!r}{hint}.")
  return int(value)


def check_choice(name: str, value, allowed: Collection[str]) -> str:
  """Returns ``value`` if it is one of ``allowed``."""
  if value not in allowed:
    raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}.")
  return value


def check_range(
    name: str, value, low: float, high: float | None = None, *, include_high: bool = False
) -> None:
  """Checks ``low <= value`` (and ``value < high`` or ``<=``) for Python numbers.

  Arrays (e.g. hyperparameters injected by ``optax.inject_hyperparams``) pass
  unchecked: their value is not known when the transform is built.
  """
  if not isinstance(value, numbers.Real) or isinstance(value, bool):
    return
  above = value > high or (value == high and not include_high) if high is not None else False
  if value < low or above:
    upper = "" if high is None else (f", <= {high}" if include_high else f", < {high}")
    raise ValueError(f"{name} must be >= {low}{upper}, got {value!r}.")
