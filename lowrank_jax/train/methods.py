"""Named training methods: the optax transform each one trains with.

A method gets the learning-rate schedule, the :class:`OptimizerSection` and the abstract
parameters, and returns an ``optax.GradientTransformation``. Projection methods (GaLore,
Fira, APOLLO, GoLore) touch only the seven target linears of every block; embedding,
lm_head and norms get plain Adam, as in the paper (arXiv 2505.22922, Sec. 2).

>>> import jax.numpy as jnp
>>> params = {"self_attn": {"q_proj": {"kernel": jnp.ones((4, 4))}}, "embed_tokens": jnp.ones((9, 4))}
>>> target_mask(params)
{'embed_tokens': False, 'self_attn': {'q_proj': {'kernel': True}}}
"""

from __future__ import annotations

import dataclasses
from typing import Any
from collections.abc import Callable

import jax
import optax

from lowrank_jax import optim
from lowrank_jax.train import applied
from lowrank_jax.optim.projection_options import check_projection_options
from lowrank_jax.optim.tree_utils import path_names

TARGET_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def target_mask(params: Any) -> Any:
  """``True`` for the parameters of the seven target linears of every block."""

  def is_target(path, leaf):
    return leaf.ndim >= 2 and any(name in TARGET_LINEARS for name in path_names(path))

  return jax.tree_util.tree_map_with_path(is_target, params)


@dataclasses.dataclass(frozen=True)
class Method:
  """A named training method.

  Attributes:
    build: ``build(schedule, section, mesh) -> optax transform``.
    linear_kind: the parameterization of the target linears it trains (``dense``, ...).
    restarts: refactorization and momentum reset every 200 steps unless the section says
      otherwise (the paper's ``*_restarts``).
    merge_lora: ReLoRA's merge-and-reinit of the adapters after updates ``kK + 1``
      (``K = reset_every``).
    record: ``record(schedule, section) -> record(count)``, what each update applies: its
      learning rates and the method's events (:mod:`lowrank_jax.train.applied`).
  """

  build: Callable
  linear_kind: str = "dense"
  restarts: bool = False
  merge_lora: bool = False
  record: Callable = applied.adam_family


def _adam_family(schedule, section, mesh=None) -> optax.GradientTransformation:
  """AdamW on every parameter, with the paper's restarts where the section asks for them.

  ``momentum_reset`` wraps only the moments (so the schedule's count is not reset), the
  learning rate recovers after each reset (:func:`~lowrank_jax.train.applied.adam_learning_rate`), and
  ``refactorize`` wraps the whole optimizer because it needs the updated factors.
  """
  del mesh  # nothing to spread
  moments = optax.scale_by_adam(section.b1, section.b2, section.eps)
  if section.reset_every:
    moments = optim.momentum_reset(moments, section.reset_every)
  tx = optax.chain(
      moments,
      optax.add_decayed_weights(section.weight_decay),
      optax.scale_by_learning_rate(applied.adam_learning_rate(schedule, section)),
  )
  if section.refactorize_every:
    tx = optim.refactorize(tx, section.refactorize_every)
  return tx


def _relora(schedule, section, mesh=None) -> optax.GradientTransformation:
  """ReLoRA as Guitaricet/relora runs it: AdamW on every parameter whose LoRA adapters'
  moments are pruned after each merge (``options``: ``pruning``, ``prune_ratio``), with the
  jagged rate re-warming over ``options.restart_warmup_steps``
  (:func:`~lowrank_jax.train.applied.relora_learning_rate`)."""
  del mesh  # nothing to spread
  options = {k: v for k, v in section.options.items() if k != "restart_warmup_steps"}
  return optim.relora(
      applied.relora_learning_rate(schedule, section),
      section.reset_every,
      b1=section.b1,
      b2=section.b2,
      eps=section.eps,
      weight_decay=section.weight_decay,
      adapters=target_mask,
      **options,
  )


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


def _projected(factory: Callable) -> Callable:
  def build(schedule, section, mesh=None):
    options = dict(section.options)
    if "projection" in options:
      options["options"] = projection_options(options.pop("projection"), mesh)
    return factory(
        schedule,
        b1=section.b1,
        b2=section.b2,
        eps=section.eps,
        weight_decay=section.weight_decay,
        projection_mask=target_mask,
        **options,
    )

  return build


def _every_parameter(factory: Callable) -> Callable:
  """A method that routes the parameters itself: the Adam hyperparameters and
  ``section.options`` (e.g. LoRO's period ``every``) go to its factory."""

  def build(schedule, section, mesh=None):
    del mesh  # nothing to spread
    return factory(
        schedule,
        b1=section.b1,
        b2=section.b2,
        eps=section.eps,
        weight_decay=section.weight_decay,
        **section.options,
    )

  return build


METHODS: dict[str, Method] = {
    "adamw": Method(_adam_family),
    "full_rank": Method(_adam_family),
    "galore": Method(_projected(optim.galore), record=applied.projected(optim.galore)),
    "fira": Method(_projected(optim.fira), record=applied.projected(optim.fira)),
    "apollo": Method(_projected(optim.apollo), record=applied.projected(optim.apollo)),
    "apollo_mini": Method(
        _projected(optim.apollo_mini), record=applied.projected(optim.apollo_mini)
    ),
    "golore": Method(_projected(optim.golore), record=applied.projected(optim.golore)),
    "spam": Method(_every_parameter(optim.spam), record=applied.spam),
    "stable_spam": Method(_every_parameter(optim.stable_spam), record=applied.stable_spam),
    "low_rank": Method(_adam_family, "lowrank"),
    "low_rank_restarts": Method(_adam_family, "lowrank", restarts=True),
    "lora": Method(_adam_family, "lora"),
    "relora": Method(_relora, "lora", merge_lora=True, record=applied.relora),
    "sltrain": Method(_adam_family, "sltrain"),
    "sltrain_restarts": Method(_adam_family, "sltrain", restarts=True),
    "cola": Method(_adam_family, "cola"),
    "loro": Method(_every_parameter(optim.loro), "lowrank", record=applied.loro),
}

PAPER_RESTART_EVERY = 200


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"optimizer.method={name!r} is unknown; allowed: {sorted(METHODS)}")
  return METHODS[name]


def build_optimizer(section, schedule: optax.Schedule, mesh=None) -> optax.GradientTransformation:
  """The transform of ``section.method``, with global-norm clipping first if configured;
  ``mesh`` is the run's (a projected method may spread its refreshes over it)."""
  method = get_method(section.method)
  try:
    tx = method.build(schedule, section, mesh)
  except TypeError as error:  # an option the method does not take
    raise ValueError(
        f"optimizer.options={section.options!r} do not fit method " f"{section.method!r}: {error}"
    ) from None
  if section.clip_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(section.clip_norm), tx)
  return tx


def make_schedule(peak: float, section) -> optax.Schedule:
  """The paper's schedule: linear warmup from 0, then cosine to ``min_lr_ratio * peak``."""
  if section.kind == "constant":
    return optax.constant_schedule(peak)
  warmup = int(section.warmup_ratio * section.total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=peak,
      warmup_steps=warmup,
      decay_steps=max(section.total_steps, warmup + 1),
      end_value=section.min_lr_ratio * peak,
  )
