r"""What each update applies, for the run records: its learning rates and its method's events.

The base schedule is not what a restart method applies: right after a momentum reset the
paper's quick recovery (arXiv 2505.22922, weight refactorization and momentum reset) and SPAM's re-warmup scale the step down.
So the train step logs, for the update of 0-based count :math:`t` (1-based number
:math:`n = t + 1`), the values of its method's record:

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

Each method's module (:mod:`lowrank_jax.train.methods`) writes its record from the
functions its optimizer is built with and the resolved section's periods, so the logged
rates and events are those the update applies; this module holds what they share.

>>> [int(ends_period(t, 4)) for t in range(8)]
[0, 0, 0, 1, 0, 0, 0, 1]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Record = Callable[[jax.Array], dict[str, jax.Array]]

EVENTS = ("momentum_reset", "refactorize", "merge", "refresh", "manifold_step")


def ends_period(count: jax.Array, every: int) -> jax.Array:
  """1 if the update of 0-based ``count`` has a 1-based number that is a multiple of ``every``
  (0: never)."""
  if not every:
    return jnp.zeros((), jnp.int32)
  return (jnp.asarray(count + 1) % every == 0).astype(jnp.int32)


def rate(value) -> jax.Array:
  """A logged learning rate, as float32."""
  return jnp.asarray(value, jnp.float32)


def schedule_record(schedule, section) -> Record:
  """What each update of a method without periods of its own applies: the schedule's rate
  (``section``, the run's resolved optimizer, has nothing to add)."""
  del section
  return lambda count: {"lr": rate(schedule(count))}
