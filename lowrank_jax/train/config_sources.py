"""Where config values come from: YAML files and dotted ``key=value`` overrides.

Each source becomes a nested mapping of config keys, laid over the previous ones with
:func:`merge`; :func:`lowrank_jax.train.config.load_config` then builds and checks the
:class:`~lowrank_jax.train.config.TrainConfig`. Every malformed source is one line naming the
file (and its line) or the override.

>>> merge({"optimizer": {"b1": 0.9, "b2": 0.999}}, parse_override("optimizer.b2=0.95"))
{'optimizer': {'b1': 0.9, 'b2': 0.95}}
>>> parse_override("optimizer")
Traceback (most recent call last):
...
ValueError: override 'optimizer' is not of the form key=value
"""

from __future__ import annotations

import yaml


def merge(base: dict, update: dict) -> dict:
  """``update`` laid over ``base``: nested mappings merge key by key, other values replace."""
  merged = dict(base)
  for key, value in update.items():
    if isinstance(value, dict) and isinstance(merged.get(key), dict):
      merged[key] = merge(merged[key], value)
    else:
      merged[key] = value
  return merged


def _yaml_problem(error: yaml.YAMLError) -> str:
  """``line L, column C: what is wrong`` of a YAML syntax error."""
  problem = getattr(error, "problem", None) or str(error).split("\n")[0]
  if "'\\t'" in problem:
    problem = "a tab, where YAML allows only spaces (indent with spaces)"
  mark = getattr(error, "problem_mark", None)
  where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
  return where + problem


def read_yaml_file(path: str, what: str = "config file") -> dict:
  """The mapping of config keys in the YAML file ``path`` (a ``what``, in the errors).

  Raises:
    ValueError: one line naming the file (and the line) when it is missing, unreadable,
      binary or not UTF-8, not valid YAML, or holds something other than a mapping.
  """
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    raise ValueError(f"{what} {path!r} does not exist") from None
  except OSError as error:
    raise ValueError(f"{what} {path!r} cannot be read: {error.strerror}") from None
  if b"\0" in raw:
    line = raw[: raw.index(b"\0")].count(b"\n") + 1
    raise ValueError(f"{what} {path!r} is binary, not YAML text (a NUL byte on line {line})")
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as error:
    line = raw[: error.start].count(b"\n") + 1
    raise ValueError(
        f"{what} {path!r}, line {line}: byte 0x{raw[error.start]:02x} is not UTF-8; "
        "save the file as UTF-8 text"
    ) from None
  try:
    values = yaml.safe_load(text)
  except yaml.YAMLError as error:
    raise ValueError(f"{what} {path!r}, {_yaml_problem(error)}") from None
  if values is None:
    return {}
  if not isinstance(values, dict):
    raise ValueError(
        f"{what} {path!r} must hold a mapping of keys (e.g. 'optimizer: ...'), "
        f"not a {type(values).__name__}"
    )
  return values


def parse_override(override: str) -> dict:
  """``"a.b=1"`` -> ``{"a": {"b": 1}}`` (the value parsed as YAML)."""
  key, sep, raw = override.partition("=")
  parts = key.split(".")
  if not sep or not all(part.strip() for part in parts):
    raise ValueError(f"override {override!r} is not of the form key=value")
  try:
    value = yaml.safe_load(raw) if raw else ""
  except yaml.YAMLError as error:
    raise ValueError(f"override {override!r} has a bad value: {_yaml_problem(error)}") from None
  for part in reversed(parts):
    value = {part: value}
  return value
