r"""The projected methods: GaLore, Fira, APOLLO, APOLLO-Mini and GoLore.

Each keeps the target linears dense and runs Adam in a rank-``r`` projection of their
gradients, refreshed every ``update_proj_gap`` steps (the ``refresh`` event); the embedding,
lm_head and norms get plain Adam (arXiv 2505.22922, experimental protocol). Their options'
defaults are their :mod:`lowrank_jax.optim` factories'.

Their memory, per target matrix ``m x n`` at rank ``r`` (arXiv 2505.22922, memory
accounting): the dense weights, and the projector with Adam's moments of the projected
gradient::

    GaLore / Fira / GoLore    mn    min(m, n) r + 2 r max(m, n)
    APOLLO                    mn    2 r max(m, n)          (APOLLO-Mini: r = 1)

>>> GaLoreOptions().rank, ApolloOptions().rank, GoLoreOptions().scale
(128, 256, 1.0)
"""

from __future__ import annotations

import dataclasses
from typing import Any
from collections.abc import Callable

import jax.numpy as jnp
import optax

from lowrank_jax import optim
from lowrank_jax.optim.projection_options import check_projection_options
from lowrank_jax.train.fields import setting
from lowrank_jax.train.methods.method import (
    Entries,
    MemoryFormula,
    Method,
    ResolvedOptimizer,
    target_mask,
)
from lowrank_jax.train.methods.options import MethodOptions, factory_default
from lowrank_jax.train.update_records import Record, rate


def projection_options(values: dict, mesh=None) -> optim.ProjectionOptions:
  """``optimizer.options.projection`` (a YAML mapping) as :class:`ProjectionOptions`.

  ``refresh_axes`` spreads the projector refreshes over those axes of the run's ``mesh``.

  >>> projection_options({"refresh": "randomized", "refresh_axes": ["fsdp"]}).refresh_axes
  ('fsdp',)
  """
  fields = optim.ProjectionOptions._fields
  unknown = sorted(set(values) - set(fields) - {"refresh_mesh"})
  if unknown:
    raise ValueError(
        f"optimizer.options.projection has unknown key {unknown[0]!r}; allowed: "
        f"{sorted(set(fields) - {'refresh_mesh', 'dimension_numbers'})}"
    )
  values = dict(values)
  if values.get("refresh_axes") is not None:
    values["refresh_axes"] = tuple(values["refresh_axes"])
    values["refresh_mesh"] = mesh
  return check_projection_options(optim.ProjectionOptions(**values))


class _ProjectedOptions(MethodOptions):
  """Options with a ``projection`` mapping, passed as the factory's ``options``."""

  periods = ("update_proj_gap",)

  def __post_init__(self):
    super().__post_init__()
    projection_options(self.projection)

  def factory_kwargs(self, mesh=None) -> dict[str, Any]:
    kwargs = dataclasses.asdict(self)
    projection = kwargs.pop("projection")
    if projection:
      kwargs["options"] = projection_options(projection, mesh)
    return kwargs


@dataclasses.dataclass(frozen=True)
class GaLoreOptions(_ProjectedOptions):
  """GaLore (arXiv 2505.22922, experimental protocol): Adam in a rank-``rank`` projection of
  each target linear's gradient.

  Attributes:
    rank: rank of the projection (at most the smaller side of every target linear).
    update_proj_gap: steps between refreshes of the projector.
    scale: ``alpha``, multiplies the projected-back update.
    projection: advanced options, the fields of :class:`lowrank_jax.optim.ProjectionOptions`
      (e.g. ``{refresh: randomized, refresh_axes: [fsdp]}``).
  """

  rank: int = setting(factory_default(optim.galore, "rank"), at_least=1)
  update_proj_gap: int = setting(factory_default(optim.galore, "update_proj_gap"), at_least=1)
  scale: float = setting(factory_default(optim.galore, "scale"), at_least=0)
  projection: dict = setting({})


@dataclasses.dataclass(frozen=True)
class FiraOptions(GaLoreOptions):
  """Fira: GaLore plus the scaled residual of the gradient outside the projection; the
  other options are GaLore's.

  Attributes:
    gamma: the norm-growth limiter's largest growth of the residual's norm per step.
  """

  gamma: float = setting(factory_default(optim.fira, "gamma"), at_least=1)


@dataclasses.dataclass(frozen=True)
class ApolloOptions(GaLoreOptions):
  """APOLLO: a random projection estimates channel-wise (or tensor-wise) update scales; the
  other options are GaLore's.

  Attributes:
    scale: the update is multiplied by ``sqrt(scale)``.
    scale_type: ``channel`` (one ratio per row or column) or ``tensor``.
    scale_front: apply the scale before the norm-growth limiter instead of after.
    gamma: the norm-growth limiter's largest growth per step (``null``: no limiter).
    store_projector: keep the random projector in the state instead of regenerating it.
  """

  rank: int = setting(factory_default(optim.apollo, "rank"), at_least=1)
  scale: float = setting(factory_default(optim.apollo, "scale"), at_least=0)
  scale_type: str = setting(
      factory_default(optim.apollo, "scale_type"), choices=("channel", "tensor")
  )
  scale_front: bool = factory_default(optim.apollo, "scale_front")
  gamma: float | None = setting(factory_default(optim.apollo, "gamma"), at_least=1)
  store_projector: bool = factory_default(optim.apollo, "store_projector")


@dataclasses.dataclass(frozen=True)
class ApolloMiniOptions(_ProjectedOptions):
  """APOLLO-Mini: APOLLO of rank 1 with one scale per tensor.

  Attributes:
    update_proj_gap: steps between refreshes of the random projector.
    scale: the update is multiplied by ``sqrt(scale)``.
    scale_front: apply the scale before the norm-growth limiter instead of after.
    gamma: the norm-growth limiter's largest growth per step (``null``: no limiter).
    projection: advanced options, the fields of :class:`lowrank_jax.optim.ProjectionOptions`.
  """

  update_proj_gap: int = setting(factory_default(optim.apollo_mini, "update_proj_gap"), at_least=1)
  scale: float = setting(factory_default(optim.apollo_mini, "scale"), at_least=0)
  scale_front: bool = factory_default(optim.apollo_mini, "scale_front")
  gamma: float | None = setting(factory_default(optim.apollo_mini, "gamma"), at_least=1)
  projection: dict = setting({})


@dataclasses.dataclass(frozen=True)
class GoLoreOptions(GaLoreOptions):
  """GoLore: GaLore whose projectors turn random orthonormal late in training; the other
  options are GaLore's.

  Attributes:
    scale: ``alpha``, multiplies the projected-back update (the reference's 1).
    total_steps: the length of training ``rand_ratio`` is a fraction of (``null``: the
      run's ``schedule.total_steps``).
    rand_ratio: fraction of the training before the switch to random projectors.
    random_from_step: the step of the switch itself (overrides the two above).
  """

  scale: float = setting(factory_default(optim.golore, "scale"), at_least=0)
  total_steps: int | None = setting(factory_default(optim.golore, "total_steps"), at_least=1)
  rand_ratio: float = setting(factory_default(optim.golore, "rand_ratio"), at_least=0)
  random_from_step: int | None = setting(
      factory_default(optim.golore, "random_from_step"), at_least=0
  )

  def for_run(self, schedule) -> GoLoreOptions:
    if self.total_steps is not None:
      return self
    return dataclasses.replace(self, total_steps=schedule.total_steps)


def projected_record(schedule: optax.Schedule, section: ResolvedOptimizer) -> Record:
  """What each update applies: the schedule, and the refreshes of the projectors."""
  gap = section.options.update_proj_gap
  return lambda count: {
      "lr": rate(schedule(count)),
      "refresh": (jnp.asarray(count) % gap == 0).astype(jnp.int32),
  }


def galore_memory(m, n, r, delta) -> Entries:
  del delta
  return Entries(m * n, min(m, n) * r + 2 * r * max(m, n))


def apollo_memory(m, n, r, delta) -> Entries:
  del delta
  return Entries(m * n, 2 * r * max(m, n))


def apollo_mini_memory(m, n, r, delta) -> Entries:
  del r
  return apollo_memory(m, n, 1, delta)


def _projected(factory: Callable, options: type, memory: MemoryFormula) -> Method:
  """A projected method: ``factory`` projects the target linears, with ``options``."""

  def build(schedule, section: ResolvedOptimizer, mesh=None) -> optax.GradientTransformation:
    return factory(
        schedule,
        **section.adam_hyperparameters(),
        projection_mask=target_mask,
        **section.options.factory_kwargs(mesh),
    )

  return Method(build, projected_record, memory, options=options, factory=factory)


METHODS = {
    "galore": _projected(optim.galore, GaLoreOptions, galore_memory),
    "fira": _projected(optim.fira, FiraOptions, galore_memory),
    "golore": _projected(optim.golore, GoLoreOptions, galore_memory),
    "apollo": _projected(optim.apollo, ApolloOptions, apollo_memory),
    "apollo_mini": _projected(optim.apollo_mini, ApolloMiniOptions, apollo_mini_memory),
}
