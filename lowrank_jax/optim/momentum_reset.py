r"""Momentum reset: re-initialise an optimizer's state every ``every`` steps.

arXiv 2505.22922, weight refactorization and momentum reset: right after each weight refactorization the whole Adam state
is thrown away, :math:`m = v = 0` *and* the step count restarts, so the bias correction
restarts too and the first step after a reset is exactly a fresh Adam's first step.

:func:`momentum_reset` wraps any inner transform and, at the end of every update whose
1-based number :math:`n` is a multiple of :math:`T`, replaces the inner state by
``inner.init(params)`` (behind ``lax.cond`` on a scalar predicate, so it is free on the
other steps). The update of step :math:`n` itself is the inner transform's normal update.

Where it sits: wrap only the transforms whose state should restart, typically the moment
estimator, and keep the learning-rate schedule outside, since a schedule's step counter
inside the wrapper would restart as well. The paper's recipe (refactorization, reset and
quick recovery, all with the same period):

>>> import jax.numpy as jnp
>>> import optax
>>> from lowrank_jax.optim.momentum_reset import momentum_reset
>>> from lowrank_jax.optim.refactorize import refactorize
>>> from lowrank_jax.optim.restart_schedule import restart_schedule
>>> schedule = restart_schedule(optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 1000), 200)
>>> optimizer = refactorize(optax.chain(momentum_reset(optax.scale_by_adam(), every=200),
...                                     optax.scale_by_learning_rate(schedule)), every=200)

A reset step leaves the inner state exactly as ``init`` made it:

>>> tx = momentum_reset(optax.scale_by_adam(), every=2)
>>> params = {"w": jnp.ones(3)}
>>> state = tx.init(params)
>>> for _ in range(2):
...     _, state = tx.update({"w": jnp.ones(3)}, state, params)
>>> int(state.inner_state.count), float(state.inner_state.mu["w"][0])
(0, 0.0)
"""

from __future__ import annotations

import jax
import optax

from lowrank_jax.optim.periodic import every_nth_update


def momentum_reset(
    inner: optax.GradientTransformation, every: int
) -> optax.GradientTransformationExtraArgs:
  """Re-initialises ``inner``'s whole state at the end of every ``every``-th update.

  Args:
    inner: the transform whose state (moments, counts, anything) restarts.
    every: the reset period :math:`T` (Python int >= 1); the state is reset after
      updates ``T, 2T, ...``.

  Returns:
    A transform whose ``update`` requires ``params`` (``inner.init`` needs them) and
    passes extra keyword arguments on to ``inner``. Its state is a
    :class:`~lowrank_jax.optim.periodic.PeriodicState` (own count, inner state).
  """

  def reset(due, updates, inner_state, params):
    return updates, jax.lax.cond(
        due,
        lambda params, state: _like(inner.init(params), state),
        lambda params, state: state,
        params,
        inner_state,
    )

  return every_nth_update(inner, every, "momentum_reset", reset)


def _like(fresh: optax.OptState, current: optax.OptState) -> optax.OptState:
  """``fresh`` with the dtypes of ``current``, leaf by leaf (both branches of the reset
  must agree exactly, and some transforms store a dtype other than the init's)."""
  return jax.tree.map(lambda new, old: jax.lax.convert_element_type(new, old.dtype), fresh, current)
