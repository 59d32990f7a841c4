"""The training methods, one module per family, and their registry.

Each family's module holds all the trainer knows of its methods (:class:`Method`): the
options with their defaults (the :mod:`lowrank_jax.optim` factory's), how the transform and
the model's linears are built, what each update records and the memory formula. Adding a
method touches its optax file and its family's module, whose ``METHODS`` this registry
gathers:

- :mod:`~lowrank_jax.train.methods.adam_family`: full rank, Low-Rank, LoRA, SLTrain, CoLA
  and the ``*_restarts``;
- :mod:`~lowrank_jax.train.methods.projected`: GaLore, Fira, GoLore, APOLLO(-Mini);
- :mod:`~lowrank_jax.train.methods.spam`: SPAM, Stable-SPAM;
- :mod:`~lowrank_jax.train.methods.relora`: ReLoRA;
- :mod:`~lowrank_jax.train.methods.loro`: LoRO;
- :mod:`~lowrank_jax.train.methods.full_rank_light`: Muon, Adafactor, Lion;
- :mod:`~lowrank_jax.train.methods.registration`: methods defined outside the package
  (:func:`register_method`).

>>> get_method("galore").options().rank
128
>>> known_method("galore"), known_method("galor")
(True, False)
>>> get_method("galor")
Traceback (most recent call last):
...
ValueError: optimizer.method='galor' is unknown; allowed: ['adafactor', 'adamw', ...]
"""

from __future__ import annotations

import optax

from lowrank_jax.train.methods import adam_family, full_rank_light, loro, projected, relora, spam
from lowrank_jax.train.methods.method import (
    PAPER_RESTART_EVERY,
    TARGET_LINEARS,
    Method,
    ResolvedOptimizer,
    target_mask,
)
from lowrank_jax.train.methods.registration import (
    load_entry_point,
    register_method,
    unregister_method,
)

METHODS: dict[str, Method] = {
    **adam_family.METHODS,
    **projected.METHODS,
    **spam.METHODS,
    **relora.METHODS,
    **loro.METHODS,
    **full_rank_light.METHODS,
}

__all__ = [
    "METHODS",
    "PAPER_RESTART_EVERY",
    "TARGET_LINEARS",
    "Method",
    "ResolvedOptimizer",
    "build_optimizer",
    "get_method",
    "known_method",
    "register_method",
    "target_mask",
    "unregister_method",
]


def known_method(name: str) -> bool:
  """Whether ``name`` is a method: built in, registered, or registered by loading the
  ``lowrank_jax.methods`` entry point of that name (which this loads, so every check of a
  name, the grid's and the memory report's too, finds an installed package's method)."""
  if name not in METHODS:
    load_entry_point(name)
  return name in METHODS


def get_method(name: str) -> Method:
  """The method ``name``, as :func:`known_method` finds it."""
  if not known_method(name):
    raise ValueError(f"optimizer.method={name!r} is unknown; allowed: {sorted(METHODS)}")
  return METHODS[name]


def build_optimizer(
    section: ResolvedOptimizer, schedule: optax.Schedule, mesh=None
) -> optax.GradientTransformation:
  """The transform of ``section.method``, with global-norm clipping first if configured;
  ``mesh`` is the run's (a projected method may spread its refreshes over it)."""
  tx = get_method(section.method).build(schedule, section, mesh)
  if section.clip_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(section.clip_norm), tx)
  return tx
