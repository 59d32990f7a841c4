"""The resolved config as YAML, every key commented with its meaning (``--print-config``).

The meanings are the ``Attributes:`` sections of the config's dataclasses (and of the
chosen method's options class), so the printed text and the documentation cannot differ.

>>> from lowrank_jax.train.config import load_config
>>> text = annotated_yaml(load_config(overrides=["optimizer.method=galore"]))
>>> print(next(line for line in text.splitlines() if line.strip().startswith("rank:")))
    rank: 128  # rank of the projection (at most the smaller side of every target linear).
>>> load_config(base=yaml.safe_load(text)).optimizer.options["rank"]
128
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

import yaml

from lowrank_jax.models import LinearConfig
from lowrank_jax.train.config import TrainConfig, resolved_dict

_ENTRY = re.compile(r"^(\s*)([\w, ]+):\s*(.*)$")


def attribute_docs(cls: type) -> dict[str, str]:
  """``{attribute: meaning}`` from the ``Attributes:`` sections of the docstrings of ``cls``
  and its bases (an entry ``a, b: text`` documents both; continuation lines are joined)."""
  docs = {}
  for klass in reversed(cls.__mro__):
    docs.update(_own_attribute_docs(klass))
  return docs


def _own_attribute_docs(cls: type) -> dict[str, str]:
  lines = (cls.__doc__ and inspect.cleandoc(cls.__doc__) or "").splitlines()
  if "Attributes:" not in lines:
    return {}
  docs, names, indent = {}, [], None
  for line in lines[lines.index("Attributes:") + 1 :]:
    if not line.strip():
      continue
    depth = len(line) - len(line.lstrip())
    entry = _ENTRY.match(line)
    if indent is None:
      indent = depth
    if depth < indent:
      break
    if depth == indent and entry:
      names = [name.strip() for name in entry.group(2).split(",")]
      for name in names:
        docs[name] = entry.group(3)
    elif depth > indent:
      for name in names:
        docs[name] += " " + line.strip()
  return docs


def key_meanings(config: TrainConfig) -> dict[str, str]:
  """``{dotted key: meaning}`` of every key of ``config``, the method's options and the
  linear's fields included."""
  meanings = {}

  def walk(cls: type, prefix: str) -> None:
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    for field in dataclasses.fields(cls):
      key = prefix + field.name
      if dataclasses.is_dataclass(hints[field.name]):
        section = hints[field.name]
        meanings[key] = (inspect.getdoc(section) or "").splitlines()[0]
        walk(section, key + ".")
      else:
        meanings[key] = docs.get(field.name, "")

  walk(TrainConfig, "")
  for name, meaning in attribute_docs(type(config.optimizer.method_options)).items():
    meanings[f"optimizer.options.{name}"] = meaning
  for name, meaning in attribute_docs(LinearConfig).items():
    meanings[f"model.linear.{name}"] = meaning
  return meanings


def annotated_yaml(config: TrainConfig) -> str:
  """``config`` as YAML that :func:`load_config` reads back, with every option of its
  method (defaults included), each key followed by ``# meaning``."""
  values = resolved_dict(config)
  meanings = key_meanings(config)
  lines, path = ["# lowrank-jax train: the whole config; pass an edited copy with --config"], []
  for line in yaml.safe_dump(values, sort_keys=False, width=1000).splitlines():
    entry = _ENTRY.match(line) if not line.lstrip().startswith("- ") else None
    if entry is None:
      lines.append(line)
      continue
    depth = len(entry.group(1)) // 2
    path[depth:] = [entry.group(2)]
    meaning = meanings.get(".".join(path))
    lines.append(f"{line}  # {meaning}" if meaning else line)
  return "\n".join(lines) + "\n"
