r"""What each update applies, for the run records: its learning rates and its method's events.

The base schedule is not what a restart method applies: right after a momentum reset the
paper's quick recovery (arXiv 2505.22922, weight refactorization and momentum reset) and SPAM's re-warmup scale the step down.
So the train step logs, for the update of 0-based count :math:`t` (1-based number
:math:`n = t + 1`), the values of this module's functions:

* ``lr``: the rate the update multiplies its step by, recovery and re-warmup included;
  a parameter group whose rate differs gets its own ``lr/<group>`` (LoRO's factors; the
  dense leaves' ``lr/dense`` with ``optimizer.dense_learning_rate``,
  :mod:`lowrank_jax.train.dense_rate`);
* one 0/1 flag per event of the method, summed over a logging window in ``metrics.jsonl``:

  - ``momentum_reset``: the Adam moments and their count restart in update :math:`n`, a
    multiple of the reset period (at its end for the Adam-based methods and LoRO, at its
    start for SPAM and Stable-SPAM, as each method defines it);
  - ``refactorize``: the factors are rebalanced at the end of update :math:`n`;
  - ``merge``: ReLoRA folds its adapters into the frozen weights after update :math:`n`
    (:math:`n = kK + 1`, with the pruning of their moments, logged as ``momentum_reset``);
  - ``refresh``: a projected method recomputes its projectors at the start of update
    :math:`n` (every matrix at :math:`t \bmod T = 0`; with ``stagger`` their refreshes spread
    over the gap this flag opens);
  - ``manifold_step``: LoRO's exact step on the rank-:math:`r` manifold is update :math:`n`.

The rates come from the functions the optimizers are built with (:func:`adam_learning_rate`,
SPAM's :func:`~lowrank_jax.optim.spam.rewarmup_factor`) and the periods from the same
section, with the optimizer's own defaults where the section leaves one out.

>>> import optax
>>> from lowrank_jax.train.config import OptimizerSection
>>> section = OptimizerSection(method="low_rank_restarts", reset_every=4, refactorize_every=4,
...                            recovery_steps=2)
>>> record = adam_family(optax.constant_schedule(1.0), section)
>>> [(round(float(r["lr"]), 3), int(r["momentum_reset"])) for r in map(record, range(2, 7))]
[(1.0, 0), (1.0, 1), (0.001, 0), (1.0, 0), (1.0, 0)]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from lowrank_jax import optim
from lowrank_jax.optim.loro import LoroMainSchedule, loro_learning_rate
from lowrank_jax.optim.spam import rewarmup_factor

Record = Callable[[jax.Array], dict[str, jax.Array]]

EVENTS = ("momentum_reset", "refactorize", "merge", "refresh", "manifold_step")


def _ends_period(count: jax.Array, every: int) -> jax.Array:
  """1 if the update of 0-based ``count`` has a 1-based number that is a multiple of ``every``."""
  if not every:
    return jnp.zeros((), jnp.int32)
  return (jnp.asarray(count + 1) % every == 0).astype(jnp.int32)


def _option(factory: Callable, section, name: str):
  """``section.options[name]``, or the optimizer factory's own default."""
  if name in section.options:
    return section.options[name]
  return inspect.signature(factory).parameters[name].default


def _rate(value) -> jax.Array:
  return jnp.asarray(value, jnp.float32)


def adam_learning_rate(schedule: optax.Schedule, section) -> optax.Schedule:
  """The learning rate of the Adam-based methods: ``schedule`` with the paper's quick
  recovery (:func:`~lowrank_jax.optim.restart_schedule`) after every momentum reset."""
  if not section.reset_every:
    return schedule
  return optim.restart_schedule(schedule, section.reset_every, section.recovery_steps)


def adam_family(schedule: optax.Schedule, section) -> Record:
  """Adam-based methods: recovering rate, resets and refactorizations of the section."""
  learning_rate = adam_learning_rate(schedule, section)

  def record(count):
    return {
        "lr": _rate(learning_rate(count)),
        "momentum_reset": _ends_period(count, section.reset_every),
        "refactorize": _ends_period(count, section.refactorize_every),
    }

  return record


RELORA_RESTART_WARMUP = 100  # the re-warmup of ReLoRA's README and of the paper's args.py


def relora_learning_rate(schedule: optax.Schedule, section) -> optax.Schedule:
  """ReLoRA's jagged rate (:func:`~lowrank_jax.optim.relora_schedule`): a linear re-warm
  from 0 over ``options.restart_warmup_steps`` updates after each merge."""
  warmup = section.options.get("restart_warmup_steps", RELORA_RESTART_WARMUP)
  return optim.relora_schedule(schedule, section.reset_every, warmup)


def relora(schedule: optax.Schedule, section) -> Record:
  """ReLoRA: its jagged rate; the merge and the pruning of the adapters' moments follow
  the update of count :math:`kK` (:math:`k \\ge 1`), the one the rate zeroes."""
  learning_rate = relora_learning_rate(schedule, section)
  every = section.reset_every

  def record(count):
    restart = ((jnp.asarray(count) % every == 0) & (count > 0)).astype(jnp.int32)
    return {"lr": _rate(learning_rate(count)), "momentum_reset": restart, "merge": restart}

  return record


def projected(factory: Callable) -> Callable[[optax.Schedule, object], Record]:
  """The GaLore family (``factory`` one of its optimizers): the schedule and the refreshes."""

  def build(schedule, section):
    gap = _option(factory, section, "update_proj_gap")
    return lambda count: {
        "lr": _rate(schedule(count)),
        "refresh": (jnp.asarray(count) % gap == 0).astype(jnp.int32),
    }

  return build


def spam(schedule: optax.Schedule, section) -> Record:
  """SPAM: the schedule times the cosine re-warmup after each reset."""
  interval = _option(optim.spam, section, "reset_interval")
  warmup = _option(optim.spam, section, "warmup_steps")
  return lambda count: {
      "lr": _rate(schedule(count) * rewarmup_factor(count + 1, interval, warmup)),
      "momentum_reset": _ends_period(count, interval),
  }


def stable_spam(schedule: optax.Schedule, section) -> Record:
  """Stable-SPAM: the schedule, and its resets."""
  interval = _option(optim.stable_spam, section, "reset_interval")
  return lambda count: {
      "lr": _rate(schedule(count)),
      "momentum_reset": _ends_period(count, interval),
  }


def loro_main_of(options: dict) -> LoroMainSchedule | None:
  """LoRO's ``options`` (``schedule: loro_main``, with the lengths ``for_run`` filled in) as
  the :class:`~lowrank_jax.optim.loro.LoroMainSchedule` its rate needs; ``None``: the re-warm."""
  if options.get("schedule", "rewarm") != "loro_main":
    return None
  adjust = options["lr_adjust_steps"]
  warmup = options["warmup_steps"]
  return LoroMainSchedule(options["total_steps"], warmup, -warmup if adjust is None else adjust)


def loro(schedule: optax.Schedule, section) -> Record:
  """LoRO: the schedule re-warmed after each exact step, the exact (manifold) steps and the
  Adam restart after each; ``lr/factors``, the factors' rate (the lazy steps' scale
  included), where ``options.lazy_scale`` gives one scale to all of them."""
  every = section.options["every"]
  warmup = _option(optim.loro, section, "restart_warmup_steps")
  lazy_scale = _option(optim.loro, section, "lazy_scale")
  learning_rate = loro_learning_rate(schedule, every, warmup, loro_main_of(section.options))

  def record(count):
    exact = _ends_period(count, every)
    rates = {"lr": _rate(learning_rate(count))}
    if lazy_scale is not None:  # None: each factor's own r / max(p, q)
      rates["lr/factors"] = rates["lr"] * jnp.where(exact == 1, 1.0, lazy_scale)
    return {**rates, "manifold_step": exact, "momentum_reset": exact}

  return record
