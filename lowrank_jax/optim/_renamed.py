"""Old public names that still resolve, with a ``DeprecationWarning`` (PEP 562).

The optimizer states follow optax's naming, ``ScaleBy<Method>State`` for the state of
``scale_by_<method>``; the names they had before keep working for a while. A module lists its
old names and serves them from a module-level ``__getattr__``:

>>> import warnings
>>> __getattr__ = renamed_attributes(__name__, {"OldState": int})
>>> with warnings.catch_warnings(record=True) as caught:
...   warnings.simplefilter("always")
...   __getattr__("OldState") is int, caught[0].category.__name__
(True, 'DeprecationWarning')
>>> __getattr__("Missing")
Traceback (most recent call last):
AttributeError: module 'lowrank_jax.optim._renamed' has no attribute 'Missing'
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any


def renamed_attributes(module: str, renamed: dict[str, Any]) -> Callable[[str], Any]:
  """A module ``__getattr__`` serving ``renamed`` (old name -> new object) with a warning."""

  def __getattr__(name: str) -> Any:
    if name not in renamed:
      raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new = renamed[name]
    warnings.warn(
        f"{module}.{name} is deprecated; use {new.__name__}.", DeprecationWarning, stacklevel=2
    )
    return new

  return __getattr__
