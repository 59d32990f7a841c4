r"""LoRO: low-rank factors trained by AdamW, with an exact Riemannian step every ``every`` steps.

The target linears are Low-Rank's factors ``B A`` (the ``lowrank`` kind), so its memory is
Low-Rank's (arXiv 2505.22922, memory accounting). Every ``every`` updates the step is the
exact one on the rank-``r`` manifold (the ``manifold_step`` event), followed by an Adam
restart and a re-warm of the rate (or LORO-main's own curve, ``schedule: loro_main``).

>>> import optax
>>> from lowrank_jax.train.methods.method import ResolvedOptimizer
>>> section = ResolvedOptimizer("loro", LoroOptions(every=3, lazy_scale=0.5, restart_warmup_steps=2))
>>> record = loro_record(optax.constant_schedule(1.0), section)
>>> [(float(record(t)["lr/factors"]), int(record(t)["manifold_step"])) for t in (1, 2)]
[(0.5, 0), (1.0, 1)]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import optax

from lowrank_jax import optim
from lowrank_jax.optim.loro import LoroMainSchedule, loro_learning_rate
from lowrank_jax.train.fields import setting
from lowrank_jax.train.methods.adam_family import low_rank_memory
from lowrank_jax.train.methods.method import ResolvedOptimizer, every_parameter
from lowrank_jax.train.methods.options import MethodOptions, factory_default
from lowrank_jax.train.update_records import Record, ends_period, rate


@dataclasses.dataclass(frozen=True)
class LoroOptions(MethodOptions):
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

  periods = ("every",)

  every: int = setting(500, at_least=1)  # the factory requires it: the references' K
  lazy_scale: float = setting(factory_default(optim.loro, "lazy_scale"), above=0)
  restart_warmup_steps: int = setting(
      factory_default(optim.loro, "restart_warmup_steps"), at_least=0
  )
  schedule: str = setting("rewarm", choices=("rewarm", "loro_main"))
  lr_adjust_steps: int | None = None
  total_steps: int | None = setting(None, at_least=1)
  warmup_steps: int | None = setting(None, at_least=0)

  def for_run(self, schedule) -> LoroOptions:
    return dataclasses.replace(
        self, total_steps=schedule.total_steps, warmup_steps=schedule.warmup_steps
    )

  def loro_main(self) -> LoroMainSchedule | None:
    """``schedule: loro_main`` (with the lengths :meth:`for_run` fills in) as the
    :class:`~lowrank_jax.optim.loro.LoroMainSchedule` its rate needs; ``None``: the re-warm."""
    if self.schedule != "loro_main":
      return None
    adjust, warmup = self.lr_adjust_steps, self.warmup_steps
    return LoroMainSchedule(self.total_steps, warmup, -warmup if adjust is None else adjust)

  def factory_kwargs(self, mesh=None) -> dict[str, Any]:
    del mesh
    return {
        "every": self.every,
        "lazy_scale": self.lazy_scale,
        "restart_warmup_steps": self.restart_warmup_steps,
        "loro_main": self.loro_main(),
    }


def loro_record(schedule: optax.Schedule, section: ResolvedOptimizer) -> Record:
  """What each update applies: the schedule re-warmed after each exact step, the exact
  (manifold) steps and the Adam restart after each; ``lr/factors``, the factors' rate (the
  lazy steps' scale included), where ``options.lazy_scale`` gives one scale to all of them."""
  options = section.options
  learning_rate = loro_learning_rate(
      schedule, options.every, options.restart_warmup_steps, options.loro_main()
  )

  def record(count):
    exact = ends_period(count, options.every)
    rates = {"lr": rate(learning_rate(count))}
    if options.lazy_scale is not None:  # None: each factor's own r / max(p, q)
      rates["lr/factors"] = rates["lr"] * jnp.where(exact == 1, 1.0, options.lazy_scale)
    return {**rates, "manifold_step": exact, "momentum_reset": exact}

  return record


METHODS = {
    "loro": every_parameter(
        optim.loro, LoroOptions, loro_record, low_rank_memory, linear_kind="lowrank"
    ),
}
