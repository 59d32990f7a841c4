"""Old module names that keep working, with a :class:`DeprecationWarning`, after a rename.

A package whose module was renamed sets ``__getattr__ = renamed_modules(__name__, {old:
new})``: ``package.old`` (and ``from package import old``) then warns once per access and
returns the module under its new name, so code written against the old name runs unchanged
while it is updated (PEP 562, module ``__getattr__``).

>>> import warnings
>>> __getattr__ = renamed_modules("collections", {"abstract": "abc"})
>>> with warnings.catch_warnings(record=True) as caught:
...   warnings.simplefilter("always")
...   module = __getattr__("abstract")
>>> module.__name__, caught[0].category.__name__
('collections.abc', 'DeprecationWarning')
>>> __getattr__("unknown")
Traceback (most recent call last):
...
AttributeError: module 'collections' has no attribute 'unknown'
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from types import ModuleType


def renamed_modules(package: str, renames: dict[str, str]) -> Callable[[str], ModuleType]:
  """A module ``__getattr__`` for ``package`` that maps each old name of ``renames`` to its
  new module, warning that the old name is deprecated."""

  def __getattr__(name: str) -> ModuleType:
    if name not in renames:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    new = f"{package}.{renames[name]}"
    warnings.warn(
        f"{package}.{name} was renamed {new}; import that instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return importlib.import_module(new)

  return __getattr__
