r"""SPAM and Stable-SPAM: Adam on every parameter with spike-aware clipping and resets.

SPAM clips gradient entries whose square exceeds ``spike_threshold`` times the second
moment and resets the moments every ``reset_interval`` steps, re-warming the step size over
a cosine of ``warmup_steps``; Stable-SPAM clips adaptively, normalizes the gradient norm
(AdaGN) and resets likewise. Both keep the dense weights and Adam's state, so their memory is
Full-Rank's (arXiv 2505.22922, memory accounting). Their options' defaults are their
:mod:`lowrank_jax.optim` factories'.

>>> import optax
>>> from lowrank_jax.train.methods.method import ResolvedOptimizer
>>> section = ResolvedOptimizer("spam", SpamOptions(reset_interval=4, warmup_steps=2))
>>> [int(spam_record(optax.constant_schedule(1.0), section)(t)["momentum_reset"]) for t in range(5)]
[0, 0, 0, 1, 0]
"""

from __future__ import annotations

import dataclasses
import optax

from lowrank_jax import optim
from lowrank_jax.optim.spam import rewarmup_factor
from lowrank_jax.train.fields import setting
from lowrank_jax.train.methods.adam_family import full_rank_memory
from lowrank_jax.train.methods.method import ResolvedOptimizer, every_parameter
from lowrank_jax.train.methods.options import MethodOptions, factory_default
from lowrank_jax.train.update_records import Record, ends_period, rate


@dataclasses.dataclass(frozen=True)
class SpamOptions(MethodOptions):
  """SPAM: Adam with spike clipping and periodic momentum resets.

  Attributes:
    spike_threshold: a gradient entry whose square exceeds this many times the second
      moment is clipped (0: no clipping).
    reset_interval: steps between momentum resets.
    warmup_steps: steps of the cosine re-warmup of the step size after each reset.
    spike_grace_steps: steps at the start and after each reset without spike clipping.
  """

  periods = ("reset_interval",)

  spike_threshold: float = setting(factory_default(optim.spam, "spike_threshold"), at_least=0)
  reset_interval: int = setting(factory_default(optim.spam, "reset_interval"), at_least=1)
  warmup_steps: int = setting(factory_default(optim.spam, "warmup_steps"), at_least=0)
  spike_grace_steps: int = setting(factory_default(optim.spam, "spike_grace_steps"), at_least=2)


@dataclasses.dataclass(frozen=True)
class StableSpamOptions(MethodOptions):
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

  periods = ("reset_interval",)

  gamma1: float = setting(factory_default(optim.stable_spam, "gamma1"), at_least=0, below=1)
  gamma2: float = setting(factory_default(optim.stable_spam, "gamma2"), at_least=0, below=1)
  theta: float = setting(factory_default(optim.stable_spam, "theta"), at_least=0, below=1)
  reset_interval: int = setting(factory_default(optim.stable_spam, "reset_interval"), at_least=1)
  total_steps: int | None = setting(factory_default(optim.stable_spam, "total_steps"), at_least=1)
  eta_min: float = setting(factory_default(optim.stable_spam, "eta_min"), at_least=0, at_most=1)
  authors_resets: bool = factory_default(optim.stable_spam, "authors_resets")


def spam_record(schedule: optax.Schedule, section: ResolvedOptimizer) -> Record:
  """SPAM: the schedule times the cosine re-warmup after each reset, and the resets."""
  interval, warmup = section.options.reset_interval, section.options.warmup_steps
  return lambda count: {
      "lr": rate(schedule(count) * rewarmup_factor(count + 1, interval, warmup)),
      "momentum_reset": ends_period(count, interval),
  }


def stable_spam_record(schedule: optax.Schedule, section: ResolvedOptimizer) -> Record:
  """Stable-SPAM: the schedule, and its resets."""
  interval = section.options.reset_interval
  return lambda count: {"lr": rate(schedule(count)), "momentum_reset": ends_period(count, interval)}


METHODS = {
    "spam": every_parameter(optim.spam, SpamOptions, spam_record, full_rank_memory),
    "stable_spam": every_parameter(
        optim.stable_spam, StableSpamOptions, stable_spam_record, full_rank_memory
    ),
}
