"""Grouped leaves (``ProjectionOptions(group_leaves=True)``) give the ungrouped updates."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lowrank_jax.optim as lro
from lowrank_jax.optim._projection import leaf_groups
from lowrank_jax.optim._projection.projection import MatrixLayout

# Two groups of equal layout (a, b, d and c, e), a lone stacked leaf and a 1-D leaf that
# goes to the dense Adam; the (16, 8) leaves project the other axis.
SHAPES = {
    "a": (8, 16),
    "b": (8, 16),
    "c": (16, 8),
    "d": (8, 16),
    "e": (16, 8),
    "stack": (3, 8, 16),
    "bias": (16,),
}
METHODS = {
    "galore": functools.partial(lro.galore, rank=2, update_proj_gap=2),
    "fira": functools.partial(lro.fira, rank=2, update_proj_gap=2),
    "apollo": functools.partial(lro.apollo, rank=2, update_proj_gap=2),  # regenerated projector
    "golore": functools.partial(lro.golore, rank=2, update_proj_gap=2, random_from_step=2),
}


def tree(seed):
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}


def run(factory, group_leaves, stagger, steps=4):
  tx = factory(1e-2, options=lro.ProjectionOptions(group_leaves=group_leaves, stagger=stagger))
  params = tree(0)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for step in range(steps):
    updates, state = update(tree(100 + step), state, params)
  return updates, state


@pytest.mark.parametrize("stagger", [False, True])
@pytest.mark.parametrize("name", list(METHODS))
def test_grouped_leaves_give_the_same_updates_and_state(name, stagger):
  grouped = run(METHODS[name], True, stagger)
  separate = run(METHODS[name], False, stagger)
  chex.assert_trees_all_equal_structs(grouped, separate)
  chex.assert_trees_all_close(grouped, separate, atol=1e-6, rtol=1e-5)


def test_groups_follow_layout_and_dtype():
  layout = MatrixLayout((4, 6), 0, 1, 2)
  leaves = [jnp.zeros((4, 6)), jnp.zeros((4, 6), jnp.bfloat16), jnp.zeros((4, 6))]
  assert leaf_groups.group_by_layout([layout] * 3, leaves) == [[0, 2], [1]]
  due = [jnp.array([True]), jnp.array([False]), jnp.array([False])]
  joined = leaf_groups.concatenate(due, [[0, 2], [1]])
  assert [x.tolist() for x in joined] == [[True, False], [False]]


def test_group_leaves_is_validated():
  with pytest.raises(ValueError, match="group_leaves must be None, True or False, got 'yes'"):
    lro.galore(1e-3, rank=2, options=lro.ProjectionOptions(group_leaves="yes"))
