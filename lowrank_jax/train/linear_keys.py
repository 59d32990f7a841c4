"""Which ``model.linear`` keys each method uses, and a one-line error for any other.

A model-side method (low_rank, lora, sltrain, cola, loro, ...) trains factorized linears
of one kind, parameterized by the :class:`~lowrank_jax.models.LinearConfig` fields that kind
reads; a projected method (GaLore, Fira, APOLLO, GoLore) and the Adam family train dense
linears, which read none (GaLore's rank is ``optimizer.options.rank``). A key the method's
kind does not read would change nothing, so it is refused, naming the key meant:

>>> from lowrank_jax.train.methods import get_method
>>> method_linear(get_method("galore"), "galore", {"rank": 32})
Traceback (most recent call last):
...
ValueError: model.linear.rank=32 means nothing to optimizer.method='galore', which trains dense linears (they take no model.linear key); did you mean optimizer.options.rank=32?
>>> method_linear(get_method("low_rank"), "low_rank", {})
Traceback (most recent call last):
...
ValueError: optimizer.method='low_rank' trains 'lowrank' linears, which need model.linear.rank (a positive integer, at most the smaller side of every target linear)
>>> used_linear_fields(method_linear(get_method("sltrain"), "sltrain", {"rank": 8}))
{'kind': 'sltrain', 'rank': 8, 'alpha': 32.0, 'sparsity': 0.03}
"""

from __future__ import annotations

import dataclasses

from lowrank_jax.models import LinearConfig

PREFIX = "model.linear."

# The LinearConfig fields each built-in kind reads (lowrank_jax/models/{lowrank,lora,sltrain,
# cola}.py); a kind registered elsewhere may read any of them.
FIELDS_OF_KIND = {
    "dense": (),
    "lowrank": ("rank", "alpha"),
    "lora": ("rank", "alpha", "zero_a", "dropout"),
    "sltrain": ("rank", "alpha", "sparsity"),
    "cola": ("rank", "only_lr_act"),
}
ALL_FIELDS = tuple(f.name for f in dataclasses.fields(LinearConfig) if f.name != "kind")


def check_linear_keys(values: dict) -> None:
  """Refuses a ``model.linear`` key that no linear kind has (e.g. ``alhpa``)."""
  allowed = ("kind", *ALL_FIELDS)
  for key in values:
    if key not in allowed:
      raise ValueError(
          f"unknown config key {PREFIX + key!r}; allowed: "
          f"{', '.join(PREFIX + name for name in sorted(allowed))}"
      )


def method_linear(method, name: str, values: dict) -> LinearConfig:
  """The linear config of ``method`` (named ``name``) from ``model.linear`` ``values``.

  Raises:
    ValueError: another kind than the method's, a key its kind does not read (naming
      ``optimizer.options.<key>`` when the method takes that option), a missing rank, a
      bad value (named ``model.linear.<key>``).
  """
  kind = method.linear_kind
  chosen = values.get("kind", kind)
  if chosen != kind:
    raise ValueError(
        f"model.linear.kind={chosen!r} does not fit optimizer.method={name!r}, which trains "
        f"{kind!r} linears"
    )
  used = FIELDS_OF_KIND.get(kind, ALL_FIELDS)
  for key, value in values.items():
    if key != "kind" and key not in used:
      takes = (
          f"they take {', '.join(PREFIX + field for field in used)}"
          if used
          else "they take no model.linear key"
      )
      meant = (
          f"did you mean optimizer.options.{key}={value!r}?"
          if key in method.option_names
          else "remove it"
      )
      raise ValueError(
          f"{PREFIX}{key}={value!r} means nothing to optimizer.method={name!r}, which trains "
          f"{kind} linears ({takes}); {meant}"
      )
  if "rank" in used and values.get("rank") is None:
    raise ValueError(
        f"optimizer.method={name!r} trains {kind!r} linears, which need {PREFIX}rank (a "
        "positive integer, at most the smaller side of every target linear)"
    )
  try:
    return LinearConfig(**{**values, "kind": kind})
  except ValueError as error:  # LinearConfig names the field alone: "alpha=-1.0 must be ..."
    raise ValueError(f"{PREFIX}{error}") from None


def used_linear_fields(linear: LinearConfig) -> dict:
  """``{field: value}`` of the fields ``linear``'s kind reads, its kind first (``{}`` for
  dense linears): what ``--print-config`` lists under ``model.linear``."""
  used = FIELDS_OF_KIND.get(linear.kind, ALL_FIELDS)
  if not used:
    return {}
  return {"kind": linear.kind, **{field: getattr(linear, field) for field in used}}
