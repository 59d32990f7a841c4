"""optax's contract for optimizer factories: a ``learning_rate`` annotated ``ScalarOrSchedule``
takes a schedule, and a constant schedule trains exactly as the same float.

The check restates optax's own (``optax/contrib/_common_test.py``,
``test_optimizers_accept_learning_rate_schedule_if_type_annotated_as_such``), which skips a
factory whose annotation is anything else, a string included.
"""

import importlib
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
  """``params`` after ``steps`` updates on a quadratic, compiled as one scan (eager updates
  would dispatch, and compile, each of their operations one by one)."""
  loss = lambda p: sum(jnp.sum((x - 0.5) ** 2) for x in jax.tree.leaves(p))

  def step(carry, _):
    params, state = carry
    updates, state = optimizer.update(jax.grad(loss)(params), state, params)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
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


# optax's idiom (optax/_src/alias.py): the core hyperparameters by position, the rest by keyword.
POSITIONAL = {
    "galore": ("learning_rate", "rank", "update_proj_gap", "scale"),
    "fira": ("learning_rate", "rank", "update_proj_gap", "scale"),
    "apollo": ("learning_rate", "rank", "update_proj_gap", "scale"),
    "golore": ("learning_rate", "rank", "update_proj_gap", "scale"),
    "spam": ("learning_rate", "b1", "b2", "eps"),
    "stable_spam": ("learning_rate", "b1", "b2", "eps"),
    "relora": ("learning_rate", "restart_every"),
    "loro": ("learning_rate", "every"),
    "scale_by_galore": ("rank", "update_proj_gap", "scale"),
    "scale_by_fira": ("rank", "update_proj_gap", "scale"),
    "scale_by_apollo": ("rank", "update_proj_gap", "scale"),
    "scale_by_golore": ("rank", "update_proj_gap", "scale"),
    "scale_by_spam": ("b1", "b2", "eps"),
    "scale_by_stable_spam": ("b1", "b2", "eps"),
    "scale_by_relora": ("restart_every",),
    "scale_by_folded_adam": ("b1", "b2", "eps"),
}


def _parameters(name):
  return inspect.signature(getattr(optim, name)).parameters.values()


@pytest.mark.parametrize("name", sorted(POSITIONAL))
def test_arguments_past_the_core_hyperparameters_are_keyword_only(name):
  positional = tuple(p.name for p in _parameters(name) if p.kind == p.POSITIONAL_OR_KEYWORD)
  assert positional == POSITIONAL[name]
  assert all(p.kind == p.KEYWORD_ONLY for p in _parameters(name) if p.name not in positional)


@pytest.mark.parametrize("name", sorted(POSITIONAL))
def test_every_argument_is_documented_in_the_factorys_own_docstring(name):
  documented = getattr(optim, name).__doc__
  missing = [p.name for p in _parameters(name) if f"\n    {p.name}:" not in documented]
  assert not missing, missing


@pytest.mark.parametrize(
    "mini, full", [("apollo_mini", "apollo"), ("scale_by_apollo_mini", "scale_by_apollo")]
)
def test_apollo_mini_is_a_partial_of_apollo_with_its_own_docstring(mini, full):
  variant = getattr(optim, mini)
  assert variant.func is getattr(optim, full)
  assert variant.keywords == {"rank": 1, "scale": 128.0, "scale_type": "tensor"}
  assert "APOLLO-Mini" in variant.__doc__


@pytest.mark.parametrize(
    "module, old, new",
    [
        ("lowrank_jax.optim", "LowRankAdamState", "ScaleByLowRankAdamState"),
        ("lowrank_jax.optim", "FoldedAdamState", "ScaleByFoldedAdamState"),
        ("lowrank_jax.optim", "ReLoRAState", "ScaleByReLoRAState"),
        ("lowrank_jax.optim.adam", "FoldedAdamState", "ScaleByFoldedAdamState"),
        ("lowrank_jax.optim.relora", "ReLoRAState", "ScaleByReLoRAState"),
    ],
)
def test_the_states_old_names_still_resolve_with_a_deprecation_warning(module, old, new):
  module = importlib.import_module(module)
  with pytest.warns(DeprecationWarning, match=new):
    assert getattr(module, old) is getattr(optim, new)
  with pytest.raises(AttributeError):
    module.NoSuchState  # noqa: B018
