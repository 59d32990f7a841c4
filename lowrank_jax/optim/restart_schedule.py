r"""Quick-recovery learning rate after each restart (refactorization + momentum reset).

arXiv 2505.22922, weight refactorization and momentum reset: right after the restart at step :math:`kT` the Adam state is
fresh, so the learning rate climbs back linearly, over :math:`R` steps, from :math:`0.001`
times to exactly the value the base schedule :math:`s` has at :math:`kT + R`:

.. math::

  \eta(t) = \begin{cases}
    s(kT + R) \left(0.001 + 0.999 \, \dfrac{t - kT}{R - 1}\right)
      & kT \le t < kT + R,\ k \ge 1, \\
    s(t) & \text{otherwise,}
  \end{cases}

with :math:`t` the 0-based step count an optax schedule receives. The first cycle
(:math:`k = 0`) is left to the base schedule: nothing is reset at step 0, and the base
schedule's own warmup covers the start.

Step alignment with :func:`~lowrank_jax.optim.refactorize` and
:func:`~lowrank_jax.optim.momentum_reset` of the same ``every``: they act at the end of the
update whose 1-based number is :math:`kT`; the next update is the one with count
:math:`t = kT`, the first of the recovery.

>>> import optax
>>> schedule = restart_schedule(optax.constant_schedule(1.0), every=100, recovery_steps=10)
>>> [round(float(schedule(t)), 3) for t in (0, 99, 100, 101, 109, 110)]
[1.0, 1.0, 0.001, 0.112, 1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from lowrank_jax.optim._checks import check_positive_int

# The paper's recovery starts at this fraction of the target learning rate.
_RECOVERY_START = 0.001


def rewarm_after_restarts(
    base: optax.ScalarOrSchedule, every: int, steps: int, ramp: Callable[[jax.Array], jax.Array]
) -> optax.Schedule:
  r"""``s(kT + W) * ramp(t - kT)`` for :math:`kT \le t < kT + W` (:math:`k \ge 1`), else ``s(t)``.

  The shared shape of the re-warmups after restarts (this module's quick recovery and
  ReLoRA's jagged schedule); ``ramp`` maps the steps since the restart, ``0 .. W - 1``,
  to a factor. Arguments are validated by the public schedules.
  """
  base_fn = base if callable(base) else optax.constant_schedule(base)

  def schedule(count):
    count = jnp.asarray(count)
    restart = count // every * every
    since = count - restart
    recovering = (restart > 0) & (since < steps)
    rewarmed = base_fn(restart + steps) * ramp(since.astype(jnp.float32))
    return jnp.where(recovering, rewarmed, base_fn(count))

  return schedule


def restart_schedule(
    base: optax.ScalarOrSchedule, every: int, recovery_steps: int = 10
) -> optax.Schedule:
  """The base schedule with the paper's linear quick recovery after every restart.

  Args:
    base: the schedule without restarts (an optax schedule or a constant float), e.g.
      warmup then cosine.
    every: the restart period :math:`T` (Python int >= 1), the ``every`` of the
      refactorization and momentum reset it accompanies.
    recovery_steps: :math:`R`, the number of recovering steps (Python int, 2 <= R <= T);
      the paper uses 10.

  Returns:
    An optax schedule (a function of the 0-based step count).
  """
  every = check_positive_int("every", every)
  recovery_steps = check_positive_int("recovery_steps", recovery_steps)
  if not 2 <= recovery_steps <= every:
    raise ValueError(f"recovery_steps must be in [2, every={every}], got {recovery_steps}.")
  slope = (1.0 - _RECOVERY_START) / (recovery_steps - 1)
  return rewarm_after_restarts(
      base, every, recovery_steps, lambda since: _RECOVERY_START + slope * since
  )
