"""Wrap an optimizer to act after its updates number ``T, 2T, ...`` (the restarts' common part).

:func:`~lowrank_jax.optim.refactorize.refactorize` and
:func:`~lowrank_jax.optim.momentum_reset.momentum_reset` both run an inner transform and then,
at the end of every :math:`T`-th update, change its output: the updates (refactorization) or
the inner state (momentum reset). :func:`every_nth_update` holds the step count, the
argument checks and the call of the inner transform; the caller supplies what happens after.

>>> import jax.numpy as jnp
>>> import optax
>>> halve_every_2nd = every_nth_update(
...     optax.identity(), 2, "halve_every_2nd",
...     lambda due, updates, state, params: (jnp.where(due, updates / 2, updates), state))
>>> state = halve_every_2nd.init(jnp.zeros(()))
>>> for _ in range(3):
...     updates, state = halve_every_2nd.update(jnp.ones(()), state, jnp.zeros(()))
...     print(float(updates), int(state.count))
1.0 1
0.5 2
1.0 3
"""

from __future__ import annotations

from typing import Any, NamedTuple
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from lowrank_jax.optim._checks import check_positive_int


class PeriodicState(NamedTuple):
  """State of a transform made by :func:`every_nth_update`.

  Attributes:
    count: int32 scalar, the number of updates taken (never reset).
    inner_state: the wrapped transform's state.
  """

  count: jax.Array
  inner_state: optax.OptState


AfterUpdate = Callable[
    [jax.Array, optax.Updates, optax.OptState, optax.Params], tuple[optax.Updates, optax.OptState]
]


def every_nth_update(
    inner: optax.GradientTransformation,
    every: int,
    name: str,
    after_update: AfterUpdate,
    check_params: Callable[[optax.Params], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
  """Runs ``inner``, then ``after_update(due, updates, inner_state, params)``.

  Args:
    inner: the wrapped transform.
    every: the period :math:`T` (Python int >= 1).
    name: the public name of the wrapper, for error messages.
    after_update: maps the inner transform's ``(updates, state)`` to the wrapper's; ``due``
      is a scalar bool, true at the end of updates ``T, 2T, ...`` (branch on it with
      ``lax.cond``, whose operands should be passed explicitly: a closed-over concrete
      array loses its sharding inside a branch).
    check_params: called on the params in ``init`` (to validate them), or None.

  Returns:
    A transform whose ``update`` requires ``params`` and passes extra keyword arguments
    on to ``inner``; its state is a :class:`PeriodicState`.
  """
  every = check_positive_int("every", every)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    if check_params is not None:
      check_params(params)
    return PeriodicState(count=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError(f"{name} needs params in update().")
    updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    count = optax.safe_increment(state.count)
    updates, inner_state = after_update(count % every == 0, updates, inner_state, params)
    return updates, PeriodicState(count=count, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
