"""Named training methods: the optax transform each one trains with.

A method gets the learning-rate schedule, the :class:`OptimizerSection` and the abstract
parameters, and returns an ``optax.GradientTransformation``. Projection methods (GaLore,
Fira, APOLLO, GoLore) touch only the seven target linears of every block; embedding,
lm_head and norms get plain Adam, as in the paper (section 2).

>>> import jax.numpy as jnp
>>> params = {"self_attn": {"q_proj": {"kernel": jnp.ones((4, 4))}}, "embed_tokens": jnp.ones((9, 4))}
>>> target_mask(params)
{'embed_tokens': False, 'self_attn': {'q_proj': {'kernel': True}}}
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

from lowrank_jax import optim

TARGET_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _key_name(key) -> str:
  return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))


def target_mask(params: Any) -> Any:
  """``True`` for the parameters of the seven target linears of every block."""
  def is_target(path, leaf):
    return leaf.ndim >= 2 and any(_key_name(k) in TARGET_LINEARS for k in path)

  return jax.tree_util.tree_map_with_path(is_target, params)


def _adamw(schedule, section, params):
  del params
  return optax.adamw(schedule, b1=section.b1, b2=section.b2, eps=section.eps,
                     weight_decay=section.weight_decay)


def _projected(factory: Callable) -> Callable:
  def build(schedule, section, params):
    del params
    return factory(schedule, b1=section.b1, b2=section.b2, eps=section.eps,
                   weight_decay=section.weight_decay, mask=target_mask, **section.options)
  return build


def _full_rank(factory: Callable) -> Callable:
  def build(schedule, section, params):
    del params
    return factory(schedule, b1=section.b1, b2=section.b2, eps=section.eps,
                   weight_decay=section.weight_decay, **section.options)
  return build


METHODS: dict[str, Callable] = {
    "adamw": _adamw,
    "full_rank": _adamw,
    "galore": _projected(optim.galore),
    "fira": _projected(optim.fira),
    "apollo": _projected(optim.apollo),
    "apollo_mini": _projected(optim.apollo_mini),
    "golore": _projected(optim.golore),
    "spam": _full_rank(optim.spam),
    "stable_spam": _full_rank(optim.stable_spam),
}


def check_method(name: str) -> None:
  if name not in METHODS:
    raise ValueError(f"optimizer.method={name!r} is unknown; allowed: {sorted(METHODS)}")


def build_optimizer(section, schedule: optax.Schedule, params: Any) -> optax.GradientTransformation:
  """The transform of ``section.method``, with global-norm clipping first if configured."""
  check_method(section.method)
  try:
    tx = METHODS[section.method](schedule, section, params)
  except TypeError as error:  # an option the method does not take
    raise ValueError(f"optimizer.options={section.options!r} do not fit method "
                     f"{section.method!r}: {error}") from None
  if section.clip_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(section.clip_norm), tx)
  return tx


def make_schedule(peak: float, section) -> optax.Schedule:
  """The paper's schedule: linear warmup from 0, then cosine to ``min_lr_ratio * peak``."""
  if section.kind == "constant":
    return optax.constant_schedule(peak)
  warmup = int(section.warmup_ratio * section.total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=max(section.total_steps, warmup + 1), end_value=section.min_lr_ratio * peak)
