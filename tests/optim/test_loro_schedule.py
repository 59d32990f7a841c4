"""LORO-main's learning-rate curve, step by step against a restatement of its scheduler."""

import math

import numpy as np
import optax
import pytest

from lowrank_jax.optim.loro_schedule import loro_main_schedule
from lowrank_jax.optim.relora import relora_schedule


def loro_main_lambda(
    current_step, *, num_training_steps, first_warmup_steps, restart_warmup_steps,
    restart_every, min_lr_ratio, lr_adjust_steps, eps=1e-6,
):  # fmt: skip
  """``_get_cosine_schedule_with_multiple_warmups_lambda`` of mzf666/LORO-main@4da57b6
  ``peft_pretraining/training_utils.py`` (``lr_jag_after_warmup`` False), restated."""
  span = max(1, num_training_steps - first_warmup_steps)
  if current_step < first_warmup_steps:
    max_warmup_lr = 0.5 * (1.0 + math.cos(math.pi * float(-lr_adjust_steps) / span))
    restart_step = current_step % restart_every
    restart_number = current_step // restart_every
    if restart_step < restart_warmup_steps and restart_number != 0:
      progress = restart_number * restart_every / max(1, first_warmup_steps)
      multiplier = progress * (max_warmup_lr - min_lr_ratio) + min_lr_ratio
      return restart_step / max(1, restart_warmup_steps) * (multiplier - eps) + eps
    return current_step / max(1, first_warmup_steps) * (max_warmup_lr - min_lr_ratio) + min_lr_ratio
  step = current_step + lr_adjust_steps
  restart_step = step % restart_every
  restart_number = step // restart_every
  if restart_step < restart_warmup_steps and restart_number > 0:
    progress = (restart_number * restart_every - first_warmup_steps) / span
    multiplier = min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return restart_step / max(1, restart_warmup_steps) * (multiplier - eps) + eps
  progress = (step - first_warmup_steps) / span
  return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# (total, warmup, every, adjust): the 60m/130m/1b scripts' L = -W, and 350m's L = -3 W.
CASES = [(100, 10, 5, -10), (120, 8, 4, -24), (60, 6, 7, 0)]


@pytest.mark.parametrize("total,warmup,every,adjust", CASES)
def test_loro_main_schedule_matches_its_scheduler_at_every_step(total, warmup, every, adjust):
  peak, floor, rewarm = 0.01, 0.1, 2
  base = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, end_value=floor * peak)
  schedule = loro_main_schedule(base, total, warmup, every, rewarm, adjust)
  kwargs = dict(
      num_training_steps=total, first_warmup_steps=warmup, restart_warmup_steps=rewarm,
      restart_every=every, min_lr_ratio=floor, lr_adjust_steps=adjust,
  )  # fmt: skip
  expected = [peak * loro_main_lambda(t, **kwargs) for t in range(total)]
  np.testing.assert_allclose([float(schedule(t)) for t in range(total)], expected, rtol=2e-5)
  ours = relora_schedule(base, every, rewarm)  # the re-warm after every exact step differs
  assert not np.allclose([float(ours(t)) for t in range(total)], expected, rtol=1e-2)


def test_an_adjustment_past_the_end_is_refused():
  base = optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100)
  with pytest.raises(ValueError, match="lr_adjust_steps=95 \\+ warmup_steps=10 must be in"):
    loro_main_schedule(base, 100, 10, 5, 2, 95)
