"""The public GaLore-family transforms: optax's trio, composition, checkpoints, arguments."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import lowrank_jax.optim as lro
from lowrank_jax.optim.apollo import scaled_norm
from lowrank_jax.optim._projection.lowrank_adam import (
    LowRankStep,
    ScaleByLowRankAdamState,
    norm_growth_factor,
)
from lowrank_jax.optim._projection.projection import matrix_layout, MatrixDimensionNumbers

SHAPES = {"tall": (8, 16), "stack": (3, 8, 16), "bias": (16,)}  # wide: parity tests
SMALL = dict(rank=2, update_proj_gap=2)
FACTORIES = {
    "galore": functools.partial(lro.galore, **SMALL),
    "fira": functools.partial(lro.fira, **SMALL),
    "apollo": functools.partial(lro.apollo, **SMALL),
    "apollo_mini": functools.partial(lro.apollo_mini, update_proj_gap=2),
    "golore": functools.partial(lro.golore, random_from_step=2, **SMALL),
}
NAMES = list(FACTORIES)


def make_params(dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(rng.standard_normal(s), dtype) for k, s in SHAPES.items()}


def make_grads(step, dtype=jnp.float32):
  return make_params(dtype, seed=100 + step)


def run(tx, params, steps=3, dtype=jnp.float32):
  state = tx.init(params)
  update = jax.jit(tx.update)
  for step in range(steps):
    updates, state = update(make_grads(step, dtype), state, params)
  return updates, state


def lowrank_state(state) -> ScaleByLowRankAdamState:
  """The low-rank part of an alias's state (chain -> partition -> masked)."""
  (found,) = lro.find_lowrank_states(state)
  assert found is state[0].inner_states["projected"].inner_state
  return found


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_jit_dtype_stability_and_descent(name, dtype):
  """Jitted steps on a quadratic keep shapes/dtypes, stay finite, and descend.

  A descent bound cannot guard the step's exact size: without the bias correction these
  steps descend faster (GaLore's loss ratio 0.86 -> 0.65). The update formulas are checked
  step by step in ``tests/optim/test_math_by_hand.py`` and the parity tests.
  """
  target = make_params(dtype, seed=7)
  loss = lambda p: sum(jnp.sum((p[k].astype(jnp.float32) - target[k]) ** 2) for k in p)
  tx = FACTORIES[name](learning_rate=0.1)
  params = jax.tree.map(jnp.zeros_like, target)
  initial_state = state = tx.init(params)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state, updates

  for _ in range(12):  # refreshes at steps 0, 2, 4, ...
    params, state, updates = step(params, state)
  chex.assert_trees_all_equal_shapes_and_dtypes(updates, target)
  chex.assert_trees_all_equal_shapes_and_dtypes(state, initial_state)
  chex.assert_tree_all_finite(updates)
  assert loss(params) < 0.95 * loss(jax.tree.map(jnp.zeros_like, target))


@pytest.mark.parametrize("name", NAMES)
def test_alias_is_the_documented_chain(name):
  """``<name>`` = chain(scale_by_<name>, add_decayed_weights, scale_by_learning_rate)."""
  params, grads = make_params(), make_grads(0)
  scale_by = getattr(lro, f"scale_by_{name}")(**FACTORIES[name].keywords)
  chained = optax.chain(
      scale_by, optax.add_decayed_weights(0.1), optax.scale_by_learning_rate(0.01)
  )
  alias = FACTORIES[name](learning_rate=0.01, weight_decay=0.1)
  expected, _ = chained.update(grads, chained.init(params), params)
  updates, _ = alias.update(grads, alias.init(params), params)
  chex.assert_trees_all_close(updates, expected)


@pytest.mark.parametrize("name", NAMES)
def test_init_on_abstract_inputs(name):
  tx = FACTORIES[name](learning_rate=0.01)
  params = make_params()
  abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
  chex.assert_trees_all_equal_shapes_and_dtypes(jax.eval_shape(tx.init, abstract), tx.init(params))


def test_state_layout_is_documented_and_has_no_empty_arrays():
  state = lowrank_state(FACTORIES["fira"](learning_rate=0.01).init(make_params()))
  assert isinstance(state.mu["bias"], optax.MaskedNode)
  assert state.projector["tall"].shape == (8, 2)  # (in, out) = (8, 16): project in
  assert state.mu["tall"].shape == (2, 16)
  assert state.mu["stack"].shape == (3, 2, 16)
  assert state.norm["stack"].shape == (3,) and state.norm["stack"].dtype == jnp.float32
  apollo_state = lowrank_state(FACTORIES["apollo"](learning_rate=0.01).init(make_params()))
  assert isinstance(apollo_state.projector["tall"], optax.MaskedNode)  # regenerated
  full_state = FACTORIES["golore"](learning_rate=0.01).init(make_params())
  assert all(leaf.size > 0 for leaf in jax.tree.leaves(full_state))


def test_orbax_round_trip(tmp_path):
  params = make_params()
  states = {
      name: jax.tree.map(
          lambda x: (x + 1.5).astype(x.dtype),  # non-zero values
          FACTORIES[name](learning_rate=0.01).init(params),
      )
      for name in NAMES
  }
  checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())
  checkpointer.save(tmp_path / "ckpt", args=ocp.args.StandardSave(states))
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, states)
  restored = checkpointer.restore(tmp_path / "ckpt", args=ocp.args.StandardRestore(abstract))
  assert jax.tree.structure(restored) == jax.tree.structure(states)
  chex.assert_trees_all_equal(restored, states)


def wrapped_variants(name):
  """The transform alone and inside optax's wrappers (same learning rate)."""
  tx = FACTORIES[name](learning_rate=0.01)
  kwargs = FACTORIES[name].keywords
  static = ("rank", "update_proj_gap") + (("random_from_step",) if name == "golore" else ())
  labels = {k: "frozen" if k == "tall" else "trained" for k in SHAPES}
  return {
      "plain": tx,
      "chain": optax.chain(optax.identity(), tx),
      "partition": optax.partition({"trained": tx, "frozen": optax.set_to_zero()}, labels),
      "multi_steps": optax.MultiSteps(tx, every_k_schedule=2),
      "inject": optax.inject_hyperparams(FACTORIES[name].func, static_args=static)(
          learning_rate=0.01, **kwargs
      ),
  }


@pytest.mark.parametrize("name", NAMES)
def test_composes_with_optax_wrappers(name):
  params, grads, later_grads = make_params(), make_grads(0), make_grads(1)
  mean_grads = jax.tree.map(lambda a, b: (a + b) / 2, grads, later_grads)
  variants = wrapped_variants(name)

  @jax.jit
  def all_updates(params, grads, later_grads, mean_grads):
    out = {}
    for key, tx in variants.items():
      initial = tx.init(params)
      out[key], state = tx.update(grads, initial, params)
      if key == "multi_steps":
        out["multi_steps_second"], _ = tx.update(later_grads, state, params)
      if key == "inject":
        initial.hyperparams["learning_rate"] = jnp.asarray(0.02)
        out["inject_doubled"], _ = tx.update(grads, initial, params)
    out["plain_mean"], _ = variants["plain"].update(
        mean_grads, variants["plain"].init(params), params
    )
    return out

  out = all_updates(params, grads, later_grads, mean_grads)
  plain = out["plain"]
  close = functools.partial(chex.assert_trees_all_close, rtol=1e-5, atol=1e-8)
  close(out["chain"], plain)
  close(out["inject"], plain)
  close(out["inject_doubled"], jax.tree.map(lambda u: 2 * u, plain))
  assert not np.any(out["partition"]["tall"])
  close(
      {k: out["partition"][k] for k in ("stack", "bias")}, {k: plain[k] for k in ("stack", "bias")}
  )
  assert not any(np.any(u) for u in jax.tree.leaves(out["multi_steps"]))
  close(out["multi_steps_second"], out["plain_mean"], rtol=1e-4, atol=1e-7)


def test_mask_routes_other_leaves_to_the_references_adam():
  params, grads = make_params(), make_grads(0)
  masks = [
      {"tall": True, "stack": False, "bias": False},
      lambda p: {k: k != "stack" and v.ndim >= 2 for k, v in p.items()},
  ]
  adam = lro.scale_by_folded_adam(b1=0.8, b2=0.99, eps=1e-6)
  dense, _ = adam.update(grads, adam.init(params))
  for mask in masks:
    tx = lro.scale_by_galore(rank=2, update_proj_gap=2, b1=0.8, b2=0.99, projection_mask=mask)
    updates, state = tx.update(grads, tx.init(params), params)
    chex.assert_trees_all_close(updates["stack"], dense["stack"])
    chex.assert_trees_all_close(updates["bias"], dense["bias"])
    assert not np.allclose(updates["tall"], dense["tall"])
    assert isinstance(state.inner_states["projected"].inner_state.mu["stack"], optax.MaskedNode)


def test_folded_adam_matches_the_formula():
  grads = [make_grads(s)["bias"] for s in range(3)]
  tx = lro.scale_by_folded_adam(b1=0.9, b2=0.99, eps=1e-3)
  state, m, v = tx.init({"b": grads[0]}), 0.0, 0.0
  for t, g in enumerate(grads, start=1):
    updates, state = tx.update({"b": g}, state)
    m, v = 0.9 * m + 0.1 * g, 0.99 * v + 0.01 * g**2
    expected = np.sqrt(1 - 0.99**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-3)
    chex.assert_trees_all_close(updates["b"], expected, rtol=1e-5)


def test_weight_decay_is_decoupled():
  params, grads = make_params(), make_grads(0)
  plain = lro.galore(0.01, **SMALL)
  decayed = lro.galore(0.01, weight_decay=0.1, **SMALL)
  u0, _ = plain.update(grads, plain.init(params), params)
  u1, _ = decayed.update(grads, decayed.init(params), params)
  chex.assert_trees_all_close(
      u1, jax.tree.map(lambda u, p: u - 0.01 * 0.1 * p, u0, params), rtol=1e-5, atol=1e-8
  )


@pytest.mark.parametrize("name", NAMES + ["spam", "stable_spam"])
def test_mask_selects_the_decayed_leaves_as_in_optax(name):
  """``mask`` means what it means for ``optax.adamw`` and ``optax.contrib.galore``: the leaves
  weight decay applies to (``projection_mask`` picks the projected ones)."""
  params, grads = make_params(), make_grads(0)
  decayed = {"tall": True, "stack": False, "bias": False}
  factory = FACTORIES.get(name) or getattr(lro, name)
  plain, masked = factory(0.01), factory(0.01, weight_decay=0.1, mask=decayed)
  u0, _ = plain.update(grads, plain.init(params), params)
  u1, _ = masked.update(grads, masked.init(params), params)
  expected = {k: u0[k] - 0.01 * 0.1 * params[k] * decayed[k] for k in params}
  chex.assert_trees_all_close(u1, expected, rtol=1e-5, atol=1e-8)


def test_moment_dtype_is_configurable():
  tx = lro.fira(0.01, moment_dtype=jnp.bfloat16, **SMALL)
  _, state = run(tx, make_params(), steps=2)
  moments = lowrank_state(state).mu, state[0].inner_states["dense"].inner_state.nu
  assert {x.dtype for x in jax.tree.leaves(moments)} == {jnp.dtype(jnp.bfloat16)}
  assert lowrank_state(state).projector["tall"].dtype == jnp.float32


def test_golore_is_galore_with_reproject_once_until_the_switch():
  params = make_params()
  golore = lro.golore(0.01, random_from_step=100, **SMALL)
  reproject_once = lro.ProjectionOptions(moment_policy="reproject_once")
  galore = lro.galore(0.01, scale=1.0, options=reproject_once, **SMALL)  # GoLore's alpha: 1
  chex.assert_trees_all_close(run(golore, params, 4)[0], run(galore, params, 4)[0], rtol=1e-5)


def test_golore_projector_is_random_orthonormal_after_the_switch():
  params = make_params()
  _, before = run(lro.golore(0.01, random_from_step=2, **SMALL), params, steps=2)
  _, after = run(lro.golore(0.01, random_from_step=2, **SMALL), params, steps=3)
  p = lowrank_state(after).projector["tall"]
  chex.assert_trees_all_close(p.T @ p, jnp.eye(2), atol=1e-5)
  svd_basis = lowrank_state(run(lro.galore(0.01, **SMALL), params, steps=3)[1]).projector["tall"]
  assert not np.allclose(np.abs(p), np.abs(svd_basis), atol=1e-2)
  # The reference's refresh leaves the stored first moment as it was before the step.
  chex.assert_trees_all_equal(lowrank_state(after).mu["tall"], lowrank_state(before).mu["tall"])


def test_golore_rand_ratio_is_the_fraction_before_the_switch():
  """pkumelon/Golore: a refresh at the 0-based step t is random once t / total >= rand_ratio;
  with 10 steps and 0.5 the refreshes at 0, 2, 4 take the SVD, the one at 6 is random."""
  params = make_params()
  golore = lro.golore(0.01, total_steps=10, rand_ratio=0.5, **SMALL)
  reproject_once = lro.ProjectionOptions(moment_policy="reproject_once")
  galore = lro.galore(0.01, scale=1.0, options=reproject_once, **SMALL)  # GoLore's alpha: 1
  chex.assert_trees_all_close(run(golore, params, 6)[0], run(galore, params, 6)[0], rtol=1e-5)
  assert not np.allclose(run(golore, params, 7)[0]["tall"], run(galore, params, 7)[0]["tall"])


def test_golore_switch_step_from_rand_ratio():
  from lowrank_jax.optim.golore import switch_step

  assert switch_step(1000, 0.8, None) == 800  # random once step >= rand_ratio * total
  assert switch_step(999, 0.8, None) == 800  # ceil(799.2): step 799 is still below 799.2
  assert switch_step(10, 0.7, None) == 7  # 0.7 * 10 is 7.0 in floating point
  assert switch_step(25, 0.28, None) == 8  # 0.28 * 25 is 7.000000000000001: step 7 is below
  assert switch_step(None, 0.25, 10) == 10


def test_norm_growth_limiter():
  layout = matrix_layout((4, 6), MatrixDimensionNumbers(), side="std", rank=2)
  step = lambda count, norm: LowRankStep(None, None, None, None, layout, jnp.int32(count), norm)
  norm = jnp.float32(2 * np.sqrt(24))
  np.testing.assert_allclose(norm_growth_factor(norm, step(0, jnp.float32(0.0)), 1.01), 1.0)
  np.testing.assert_allclose(
      norm / norm_growth_factor(norm, step(1, jnp.float32(1.0)), 1.01), 1.01, rtol=1e-5
  )
  np.testing.assert_allclose(norm_growth_factor(norm, step(1, jnp.float32(100.0)), 1.01), 1.0)


@pytest.mark.parametrize("shape, batch", [((6, 10), ()), ((10, 6), ()), ((3, 6, 10), (3,))])
@pytest.mark.parametrize("scale_type", ["channel", "tensor"])
def test_scaled_norm_is_the_norm_of_the_rescaled_gradient(shape, batch, scale_type):
  dims = MatrixDimensionNumbers(reduction_axis=-2, output_axis=-1)
  layout = matrix_layout(shape, dims, side="std", rank=2)
  grad = jax.random.normal(jax.random.key(0), shape)
  factor_shape = list(shape)
  for axis in (layout.matrix_axes if scale_type == "tensor" else (layout.projected_axis,)):
    factor_shape[axis] = 1
  factor = jax.random.uniform(jax.random.key(1), factor_shape)
  expected = jnp.sqrt(jnp.sum(jnp.square(factor * grad), axis=layout.matrix_axes))
  assert expected.shape == batch
  chex.assert_trees_all_close(scaled_norm(factor, grad, layout), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: lro.galore(0.01, rank=0), "rank must be a positive"),
        (lambda: lro.fira(0.01, update_proj_gap=0), "update_proj_gap must be a positive"),
        (lambda: lro.galore(0.01, scale=-1.0), "scale must be >= 0"),
        (lambda: lro.apollo(0.01, b1=1.0), "b1 must be"),
        (lambda: lro.galore(0.01, weight_decay=-0.1), "weight_decay must be >= 0"),
        (lambda: lro.apollo(0.01, projection="qr"), "projection must be one of"),
        (lambda: lro.golore(0.01), "golore needs total_steps"),
        (lambda: lro.fira(0.01, options=lro.ProjectionOptions(refresh="gaussian")), "orthonormal"),
        (
            lambda: lro.galore(0.01, options=lro.ProjectionOptions(side="middle")),
            "side must be one of",
        ),
        (
            lambda: lro.galore(0.01, rank=9).init(make_params()),
            r"rank=9 exceeds the smaller side \(8\) of the projected leaf \['stack'\] of shape "
            r"\(3, 8, 16\): use rank <= 8, or leave \['stack'\] out of the projection with "
            r"projection_mask=",
        ),
        (
            lambda: lro.galore(
                0.01, projection_mask=lambda p: jax.tree.map(lambda _: True, p)
            ).init(make_params()),
            r"projection_mask selects leaf \['bias'\]",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(build, message):
  with pytest.raises(ValueError, match=message):
    build()
