"""Each training method's own options (``optimizer.options``): typed, bounded, with defaults.

A method of :data:`lowrank_jax.train.methods.METHODS` names one of these classes; the
config checks ``optimizer.options`` against it when it loads, so a misspelled or mistyped
option fails in one line before anything is built, and ``lowrank-jax train
--print-config`` lists the options of the chosen method with their defaults. The defaults
are those of the :mod:`lowrank_jax.optim` factory the method builds.

>>> parse_options(GaLoreOptions, {"rank": 32}).rank
32
>>> parse_options(GaLoreOptions, {"rnak": 32})
Traceback (most recent call last):
...
ValueError: unknown option optimizer.options.rnak; allowed: rank, update_proj_gap, scale, projection
>>> parse_options(GaLoreOptions, {"scale": "abc"})
Traceback (most recent call last):
...
ValueError: optimizer.options.scale='abc' is not a number
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from lowrank_jax import optim
from lowrank_jax.optim.projection_options import check_projection_options
from lowrank_jax.train import update_records
from lowrank_jax.train.fields import check_fields, coerce, setting

PREFIX = "optimizer.options."


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


class _Options:
  """Checks its fields on construction; :meth:`factory_kwargs` are the factory's keywords."""

  def __post_init__(self):
    check_fields(self, PREFIX)

  def for_run(self, schedule) -> _Options:
    """The options with the defaults that depend on the run's ``schedule`` section filled in."""
    del schedule
    return self

  def factory_kwargs(self, mesh=None) -> dict[str, Any]:
    del mesh
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class NoOptions(_Options):
  """A method without options of its own (the Adam family: AdamW, the factorized methods)."""


class _ProjectedOptions(_Options):
  """Options with a ``projection`` mapping, passed as the factory's ``options``."""

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
  """GaLore (arXiv 2505.22922, experimental protocol): Adam in a rank-``rank`` projection of each target
  linear's gradient.

  Attributes:
    rank: rank of the projection (at most the smaller side of every target linear).
    update_proj_gap: steps between refreshes of the projector.
    scale: ``alpha``, multiplies the projected-back update.
    projection: advanced options, the fields of :class:`lowrank_jax.optim.ProjectionOptions`
      (e.g. ``{refresh: randomized, refresh_axes: [fsdp]}``).
  """

  rank: int = setting(128, at_least=1)
  update_proj_gap: int = setting(200, at_least=1)
  scale: float = setting(0.25, at_least=0)
  projection: dict = setting({})


@dataclasses.dataclass(frozen=True)
class FiraOptions(GaLoreOptions):
  """Fira: GaLore plus the scaled residual of the gradient outside the projection; the
  other options are GaLore's.

  Attributes:
    gamma: the norm-growth limiter's largest growth of the residual's norm per step.
  """

  gamma: float = setting(1.01, at_least=1)


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

  rank: int = setting(256, at_least=1)
  scale: float = setting(1.0, at_least=0)
  scale_type: str = setting("channel", choices=("channel", "tensor"))
  scale_front: bool = False
  gamma: float | None = setting(1.01, at_least=1)
  store_projector: bool = False


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

  update_proj_gap: int = setting(200, at_least=1)
  scale: float = setting(128.0, at_least=0)
  scale_front: bool = False
  gamma: float | None = setting(1.01, at_least=1)
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

  scale: float = setting(1.0, at_least=0)
  total_steps: int | None = setting(None, at_least=1)
  rand_ratio: float = setting(0.8, at_least=0)
  random_from_step: int | None = setting(None, at_least=0)

  def for_run(self, schedule) -> GoLoreOptions:
    if self.total_steps is not None:
      return self
    return dataclasses.replace(self, total_steps=schedule.total_steps)


@dataclasses.dataclass(frozen=True)
class SpamOptions(_Options):
  """SPAM: Adam with spike clipping and periodic momentum resets.

  Attributes:
    spike_threshold: a gradient entry whose square exceeds this many times the second
      moment is clipped (0: no clipping).
    reset_interval: steps between momentum resets.
    warmup_steps: steps of the cosine re-warmup of the step size after each reset.
    spike_grace_steps: steps at the start and after each reset without spike clipping.
  """

  spike_threshold: float = setting(5000.0, at_least=0)
  reset_interval: int = setting(500, at_least=1)
  warmup_steps: int = setting(50, at_least=0)
  spike_grace_steps: int = setting(20, at_least=2)


@dataclasses.dataclass(frozen=True)
class StableSpamOptions(_Options):
  """Stable-SPAM: adaptive spike clipping and gradient-norm scaling, periodic resets.

  Attributes:
    gamma1: decay of the EMA of the gradient norm (AdaGN).
    gamma2: decay of the EMA of the squared gradient norm (AdaGN).
    theta: decay of the EMA of the largest gradient entry, the adaptive clip level.
    reset_interval: steps between momentum resets.
    total_steps: length of the cosine decay of Adam's first-moment decay (``null``: none).
    eta_min: the factor that decay reaches at its end.
    authors_resets: reset as the authors' code does instead of as the paper describes.
  """

  gamma1: float = setting(0.7, at_least=0, below=1)
  gamma2: float = setting(0.9, at_least=0, below=1)
  theta: float = setting(0.999, at_least=0, below=1)
  reset_interval: int = setting(1000, at_least=1)
  total_steps: int | None = setting(None, at_least=1)
  eta_min: float = setting(0.5, at_least=0, at_most=1)
  authors_resets: bool = False


@dataclasses.dataclass(frozen=True)
class LoroOptions(_Options):
  """LoRO: AdamW on the factors with an exact Riemannian step every ``every`` steps.

  Attributes:
    every: the period K of the manifold steps, each followed by an Adam restart.
    lazy_scale: multiplies the factors' learning rate on the lazy (AdamW) steps (the
      reference's ``--loro_lr_scaler``).
    restart_warmup_steps: updates over which the rate re-warms after each restart.
    schedule: ``rewarm`` (the base schedule, re-warmed linearly from 0 after each exact
      step) or ``loro_main`` (LORO-main's own curve, :mod:`lowrank_jax.optim.loro_schedule`:
      no re-warm in cycles at or before its displaced start, its displaced cosine).
    lr_adjust_steps: ``loro_main``'s displacement ``--lr_adjust_steps`` (``null``: minus the
      warmup, as its 60m, 130m and 1b scripts).
    total_steps, warmup_steps: the run's, filled in from the schedule section.
  """

  every: int = setting(500, at_least=1)
  lazy_scale: float = setting(1.0, above=0)
  restart_warmup_steps: int = setting(5, at_least=0)
  schedule: str = setting("rewarm", choices=("rewarm", "loro_main"))
  lr_adjust_steps: int | None = None
  total_steps: int | None = setting(None, at_least=1)
  warmup_steps: int | None = setting(None, at_least=0)

  def for_run(self, schedule) -> LoroOptions:
    return dataclasses.replace(
        self, total_steps=schedule.total_steps, warmup_steps=schedule.warmup_steps
    )

  def factory_kwargs(self, mesh=None) -> dict[str, Any]:
    del mesh
    kwargs = {
        "every": self.every,
        "lazy_scale": self.lazy_scale,
        "restart_warmup_steps": self.restart_warmup_steps,
    }
    return {**kwargs, "loro_main": update_records.loro_main_of(dataclasses.asdict(self))}


@dataclasses.dataclass(frozen=True)
class ReloraOptions(_Options):
  """ReLoRA: LoRA merged into the frozen weight every ``optimizer.reset_every`` steps.

  Attributes:
    restart_warmup_steps: updates over which the rate re-warms from 0 after each merge.
    pruning: how the adapters' Adam moments are pruned after a merge: ``random`` or
      ``magnitude``.
    prune_ratio: the fraction of those moments pruned.
  """

  restart_warmup_steps: int = setting(update_records.RELORA_RESTART_WARMUP, at_least=0)
  pruning: str = setting("random", choices=("random", "magnitude"))
  prune_ratio: float = setting(0.999, at_least=0, at_most=1)

  def factory_kwargs(self, mesh=None) -> dict[str, Any]:
    del mesh
    return {"pruning": self.pruning, "prune_ratio": self.prune_ratio}  # the rate is the trainer's


def parse_options(cls: type, values: dict):
  """``values`` (``optimizer.options``) as an instance of the options class ``cls``.

  Raises:
    ValueError: not a mapping, an unknown option (listing the allowed ones), a mistyped
      or out-of-range value.
  """
  if not isinstance(values, dict):
    raise ValueError(f"optimizer.options={values!r} must be a mapping")
  names = [f.name for f in dataclasses.fields(cls)]
  for key in values:
    if key not in names:
      allowed = ", ".join(names) if names else "none: the method takes no options"
      raise ValueError(f"unknown option {PREFIX}{key}; allowed: {allowed}")
  hints = typing.get_type_hints(cls)
  return cls(**{key: coerce(hints[key], value, PREFIX + key) for key, value in values.items()})
