"""A grid file checked like a train config, before anything runs: YAML errors, unknown and
missing keys and mistyped values are each one line naming the file and the key.

>>> from lowrank_jax.benchmark.grid import Grid
>>> check_grid_values({"out_dir": "runs/g", "sizes": "nano", "methods": ["galore"]}, Grid, "g.yaml")
Traceback (most recent call last):
...
ValueError: grid file 'g.yaml': sizes='nano' must be a list of strings
>>> check_grid_values({"sizes": ["nano"], "methods": ["galore"]}, Grid, "g.yaml")
Traceback (most recent call last):
...
ValueError: grid file 'g.yaml' misses the required key 'out_dir'
"""

from __future__ import annotations

import dataclasses
import typing

from lowrank_jax.train.config_sources import read_yaml_file

WHAT = "grid file"
# The values of the grid's per-method mappings ({method: value}); a mapping not listed here
# is checked to be one.
METHOD_VALUES = {
    "seed_counts": int,
    "method_overrides": tuple[str, ...],
    "learning_rates": tuple[float, ...],
    "dense_learning_rates": tuple[float, ...],
}
_NAMES = {str: "a string", int: "an integer", float: "a number"}


def _fits(hint, value) -> bool:
  if hint is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if typing.get_origin(hint) is tuple:
    element = typing.get_args(hint)[0]
    return isinstance(value, list) and all(_fits(element, v) for v in value)
  if (typing.get_origin(hint) or hint) is dict:
    return isinstance(value, dict)
  return isinstance(value, hint)


def _requirement(hint) -> str:
  if typing.get_origin(hint) is tuple:
    element = typing.get_args(hint)[0]
    return f"a list of {_NAMES[element].split(' ', 1)[1]}s"
  if (typing.get_origin(hint) or hint) is dict:
    return "a mapping"
  return _NAMES.get(hint, hint.__name__)


def check_grid_values(values: dict, cls: type, path: str) -> None:
  """Checks the keys of a grid file's ``values`` against the fields of the dataclass ``cls``.

  Raises:
    ValueError: an unknown key, a missing required one, a value of another type.
  """
  fields = {field.name: field for field in dataclasses.fields(cls)}
  hints = typing.get_type_hints(cls)
  for key in values:
    if key not in fields:
      raise ValueError(f"unknown grid key {key!r} in {path}; allowed: {sorted(fields)}")
  for name, field in fields.items():
    required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    if required and name not in values:
      raise ValueError(f"{WHAT} {path!r} misses the required key {name!r}")
  for key, value in values.items():
    if not _fits(hints[key], value):
      raise ValueError(f"{WHAT} {path!r}: {key}={value!r} must be {_requirement(hints[key])}")
    if key in METHOD_VALUES:
      for method, entry in value.items():
        if not _fits(METHOD_VALUES[key], entry):
          raise ValueError(
              f"{WHAT} {path!r}: {key}[{method!r}]={entry!r} must be "
              f"{_requirement(METHOD_VALUES[key])}"
          )


def read_grid_file(path: str, cls: type) -> dict:
  """The checked values of the grid file ``path`` for the grid dataclass ``cls``.

  A file with ``extends: <grid file>`` is that grid with the file's keys in place of its own
  (each key replaced whole), so a protocol's variant states only what differs.
  """
  values = _with_extended(path)
  check_grid_values(values, cls, path)
  return values


def _with_extended(path: str, extending: tuple[str, ...] = ()) -> dict:
  """The keys of the grid file ``path`` over those of the grid it ``extends``."""
  if path in extending:
    raise ValueError(f"{WHAT} {path!r} extends itself through {list(extending)}")
  values = read_yaml_file(path, WHAT)
  base = values.pop("extends", None)
  if base is None:
    return values
  if not isinstance(base, str):
    raise ValueError(f"{WHAT} {path!r}: extends={base!r} must be a grid file's path")
  return {**_with_extended(base, (*extending, path)), **values}
