r"""LORO-main's own learning-rate curve, ``cosine_restart`` with ``--lr_adjust_steps``.

mzf666/LORO-main@4da57b6 ``peft_pretraining/training_utils.py``
(``_get_cosine_schedule_with_multiple_warmups_lambda``), restated on the base schedule
:math:`s` (linear warmup over :math:`W` steps to the peak :math:`P = s(W)`, cosine to
:math:`m P = s(N)` at :math:`N`). With :math:`K` the exact-step period, :math:`R` the
re-warmup, :math:`L` the displacement (its scripts pass ``-W`` at 60m, 130m, 1b and ``-6000``
with :math:`W = 2000` at 350m), :math:`c(x) = \tfrac12 (1 + \cos(\pi x / (N - W)))` and
:math:`\epsilon = 10^{-6}`, the rate of update count :math:`t` is :math:`P` times

* :math:`t < W` (warmup, :math:`n = \lfloor t / K \rfloor`): a line from :math:`m` to
  :math:`c(-L)` (not mixed with :math:`m`), re-warmed from :math:`\epsilon` over the first
  :math:`R` steps of every cycle :math:`n \ne 0` towards that line at :math:`nK`;
* :math:`t \ge W` (:math:`u = t + L`, :math:`n = \lfloor u / K \rfloor`):
  :math:`m + (1 - m)\, c(u - W)`, re-warmed from :math:`\epsilon` over the first :math:`R`
  steps of every cycle with :math:`n > 0` towards :math:`m + (1 - m)\, c(nK - W)`.

So the exact steps whose cycle has :math:`n \le 0` after the warmup get no re-warm (at 60m
the one ending the warmup; at 350m the nine between steps 2000 and 6000), and the cosine,
displaced by :math:`L`, sits above the base schedule late in training (60m: 0.360 of the
peak at step 7750 where the base has 0.232).

>>> import optax
>>> base = optax.warmup_cosine_decay_schedule(0.0, 1.0, 4, 40, end_value=0.1)
>>> schedule = loro_main_schedule(base, total_steps=40, warmup_steps=4, every=4,
...                               restart_warmup_steps=2, lr_adjust_steps=-4)
>>> [round(float(schedule(t)), 3) for t in (0, 3, 4, 5, 8, 9, 10)]
[0.1, 0.752, 0.973, 0.985, 0.0, 0.5, 0.993]
"""

import jax.numpy as jnp
import optax

from lowrank_jax.optim._checks import check_positive_int

_REWARM_START = 1e-6  # LORO-main's eps: the re-warmups start at this fraction of the peak


def loro_main_schedule(
    base: optax.Schedule,
    total_steps: int,
    warmup_steps: int,
    every: int,
    restart_warmup_steps: int,
    lr_adjust_steps: int,
) -> optax.Schedule:
  """LORO-main's ``cosine_restart`` rate (module docstring) for the base warmup-cosine ``base``.

  Args:
    base: the run's warmup-then-cosine schedule; its peak is ``base(warmup_steps)`` and its
      floor ``base(total_steps)``.
    total_steps: :math:`N`, the steps of ``base``'s cosine end (Python int >= 1).
    warmup_steps: :math:`W`, ``base``'s warmup (Python int, ``0 <= W + L < N``, as LORO-main
      asserts).
    every: :math:`K`, the exact-step period (``--cosine_restart_freq``).
    restart_warmup_steps: :math:`R` (``--cosine_restart_warmup``, 5).
    lr_adjust_steps: :math:`L` (``--lr_adjust_steps``).

  Returns:
    An optax schedule of the 0-based update count.
  """
  total, warmup = check_positive_int("total_steps", total_steps), int(warmup_steps)
  every = check_positive_int("every", every)
  rewarm = check_positive_int("restart_warmup_steps", restart_warmup_steps)
  if not (warmup >= 0 and lr_adjust_steps + warmup < total):
    raise ValueError(
        f"lr_adjust_steps={lr_adjust_steps} + warmup_steps={warmup} must be in [0, "
        f"total_steps={total}) as LORO-main asserts"
    )
  peak = base(warmup)
  floor = base(total) / peak
  span = max(1, total - warmup)
  decay = lambda x: 0.5 * (1.0 + jnp.cos(jnp.pi * x / span))
  warmup_top = decay(-lr_adjust_steps)

  def rewarmed(since, target):
    return since / rewarm * (target - _REWARM_START) + _REWARM_START

  def schedule(count):
    count = jnp.asarray(count)
    cycle, since = count // every, count % every
    in_warmup = count < warmup
    warmup_line = lambda x: x / max(1, warmup) * (warmup_top - floor) + floor
    warming = jnp.where(
        (since < rewarm) & (cycle != 0),
        rewarmed(since, warmup_line(cycle * every)),
        warmup_line(count),
    )
    shifted = count + lr_adjust_steps
    cycle, since = shifted // every, shifted % every
    cosine = lambda x: floor + (1.0 - floor) * decay(x - warmup)
    decaying = jnp.where(
        (since < rewarm) & (cycle > 0), rewarmed(since, cosine(cycle * every)), cosine(shifted)
    )
    return peak * jnp.where(in_warmup, warming, decaying)

  return schedule
