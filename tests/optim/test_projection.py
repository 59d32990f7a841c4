"""Tests of the shared projection core: layouts, refreshes, schedule, moment policies."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lowrank_jax.optim as lro
from lowrank_jax.optim import linalg
from lowrank_jax.optim import projection_options
from lowrank_jax.optim._projection import (
    projection,
    projector_bases,
    projector_refresh,
    refresh_schedule,
)
from lowrank_jax.optim._projection.lowrank_adam import scale_by_lowrank_adam

DEFAULT = projection.MatrixDimensionNumbers()


def random_matrix(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize(
    "shape, side, projected",
    [
        ((16, 8), "std", 1),  # out < in: the output side is the smaller one
        ((8, 16), "std", 0),  # out > in: project the input side
        ((12, 12), "std", 0),  # ties project the input side (reference: m >= n -> right)
        ((8, 16), "larger", 1),
        ((8, 16), "out", 1),
        ((8, 16), "left", 1),
        ((16, 8), "in", 0),
        ((16, 8), "right", 0),
        ((3, 8, 16), "std", 0),  # stacked: same rule per matrix
    ],
)
def test_side_rule_picks_the_projected_axis(shape, side, projected):
  layout = projection.matrix_layout(shape, DEFAULT, side=side, rank=2)
  assert layout.projected_axis == projected + (len(shape) - 2)
  assert layout.projector_shape[layout.kept_axis] == 2
  assert layout.moment_shape[layout.projected_axis] == 2


def test_custom_dimension_numbers_make_other_axes_batch():
  # A 3-D attention kernel (embed, heads, head_dim): heads is a batch axis.
  dims = projection.MatrixDimensionNumbers(reduction_axis=0, output_axis=2)
  layout = projection.matrix_layout((16, 4, 8), dims, side="std", rank=2)
  assert layout.batch_shape == (4,)
  assert (layout.projected_axis, layout.kept_axis) == (2, 0)
  assert layout.moment_shape == (16, 4, 2)


@pytest.mark.parametrize(
    "shape, rank, message",
    [
        ((16,), 2, "ndim >= 2"),
        ((8, 4), 5, r"rank=5 exceeds the smaller side \(4\)"),
    ],
)
def test_layout_rejects_bad_leaves(shape, rank, message):
  with pytest.raises(ValueError, match=message):
    projection.matrix_layout(shape, DEFAULT, side="std", rank=rank)


def test_svd_basis_is_the_sign_canonical_top_subspace():
  matrix = random_matrix((12, 7))
  basis = projector_bases.svd_basis(matrix, 3)
  u, _, _ = np.linalg.svd(np.asarray(matrix), full_matrices=False)
  # Same vectors up to sign, and every column's largest entry is positive.
  chex.assert_trees_all_close(np.abs(basis), np.abs(u[:, :3]), atol=1e-5)
  largest = np.take_along_axis(np.asarray(basis), np.abs(basis).argmax(0)[None], 0)
  assert (largest > 0).all()
  chex.assert_trees_all_close(projector_bases.svd_basis(-matrix, 3), basis, atol=1e-5)


def test_eigh_basis_matches_the_svd_basis():
  matrix = random_matrix((10, 14))
  chex.assert_trees_all_close(
      projector_bases.eigh_basis(matrix, 3), projector_bases.svd_basis(matrix, 3), atol=1e-4
  )


def test_gram_eigenvectors_span_the_top_singular_subspace():
  # What the "svd" refresh computes on NVIDIA GPUs, checked here against the SVD: a
  # gradient-like matrix with a decaying spectrum (s_i = 1 / (1 + i / 4)), rank 16.
  rng = np.random.default_rng(0)
  u, _ = np.linalg.qr(rng.standard_normal((64, 64)))
  v, _ = np.linalg.qr(rng.standard_normal((160, 64)))
  matrix = jnp.asarray((u / (1 + np.arange(64) / 4)) @ v.T, jnp.float32)
  gram = linalg.gram_eigenvectors(matrix)[:, :16]
  exact = linalg.svd(matrix)[0][:, :16]
  chex.assert_trees_all_close(gram @ gram.T, exact @ exact.T, atol=2e-5)
  assert linalg.gram_eigenvectors(jnp.stack([matrix, 2 * matrix])).shape == (2, 64, 64)


def test_randomized_basis_finds_a_low_rank_subspace():
  low_rank = random_matrix((20, 3), 1) @ random_matrix((3, 15), 2)
  matrix = low_rank + 1e-3 * random_matrix((20, 15), 3)
  basis = projector_bases.randomized_basis(
      matrix, jax.random.key(0), 3, oversample=4, power_iterations=1
  )
  exact = projector_bases.svd_basis(matrix, 3)
  chex.assert_trees_all_close(basis @ basis.T, exact @ exact.T, atol=1e-4)
  chex.assert_trees_all_close(basis, exact, atol=1e-3)  # canonical signs agree too


def test_random_bases():
  gaussian = projector_bases.gaussian_basis(4000, jax.random.key(0), 4)
  assert gaussian.shape == (4000, 4)
  np.testing.assert_allclose(np.var(gaussian), 1 / 4, rtol=0.05)
  ortho = projector_bases.orthonormal_basis(10, jax.random.key(1), 4)
  chex.assert_trees_all_close(ortho.T @ ortho, jnp.eye(4), atol=1e-5)


def test_stagger_offsets_spread_over_the_gap():
  offsets = np.concatenate(
      [
          refresh_schedule.stagger_offsets(3, 0, 8, 4, True),
          refresh_schedule.stagger_offsets(5, 3, 8, 4, True),
      ]
  )
  np.testing.assert_array_equal(np.bincount(offsets, minlength=4), [2, 2, 2, 2])
  assert not refresh_schedule.stagger_offsets(3, 0, 8, 4, False).any()
  due = refresh_schedule.refresh_due(jnp.int32(5), 4, offsets)
  np.testing.assert_array_equal(due, offsets == 1)
  assert refresh_schedule.refresh_due(jnp.int32(0), 4, offsets).all()


def galore_tx(options=None, rank=2, gap=4):
  options = (options or projection_options.ProjectionOptions())._replace(
      refresh=(options and options.refresh) or "svd",
      moment_policy=(options and options.moment_policy) or "keep",
  )
  method = lambda step: (step.project_back(step.direction), step.norm)
  return scale_by_lowrank_adam(method, rank=rank, update_proj_gap=gap, options=options)


def _primitive_names(jaxpr, inside_cond=False):
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    yield name, inside_cond
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else [value]:
        inner = getattr(sub, "jaxpr", None)
        if inner is not None and hasattr(inner, "eqns"):
          yield from _primitive_names(inner, inside_cond or name == "cond")


def refresh_conds(jaxpr):
  """The top-level conds, without those of ``lax.platform_dependent`` (which branch on a
  ``platform_index``)."""
  platform = {eqn.outvars[0] for eqn in jaxpr.eqns if eqn.primitive.name == "platform_index"}
  return [
      eqn for eqn in jaxpr.eqns if eqn.primitive.name == "cond" and eqn.invars[0] not in platform
  ]


def test_svd_runs_only_inside_a_scalar_cond():
  params = {"w": jnp.zeros((3, 8, 16))}
  tx = galore_tx()
  jaxpr = jax.make_jaxpr(tx.update)(params, tx.init(params)).jaxpr
  names = list(_primitive_names(jaxpr))
  assert ("svd", True) in names
  assert ("svd", False) not in names
  cond_predicates = [eqn.invars[0].aval.shape for eqn in refresh_conds(jaxpr)]
  assert cond_predicates == [()]


@pytest.mark.parametrize("stagger", [False, True])
def test_one_cond_refreshes_every_leaf(stagger):
  # One scalar cond per step for the whole tree (on a GPU each cond waits for its
  # predicate on the host), with the staggered per-matrix conds inside it.
  params = {"a": jnp.zeros((8, 16)), "b": jnp.zeros((16, 8)), "c": jnp.zeros((2, 8, 8))}
  tx = galore_tx(projection_options.ProjectionOptions(stagger=stagger))
  jaxpr = jax.make_jaxpr(tx.update)(params, tx.init(params)).jaxpr
  top_level = refresh_conds(jaxpr)
  assert [eqn.invars[0].aval.shape for eqn in top_level] == [()]
  assert ("svd", False) not in list(_primitive_names(jaxpr))


def test_projector_refreshes_every_gap_steps():
  params = {"w": jnp.zeros((8, 16))}
  tx = galore_tx(gap=3)
  state = tx.init(params)
  update = jax.jit(tx.update)
  projectors = []
  for step in range(7):
    _, state = update({"w": random_matrix((8, 16), step)}, state)
    projectors.append(state.projector["w"])
  changed = [not np.allclose(a, b) for a, b in zip(projectors, projectors[1:])]
  assert changed == [False, False, True, False, False, True]


def test_staggered_refresh_changes_only_the_due_matrices():
  params = {"w": jnp.zeros((4, 8, 16))}
  tx = galore_tx(projection_options.ProjectionOptions(stagger=True), gap=4)
  state = tx.init(params)
  update = jax.jit(tx.update)
  previous = None
  for step in range(6):
    _, state = update({"w": random_matrix((4, 8, 16), step)}, state)
    if previous is not None:
      changed = [not np.allclose(a, b) for a, b in zip(previous, state.projector["w"])]
      expected = [step % 4 == offset for offset in range(4)]
      assert changed == expected, step
    previous = state.projector["w"]


def test_stacked_leaf_equals_separate_matrices():
  stack = random_matrix((3, 8, 16))
  tx = lro.galore(0.01, rank=2, update_proj_gap=2)
  stacked_params = {"w": jnp.zeros((3, 8, 16))}
  split_params = {f"w{i}": jnp.zeros((8, 16)) for i in range(3)}
  s1, s2 = tx.init(stacked_params), tx.init(split_params)
  update = jax.jit(tx.update)
  for step in range(3):
    grads = stack * (step + 1) + random_matrix((3, 8, 16), step)
    u1, s1 = update({"w": grads}, s1, stacked_params)
    u2, s2 = update({f"w{i}": grads[i] for i in range(3)}, s2, split_params)
    chex.assert_trees_all_close(
        u1["w"], jnp.stack([u2[f"w{i}"] for i in range(3)]), rtol=1e-4, atol=1e-6
    )  # GPUs batch matmuls differently


def test_dimension_numbers_follow_the_leaf_layout():
  grads = [random_matrix((8, 16), s) for s in range(3)]
  default = lro.galore(0.01, rank=2, update_proj_gap=2)
  transposed = lro.galore(
      0.01,
      rank=2,
      update_proj_gap=2,
      options=lro.ProjectionOptions(
          dimension_numbers=lro.MatrixDimensionNumbers(reduction_axis=-1, output_axis=-2)
      ),
  )
  s1, s2 = default.init({"w": grads[0]}), transposed.init({"w": grads[0].T})
  update1, update2 = jax.jit(default.update), jax.jit(transposed.update)
  for g in grads:
    u1, s1 = update1({"w": g}, s1, {"w": g})
    u2, s2 = update2({"w": g.T}, s2, {"w": g.T})
    chex.assert_trees_all_close(u1["w"], u2["w"].T, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("policy", ["keep", "reset", "reproject"])
def test_moment_policy_on_refresh(policy):
  params = {"w": jnp.zeros((8, 16))}
  tx = galore_tx(projection_options.ProjectionOptions(moment_policy=policy), gap=2)
  state = tx.init(params)
  _, state = tx.update({"w": random_matrix((8, 16), 0)}, state)
  _, before = tx.update({"w": random_matrix((8, 16), 1)}, state)
  grad = random_matrix((8, 16), 2)
  _, after = tx.update({"w": grad}, before)  # step 2 refreshes
  p_old, p_new = before.projector["w"], after.projector["w"]
  carried = {
      "keep": before.mu["w"],
      "reset": jnp.zeros_like(before.mu["w"]),
      "reproject": p_new.T @ p_old @ before.mu["w"],
  }[policy]
  expected_mu = 0.9 * carried + 0.1 * (p_new.T @ grad)
  chex.assert_trees_all_close(after.mu["w"], expected_mu, atol=1e-5)
  carried_nu = jnp.zeros_like(before.nu["w"]) if policy == "reset" else before.nu["w"]
  chex.assert_trees_all_close(
      after.nu["w"], 0.999 * carried_nu + 0.001 * (p_new.T @ grad) ** 2, atol=1e-5
  )


def test_regenerated_projector_is_fixed_between_refreshes():
  layout = projection.matrix_layout((2, 8, 16), DEFAULT, side="std", rank=2)
  refresher = projector_bases.make_refresher("gaussian", 2)
  offsets = np.zeros(2, np.int64)
  make = jax.jit(
      lambda count: projector_refresh.regenerate_projector(
          layout, refresh_schedule.refresh_keys(0, 5, count, 4, offsets), refresher, jnp.float32
      )
  )
  chex.assert_trees_all_equal(make(4), make(7))
  assert not np.allclose(make(3), make(4))
  assert not np.allclose(make(4)[0], make(4)[1])  # each matrix has its own key


@pytest.mark.parametrize("as_callable", [False, True])
def test_dimension_numbers_pytree_or_callable_per_leaf(as_callable):
  params = {"tall": jnp.ones((8, 16)), "stack": jnp.ones((3, 16, 8)), "bias": jnp.ones(16)}
  dims = {
      "tall": lro.MatrixDimensionNumbers(),
      "bias": None,  # (out, in) stack below
      "stack": lro.MatrixDimensionNumbers(reduction_axis=-1, output_axis=-2),
  }
  options = lro.ProjectionOptions(dimension_numbers=(lambda p: dims) if as_callable else dims)
  state = lro.scale_by_galore(rank=2, options=options).init(params)
  mu = state.inner_states["projected"].inner_state.mu
  assert mu["tall"].shape == (2, 16) and mu["stack"].shape == (3, 16, 2)
  with pytest.raises(ValueError, match="no MatrixDimensionNumbers"):
    lro.scale_by_galore(
        rank=2,
        options=options._replace(dimension_numbers={"tall": None, "stack": None, "bias": None}),
    ).init(params)


def test_reset_policy_for_regenerated_projectors():
  params = {"w": jnp.zeros((2, 8, 16))}
  tx = galore_tx(
      projection_options.ProjectionOptions(refresh="gaussian", moment_policy="reset"), gap=2
  )
  state = tx.init(params)
  assert isinstance(state.projector["w"], optax.MaskedNode)
  update = jax.jit(tx.update)
  for step in range(3):  # step 2 refreshes: the moments restart from that step's R alone
    _, state = update({"w": random_matrix((2, 8, 16), step)}, state)
  chex.assert_trees_all_close((state.mu["w"] / 0.1) ** 2, state.nu["w"] / 0.001, rtol=1e-4)
