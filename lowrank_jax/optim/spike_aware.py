"""Building blocks shared by the spike-aware Adam variants (SPAM, Stable-SPAM).

Both optimizers are Adam with extra treatment of the incoming gradient and a
periodic reset of the moments. What they share lives here:

* the reset schedule: with a 1-based step ``n`` and interval ``T``, the moments
  are zeroed at the start of every step with ``n mod T == 0``, decided inside
  ``jit`` by a ``jnp.where`` on that scalar predicate (no Python-side counting);
* the argument checks that the generic ones in
  :mod:`lowrank_jax.optim._checks` do not cover (step counts, which may be
  traced, the moment dtype, the learning rate).

Numbers that may arrive as jax arrays (``optax.inject_hyperparams`` turns every
numeric argument into one) are only checked when they are plain Python numbers.

>>> import jax.numpy as jnp
>>> bool(is_reset_step(jnp.asarray(10), reset_interval=5))
True
>>> check_step_count('warmup_steps', -1)
Traceback (most recent call last):
...
ValueError: warmup_steps must be an integer >= 0, got -1.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp

from lowrank_jax.optim._checks import check_range


def check_step_count(name: str, value: Any, minimum: int = 0) -> None:
  """Checks a number of steps: an integer >= ``minimum`` (jax arrays pass).

  Unlike shape arguments, step counts work as traced values, so
  ``optax.inject_hyperparams`` needs no ``static_args`` for them.
  """
  if isinstance(value, jax.Array):
    return
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def check_learning_rate(value: Any) -> None:
  """Checks ``learning_rate``: a number >= 0 or an optax schedule (a callable)."""
  if callable(value) or isinstance(value, jax.Array):
    return
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f"learning_rate must be a number >= 0 or an optax schedule, got {value!r}.")
  check_range("learning_rate", value, 0.0)


def check_moment_dtype(value: Any) -> None:
  """Checks ``moment_dtype``: ``None`` (each param's dtype) or a floating dtype."""
  if value is None:
    return
  try:
    floating = jnp.issubdtype(jnp.dtype(value), jnp.floating)
  except TypeError:
    floating = False
  if not floating:
    raise ValueError(
        f"moment_dtype must be None or a floating dtype such as jnp.bfloat16, got {value!r}."
    )


def init_moment(param: jax.Array, moment_dtype: Any) -> jax.Array:
  """A zero moment for ``param``, stored in ``moment_dtype`` (default: the param's)."""
  return jnp.zeros_like(param, dtype=moment_dtype or param.dtype)


def is_reset_step(step: jax.Array, reset_interval: Any) -> jax.Array:
  """Scalar predicate: is the 1-based ``step`` a multiple of ``reset_interval``?"""
  return step % reset_interval == 0


def zeros_if(predicate: jax.Array, moment: jax.Array) -> jax.Array:
  """``moment`` zeroed where the scalar ``predicate`` holds (a select, no branch)."""
  return jnp.where(predicate, jnp.zeros_like(moment), moment)


def power(base: Any, exponent: jax.Array) -> jax.Array:
  """``base ** exponent`` in float32, for a decay ``base`` and an integer step."""
  return jnp.asarray(base, jnp.float32) ** exponent.astype(jnp.float32)
