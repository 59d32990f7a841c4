"""The learning-rate schedule of a run: the paper's warmup and cosine, optionally cyclical.

>>> from lowrank_jax.train.config import ScheduleSection
>>> schedule = make_schedule(1.0, ScheduleSection(total_steps=10, warmup_ratio=0.2))
>>> [round(float(schedule(t)), 3) for t in (0, 1, 2, 10)]
[0.0, 0.5, 1.0, 0.1]
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


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
