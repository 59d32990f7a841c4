r"""Momentum reset: re-initialise an optimizer's state every ``every`` steps.

arXiv 2505.22922, section 4: right after each weight refactorization the whole Adam state
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

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lowrank_jax.optim.validation import check_positive_int


class MomentumResetState(NamedTuple):
    """State of :func:`momentum_reset`.

    Attributes:
      count: int32 scalar, the number of updates taken (never reset).
      inner_state: the wrapped transform's state, re-initialised on reset steps.
    """

    count: jax.Array
    inner_state: optax.OptState


def momentum_reset(inner: optax.GradientTransformation,
                   every: int) -> optax.GradientTransformationExtraArgs:
    """Re-initialises ``inner``'s whole state at the end of every ``every``-th update.

    Args:
      inner: the transform whose state (moments, counts, anything) restarts.
      every: the reset period :math:`T` (Python int >= 1); the state is reset after
        updates ``T, 2T, ...``.

    Returns:
      A transform whose ``update`` requires ``params`` (``inner.init`` needs them) and
      passes extra keyword arguments on to ``inner``.
    """
    every = check_positive_int("every", every)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return MomentumResetState(count=jnp.zeros([], jnp.int32),
                                  inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("momentum_reset needs params in update(): it re-initialises the "
                             "inner state with inner.init(params).")
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        count = optax.safe_increment(state.count)
        # Operands, not closures: a closed-over concrete array loses its sharding in the branch.
        inner_state = jax.lax.cond(count % every == 0,
                                   lambda params, state: _like(inner.init(params), state),
                                   lambda params, state: state,
                                   params, inner_state)
        return updates, MomentumResetState(count=count, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _like(fresh: optax.OptState, current: optax.OptState) -> optax.OptState:
    """``fresh`` with the dtypes of ``current``, leaf by leaf (both branches of the reset
    must agree exactly, and some transforms store a dtype other than the init's)."""
    return jax.tree.map(lambda new, old: jax.lax.convert_element_type(new, old.dtype),
                        fresh, current)
