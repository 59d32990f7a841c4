"""The base of every config section: its fields' declared bounds, then its cross-field rules.

>>> import dataclasses
>>> from lowrank_jax.train.fields import setting
>>> @dataclasses.dataclass(frozen=True)
... class Steps(Section):
...   key = "steps"
...   total: int = setting(10, at_least=1)
>>> Steps(total=0)
Traceback (most recent call last):
...
ValueError: steps.total=0 must be an integer >= 1
"""

from __future__ import annotations

from typing import ClassVar

from lowrank_jax.train.fields import check_fields


class Section:
  """A config section: checks its fields' declared bounds (named ``key.field``), then the
  rules that relate several fields (:meth:`_check_together`)."""

  key: ClassVar[str]

  def __post_init__(self):
    check_fields(self, f"{self.key}." if self.key else "")
    self._check_together()

  def _check_together(self) -> None:
    pass
