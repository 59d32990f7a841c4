"""Named training methods: the optax transform each one trains with.

A method gets the learning-rate schedule, the :class:`OptimizerSection` and the abstract
parameters, and returns an ``optax.GradientTransformation``. Projection methods (GaLore,
Fira, APOLLO, GoLore) touch only the seven target linears of every block; embedding,
lm_head and norms get plain Adam, as in the paper (arXiv 2505.22922, experimental protocol).

>>> import jax.numpy as jnp
>>> params = {"self_attn": {"q_proj": {"kernel": jnp.ones((4, 4))}}, "embed_tokens": jnp.ones((9, 4))}
>>> target_mask(params)
{'embed_tokens': False, 'self_attn': {'q_proj': {'kernel': True}}}
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from lowrank_jax import optim
from lowrank_jax.train import update_records
from lowrank_jax.optim.tree_utils import path_names
from lowrank_jax.train.method_options import (
    ApolloMiniOptions,
    ApolloOptions,
    FiraOptions,
    GaLoreOptions,
    GoLoreOptions,
    LoroOptions,
    NoOptions,
    ReloraOptions,
    SpamOptions,
    StableSpamOptions,
    parse_options,
)

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
      learning rates and the method's events (:mod:`lowrank_jax.train.update_records`).
    options: the class of its ``optimizer.options`` (:mod:`lowrank_jax.train.method_options`).
    factory: the :mod:`lowrank_jax.optim` factory it builds, if not AdamW's chain.
  """

  build: Callable
  linear_kind: str = "dense"
  restarts: bool = False
  merge_lora: bool = False
  record: Callable = update_records.adam_family
  options: type = NoOptions
  factory: Callable | None = None

  @property
  def adam_family(self) -> bool:
    """AdamW on every parameter, which momentum resets and refactorization wrap."""
    return self.build is _adam_family

  @property
  def takes_reset_every(self) -> bool:
    """``optimizer.reset_every`` applies: the Adam family's resets, ReLoRA's merges."""
    return self.build in (_adam_family, _relora)

  @property
  def default_eps(self) -> float:
    """Adam's ``eps`` where ``optimizer.eps`` is unset: its factory's default (the
    reference code's: galore-torch's, Fira's, APOLLO's and SPAM's AdamW take 1e-6), else
    PyTorch's and optax's AdamW's 1e-8."""
    if self.factory is None:
      return 1e-8
    return inspect.signature(self.factory).parameters["eps"].default

  @property
  def option_names(self) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(self.options))

  def parse_options(self, values: dict):
    """``optimizer.options`` as an instance of :attr:`options` (raises naming a bad one)."""
    return parse_options(self.options, values)


def _adam_family(schedule, section, mesh=None) -> optax.GradientTransformation:
  """AdamW on every parameter, with the paper's restarts where the section asks for them.

  ``momentum_reset`` wraps only the moments (so the schedule's count is not reset), the
  learning rate recovers after each reset (:func:`~lowrank_jax.train.update_records.adam_learning_rate`), and
  ``refactorize`` wraps the whole optimizer because it needs the updated factors.
  """
  del mesh  # nothing to spread
  moments = optax.scale_by_adam(section.b1, section.b2, section.eps)
  if section.reset_every:
    moments = optim.momentum_reset(moments, section.reset_every)
  tx = optax.chain(
      moments,
      optax.add_decayed_weights(section.weight_decay),
      optax.scale_by_learning_rate(update_records.adam_learning_rate(schedule, section)),
  )
  if section.refactorize_every:
    tx = optim.refactorize(tx, section.refactorize_every)
  return tx


def adam_hyperparameters(section) -> dict:
  """The section's Adam hyperparameters as the keyword arguments every method factory takes."""
  return dict(b1=section.b1, b2=section.b2, eps=section.eps, weight_decay=section.weight_decay)


def _relora(schedule, section, mesh=None) -> optax.GradientTransformation:
  """ReLoRA as Guitaricet/relora runs it: AdamW on every parameter whose LoRA adapters'
  moments are pruned after each merge (``options``: ``pruning``, ``prune_ratio``), with the
  jagged rate re-warming over ``options.restart_warmup_steps``
  (:func:`~lowrank_jax.train.update_records.relora_learning_rate`)."""
  del mesh  # nothing to spread
  return optim.relora(
      update_records.relora_learning_rate(schedule, section),
      section.reset_every,
      **adam_hyperparameters(section),
      adapters=target_mask,
      **parse_options(ReloraOptions, section.options).factory_kwargs(),
  )


def _projected(factory: Callable, options: type) -> Method:
  """A projected method: ``factory`` projects the target linears, with ``options``."""

  def build(schedule, section, mesh=None):
    return factory(
        schedule,
        **adam_hyperparameters(section),
        projection_mask=target_mask,
        **parse_options(options, section.options).factory_kwargs(mesh),
    )

  return Method(build, record=update_records.projected(factory), options=options, factory=factory)


def _every_parameter(factory: Callable, options: type, record: Callable, **kinds) -> Method:
  """A method that routes the parameters itself: the Adam hyperparameters and its
  ``options`` (e.g. LoRO's period ``every``) go to ``factory``."""

  def build(schedule, section, mesh=None):
    del mesh  # nothing to spread
    return factory(
        schedule,
        **adam_hyperparameters(section),
        **parse_options(options, section.options).factory_kwargs(),
    )

  return Method(build, record=record, options=options, factory=factory, **kinds)


METHODS: dict[str, Method] = {
    "adamw": Method(_adam_family),
    "full_rank": Method(_adam_family),
    "galore": _projected(optim.galore, GaLoreOptions),
    "fira": _projected(optim.fira, FiraOptions),
    "apollo": _projected(optim.apollo, ApolloOptions),
    "apollo_mini": _projected(optim.apollo_mini, ApolloMiniOptions),
    "golore": _projected(optim.golore, GoLoreOptions),
    "spam": _every_parameter(optim.spam, SpamOptions, update_records.spam),
    "stable_spam": _every_parameter(
        optim.stable_spam, StableSpamOptions, update_records.stable_spam
    ),
    "low_rank": Method(_adam_family, "lowrank"),
    "low_rank_restarts": Method(_adam_family, "lowrank", restarts=True),
    "lora": Method(_adam_family, "lora"),
    "relora": Method(
        _relora,
        "lora",
        merge_lora=True,
        record=update_records.relora,
        options=ReloraOptions,
        factory=optim.relora,
    ),
    "sltrain": Method(_adam_family, "sltrain"),
    "sltrain_restarts": Method(_adam_family, "sltrain", restarts=True),
    "cola": Method(_adam_family, "cola"),
    "loro": _every_parameter(optim.loro, LoroOptions, update_records.loro, linear_kind="lowrank"),
}

PAPER_RESTART_EVERY = 200


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"optimizer.method={name!r} is unknown; allowed: {sorted(METHODS)}")
  return METHODS[name]


def build_optimizer(section, schedule: optax.Schedule, mesh=None) -> optax.GradientTransformation:
  """The transform of ``section.method``, with global-norm clipping first if configured;
  ``mesh`` is the run's (a projected method may spread its refreshes over it)."""
  tx = get_method(section.method).build(schedule, section, mesh)
  if section.clip_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(section.clip_norm), tx)
  return tx


def make_schedule(peak: float, section) -> optax.Schedule:
  """The paper's schedule: linear warmup from 0, then cosine to ``min_lr_ratio * peak``;
  with ``section.cycle_steps``, that cycle repeated (:func:`cyclical`)."""
  if section.kind == "constant":
    return optax.constant_schedule(peak)
  warmup, cycle = section.warmup_steps, section.cycle_length
  one_cycle = optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=peak,
      warmup_steps=warmup,
      decay_steps=max(cycle, warmup + 1),
      end_value=section.min_lr_ratio * peak,
  )
  return cyclical(one_cycle, cycle, peak) if section.cycle_steps else one_cycle


CYCLE_RESTART_FACTOR = 1e-7  # of the peak, the first two steps of every later cycle


def cyclical(one_cycle: optax.Schedule, cycle: int, peak: float) -> optax.Schedule:
  """``one_cycle`` repeated every ``cycle`` steps, the first two of every later cycle at
  1e-7 of ``peak``: ``_get_cyclical_cosine_schedule_with_min_lr_lambda`` of
  pkumelon/Golore@7ee5a8a ``peft_pretraining/training_utils.py`` (Guitaricet/relora's).

  >>> unit = optax.linear_schedule(0.0, 1.0, 4)
  >>> [float(cyclical(unit, 4, 1.0)(t)) for t in (3, 4, 5, 6)]
  [0.75, 1e-07, 1e-07, 0.5]
  """

  def schedule(count):
    step = count % cycle
    restarting = (count >= cycle) & (step < 2)
    return jnp.where(restarting, CYCLE_RESTART_FACTOR * peak, one_cycle(step))

  return schedule
