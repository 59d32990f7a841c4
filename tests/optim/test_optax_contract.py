"""optax's contract for optimizer factories: a ``learning_rate`` annotated ``ScalarOrSchedule``
takes a schedule, and a constant schedule trains exactly as the same float.

The check restates optax's own (``optax/contrib/_common_test.py``,
``test_optimizers_accept_learning_rate_schedule_if_type_annotated_as_such``), which skips a
factory whose annotation is anything else, a string included.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lowrank_jax import optim

MATRIX = {"w": jnp.linspace(-1.0, 1.0, 48).reshape(8, 6), "bias": jnp.ones(6)}
FACTORS = {
    "q_proj": {
        "a": jnp.linspace(-1.0, 1.0, 16).reshape(8, 2),
        "b": jnp.cos(jnp.arange(12.0)).reshape(2, 6),
    }
}
FACTORIES = {
    "galore": (dict(rank=2, update_proj_gap=3), MATRIX),
    "fira": (dict(rank=2, update_proj_gap=3), MATRIX),
    "apollo": (dict(rank=2, update_proj_gap=3), MATRIX),
    "apollo_mini": (dict(update_proj_gap=3), MATRIX),
    "golore": (dict(rank=2, update_proj_gap=3, total_steps=10), MATRIX),
    "spam": ({}, MATRIX),
    "stable_spam": ({}, MATRIX),
    "relora": (dict(restart_every=4), MATRIX),
    "loro": (dict(every=4, restart_warmup_steps=2), FACTORS),
}


def _train(optimizer, params, steps=10):
  loss = lambda p: sum(jnp.sum((x - 0.5) ** 2) for x in jax.tree.leaves(p))
  state = optimizer.init(params)
  for _ in range(steps):
    updates, state = optimizer.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_learning_rate_is_annotated_scalar_or_schedule(name):
  annotation = inspect.signature(getattr(optim, name)).parameters["learning_rate"].annotation
  assert annotation in (optax.ScalarOrSchedule, optax.Schedule), annotation


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_a_constant_schedule_trains_as_its_float(name):
  kwargs, params = FACTORIES[name]
  factory = getattr(optim, name)
  with_float = _train(factory(1e-2, **kwargs), params)
  with_schedule = _train(factory(optax.constant_schedule(1e-2), **kwargs), params)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), with_float, with_schedule)
  moved = jax.tree.map(lambda x, y: bool((x != y).any()), with_float, params)
  assert any(jax.tree.leaves(moved))
