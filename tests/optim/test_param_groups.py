"""optim.param_groups: every transform of the library as one group's, at that group's rate."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lowrank_jax.optim as lro

SMALL = dict(rank=2, update_proj_gap=2)
FACTORIES = {
    "galore": functools.partial(lro.galore, **SMALL),
    "fira": functools.partial(lro.fira, **SMALL),
    "apollo": functools.partial(lro.apollo, **SMALL),
    "apollo_mini": functools.partial(lro.apollo_mini, update_proj_gap=2),
    "golore": functools.partial(lro.golore, random_from_step=2, **SMALL),
    "spam": lro.spam,
    "stable_spam": lro.stable_spam,
}
MATRICES, DENSE = 2e-3, 1e-2


def make_tree(seed):
  rng = np.random.default_rng(seed)
  shapes = {"embed": (12, 4), "norm": (4,), "q_proj": {"kernel": (3, 8, 16)}, "up_proj": (16, 8)}
  return jax.tree.map(
      lambda s: jnp.asarray(rng.standard_normal(s), jnp.float32),
      shapes,
      is_leaf=lambda x: isinstance(x, tuple),
  )


def is_matrix_group(names, leaf):
  return "matrices" if {"q_proj", "up_proj"} & set(names) else "dense"


def steps(tx, params, count=4):
  """The updates of ``count`` steps on fixed gradients of ``params``' keys (the projectors
  refresh at step 3)."""
  state, updates = tx.init(params), []
  for step in range(count):
    grads = {key: make_tree(100 + step)[key] for key in params}
    update, state = jax.jit(tx.update)(grads, state, params)
    updates.append(update)
  return updates


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_a_method_on_the_matrices_and_adamw_on_the_dense_leaves_each_at_its_rate(name):
  params = make_tree(0)
  matrices = {"q_proj": params["q_proj"], "up_proj": params["up_proj"]}
  dense = {"embed": params["embed"], "norm": params["norm"]}
  grouped = steps(
      lro.param_groups(
          {"matrices": FACTORIES[name](MATRICES), "dense": optax.adamw(DENSE)}, is_matrix_group
      ),
      params,
  )
  alone = steps(FACTORIES[name](MATRICES), matrices)
  adamw = steps(optax.adamw(DENSE), dense)
  for got, method, adam in zip(grouped, alone, adamw):
    for key in matrices:  # the method saw only the matrices: it projects exactly them
      for a, b in zip(jax.tree.leaves(got[key]), jax.tree.leaves(method[key])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    for key in dense:
      np.testing.assert_allclose(got[key], adam[key], rtol=1e-6)


def test_a_leaf_put_in_no_group_fails_in_one_line():
  tx = lro.param_groups({"dense": optax.adamw(DENSE)}, is_matrix_group)
  with pytest.raises(ValueError, match=r"group_of puts leaf \['q_proj'\]\['kernel'\] in group "):
    tx.init(make_tree(0))
  with pytest.raises(ValueError, match="param_groups needs at least one group"):
    lro.param_groups({}, is_matrix_group)
