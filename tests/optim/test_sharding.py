"""State shardings on the 8-device CPU mesh (set up by the root conftest)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import lowrank_jax.optim as lro
from lowrank_jax.optim.sharding import leaf_spec

SHAPES = {"up": (16, 32), "down": (32, 16), "stack": (4, 16, 32), "norm": (16,)}
SPECS = {
    "up": P("fsdp", "tensor"),
    "down": P("tensor", "fsdp"),
    "stack": P("fsdp", None, "tensor"),
    "norm": P(),
}


@pytest.fixture(scope="module")
def mesh():
  if jax.device_count() < 8:
    pytest.fail("the root conftest must provide 8 CPU devices")
  return jax.make_mesh((2, 4), ("fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def abstract_params():
  return {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in SHAPES.items()}


def test_lowrank_state_specs_fit_their_own_shapes(mesh):
  specs = lro.state_partition_specs(lro.fira(0.01, rank=3), abstract_params(), SPECS, mesh)
  lowrank = specs[0].inner_states["projected"].inner_state
  # up (in=16, out=32): projects `in`; projector (16, r), moments (r, 32).
  assert lowrank.projector["up"] == P("fsdp", None)
  assert lowrank.mu["up"] == lowrank.nu["up"] == P(None, "tensor")
  # down (in=32, out=16): projects `out`; projector (r, 16), moments (32, r).
  assert lowrank.projector["down"] == P(None, "fsdp")
  assert lowrank.mu["down"] == P("tensor", None)
  # A layer stack keeps its layer axis; per-matrix limiter norms (4,) too.
  assert lowrank.mu["stack"] == P("fsdp", None, "tensor")
  assert lowrank.norm["stack"] == P("fsdp")
  assert lowrank.count == P()
  dense = specs[0].inner_states["dense"].inner_state
  assert dense.mu["norm"] == P(None) and isinstance(dense.mu["up"], optax.MaskedNode)


def test_axes_a_mesh_axis_does_not_divide_are_replicated(mesh):
  # A (6, 16) state of a param sharded ("tensor", "fsdp"): 4 does not divide 6.
  assert leaf_spec((6, 16), ((6, 16), ("tensor", "fsdp")), mesh) == P(None, "fsdp")
  assert leaf_spec((3,), ((3, 16, 32), ("fsdp", None, "tensor")), mesh) == P(None)
  assert leaf_spec((16, 5), ((16, 32), ("fsdp", "tensor")), mesh) == P("fsdp", None)
  assert leaf_spec((), ((16, 32), ("fsdp", "tensor")), mesh) == P()
  assert leaf_spec((7,), None, mesh) == P()


def test_a_mesh_axis_freed_by_the_rank_axis_moves_to_the_last_axis_it_divides(mesh):
  # (r, f) moment of a (d, f) kernel sharded (fsdp, None): fsdp moves to f.
  assert leaf_spec((4, 32), ((16, 32), ("fsdp", None)), mesh) == P(None, "fsdp")
  # (L, d, r) of an (L, d, f) stack sharded (None, None, tensor): the last axis 4 divides.
  assert leaf_spec((6, 16, 3), ((6, 16, 32), (None, None, "tensor")), mesh) == P(
      None, "tensor", None
  )
  # Nothing it divides (and the kept axes stay): replicated, as before.
  assert leaf_spec((3, 5), ((16, 5), ("fsdp", None)), mesh) == P(None, None)
  explicit = jax.make_mesh(
      (2, 4), ("fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Explicit,) * 2
  )
  assert leaf_spec((4, 32), ((16, 32), ("fsdp", None)), explicit) == P(None, None)


def test_a_reduced_axis_frees_its_mesh_axis(mesh):
  # Adafactor's row and column moments of a (d, f) kernel sharded (fsdp, None).
  assert leaf_spec((16,), ((16, 32), ("fsdp", None)), mesh) == P("fsdp")
  assert leaf_spec((32,), ((16, 32), ("fsdp", None)), mesh) == P("fsdp")
  # (L, f) of an (L, d, f) stack sharded (None, fsdp, None): fsdp moves to f.
  assert leaf_spec((6, 32), ((6, 16, 32), (None, "fsdp", None)), mesh) == P(None, "fsdp")
  # Per-matrix norms of a stack keep the stack's axis.
  assert leaf_spec((4,), ((4, 16, 32), ("fsdp", None, "tensor")), mesh) == P("fsdp")


@pytest.mark.parametrize("name", ["galore", "fira", "apollo", "golore"])
def test_under_pure_fsdp_no_projected_state_is_replicated(name):
  """Kernels sharded on one axis only (the other has no fsdp): every state leaf with more
  entries than a layer's count of matrices is split 8 ways."""
  fsdp = jax.make_mesh((8,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
  params = {
      "up": jax.ShapeDtypeStruct((4, 16, 40), jnp.float32),
      "down": jax.ShapeDtypeStruct((4, 40, 16), jnp.float32),
  }
  specs = {"up": P(None, "fsdp", None), "down": P(None, None, "fsdp")}
  state = jax.eval_shape(FACTORIES[name]().init, params)
  shardings = lro.state_shardings(FACTORIES[name](), params, specs, fsdp)
  for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
    if leaf.size > 4:
      assert sharding.shard_shape(leaf.shape) != leaf.shape, (leaf.shape, sharding.spec)


@pytest.mark.parametrize(
    "optimizer",
    [
        optax.adamw(1e-3),
        optax.inject_hyperparams(optax.adam)(learning_rate=1e-3),
        optax.MultiSteps(optax.adafactor(1e-3), every_k_schedule=2),
        lro.spam(1e-3),
        lro.stable_spam(1e-3),
    ],
    ids=["adamw", "inject", "multisteps_adafactor", "spam", "stable_spam"],
)
def test_generic_over_other_transforms(mesh, optimizer):
  shardings = lro.state_shardings(
      optimizer, abstract_params(), {k: NamedSharding(mesh, s) for k, s in SPECS.items()}
  )
  params = {k: jnp.ones(s) for k, s in SHAPES.items()}
  state = jax.jit(optimizer.init, out_shardings=shardings)(params)
  chex.assert_trees_all_equal_structs(state, optimizer.init(params))
  for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
  # Every optimizer here keeps a param-shaped buffer of `down`: it follows the param.
  assert any(s.spec == P("tensor", "fsdp") for s in jax.tree.leaves(shardings))


FACTORIES = {
    "galore": functools.partial(lro.galore, 0.01, rank=3, update_proj_gap=2),
    "fira": functools.partial(lro.fira, 0.01, rank=3, update_proj_gap=2),
    "apollo": functools.partial(lro.apollo, 0.01, rank=3, update_proj_gap=2),
    "apollo_mini": functools.partial(lro.apollo_mini, 0.01, update_proj_gap=2),
    "golore": functools.partial(lro.golore, 0.01, rank=3, update_proj_gap=2, random_from_step=2),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_sharded_update_keeps_state_shapes_dtypes_and_shardings(mesh, name):
  check_sharded_updates(mesh, FACTORIES[name]())


@pytest.mark.parametrize("name", list(FACTORIES))
def test_sharded_update_under_an_explicit_mesh(name):
  explicit = jax.make_mesh(
      (2, 4), ("fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Explicit,) * 2
  )
  with jax.set_mesh(explicit):
    check_sharded_updates(explicit, FACTORIES[name]())


def check_sharded_updates(mesh, tx):
  param_shardings = {k: NamedSharding(mesh, s) for k, s in SPECS.items()}
  state_shardings = lro.state_shardings(tx, abstract_params(), param_shardings)
  rng = np.random.default_rng(0)
  params = jax.device_put(
      {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()},
      param_shardings,
  )
  state = jax.jit(tx.init, out_shardings=state_shardings)(params)
  initial = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  update = jax.jit(
      tx.update,
      in_shardings=(param_shardings, state_shardings, param_shardings),
      out_shardings=(param_shardings, state_shardings),
      donate_argnums=1,
  )
  for step in range(3):  # refresh at steps 0 and 2
    grads = jax.device_put(jax.tree.map(lambda p: p * (step + 1.0), params), param_shardings)
    updates, state = update(grads, state, params)
  chex.assert_trees_all_equal_shapes_and_dtypes(state, initial)
  chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)
  chex.assert_tree_all_finite(updates)
  for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(state_shardings)):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
