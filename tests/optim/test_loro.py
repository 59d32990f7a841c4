"""LoRO: the manifold step from factor gradients against explicit dense references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lowrank_jax.optim.loro import loro, manifold_step, tangent_coordinates

LEAD_SHAPES = [(), (3,)]


def factors_and_gradient(key, lead, p=9, r=2, q=7):
  """Full-rank factors, a dense gradient G of the product, and the factor gradients."""
  key_a, key_b, key_g = jax.random.split(key, 3)
  a = jax.random.normal(key_a, lead + (p, r))
  b = jax.random.normal(key_b, lead + (r, q))
  g = jax.random.normal(key_g, lead + (p, q))
  grad_a = np.asarray(g, np.float64) @ np.swapaxes(np.asarray(b, np.float64), -1, -2)
  grad_b = np.swapaxes(np.asarray(a, np.float64), -1, -2) @ np.asarray(g, np.float64)
  return a, b, g, jnp.asarray(grad_a, jnp.float32), jnp.asarray(grad_b, jnp.float32)


def dense_tangent_projection(a, b, g):
  """P_T(G) = P_a G + G P_b - P_a G P_b with orthogonal projectors from pseudo-inverses."""
  a, b, g = (np.asarray(x, np.float64) for x in (a, b, g))
  proj_a = a @ np.linalg.pinv(a)  # onto the columns of a
  proj_b = np.linalg.pinv(b) @ b  # onto the rows of b
  return proj_a @ g + g @ proj_b - proj_a @ g @ proj_b


def best_rank(x, rank):
  u, s, vt = np.linalg.svd(x, full_matrices=False)
  return (u[..., :rank] * s[..., None, :rank]) @ vt[..., :rank, :]


@pytest.mark.parametrize("lead", LEAD_SHAPES)
def test_the_tangent_projection_from_factor_gradients_equals_the_dense_one(lead):
  a, b, g, grad_a, grad_b = factors_and_gradient(jax.random.key(0), lead)
  coordinates = tangent_coordinates(a, b, grad_a, grad_b)
  np.testing.assert_allclose(
      coordinates.basis @ coordinates.direction, dense_tangent_projection(a, b, g), atol=1e-5
  )
  np.testing.assert_allclose(coordinates.basis @ coordinates.point, a @ b, atol=1e-5)


@pytest.mark.parametrize("lead", LEAD_SHAPES)
def test_the_manifold_step_is_the_best_rank_r_approximation_of_the_tangent_step(lead):
  a, b, g, grad_a, grad_b = factors_and_gradient(jax.random.key(1), lead)
  new_a, new_b = jax.jit(manifold_step)(a, b, grad_a, grad_b, 0.3)
  chex.assert_shape([new_a, new_b], [a.shape, b.shape])
  product = np.asarray(new_a, np.float64) @ np.asarray(new_b, np.float64)
  assert (np.linalg.matrix_rank(product, tol=1e-4) <= 2).all()
  stepped = np.asarray(a, np.float64) @ np.asarray(b, np.float64) - 0.3 * dense_tangent_projection(
      a, b, g
  )
  assert (np.linalg.matrix_rank(stepped, tol=1e-4) > 2).all()  # the truncation does something
  np.testing.assert_allclose(product, best_rank(stepped, 2), atol=1e-4)
  gram_a = np.swapaxes(np.asarray(new_a), -1, -2) @ np.asarray(new_a)
  np.testing.assert_allclose(
      gram_a, np.asarray(new_b) @ np.swapaxes(np.asarray(new_b), -1, -2), atol=1e-4
  )


def model_params(key):
  keys = jax.random.split(key, 5)
  return {
      "q_proj": {"a": jax.random.normal(keys[0], (8, 2)), "b": jax.random.normal(keys[1], (2, 6))},
      "mlp": {
          "a": jax.random.normal(keys[2], (4, 6, 3)),  # stacked layers
          "b": jax.random.normal(keys[3], (4, 3, 5)),
      },
      "norm": jax.random.normal(keys[4], (6,)),
  }


def random_grads(key, params):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten([jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def test_ordinary_steps_are_adamw_and_every_kth_is_a_manifold_step_then_a_restart():
  schedule = optax.linear_schedule(0.1, 0.01, 10)
  params = model_params(jax.random.key(2))
  optimizer = loro(schedule, every=3, b1=0.8, b2=0.95, eps=1e-6, weight_decay=0.1)
  reference = optax.adamw(schedule, b1=0.8, b2=0.95, eps=1e-6, weight_decay=0.1)
  state, reference_state = optimizer.init(params), reference.init(params)
  update = jax.jit(optimizer.update)
  for step in range(4):
    grads = random_grads(jax.random.key(10 + step), params)
    updates, state = update(grads, state, params)
    expected, reference_state = reference.update(grads, reference_state, params)
    if step == 2:  # update 3 = K: factors take the manifold step with lr schedule(2)
      chex.assert_trees_all_close(updates["norm"], expected["norm"], atol=1e-6)
      for name in ("q_proj", "mlp"):
        a, b = params[name]["a"], params[name]["b"]
        new_a, new_b = manifold_step(a, b, grads[name]["a"], grads[name]["b"], schedule(2))
        chex.assert_trees_all_close(
            (updates[name]["a"], updates[name]["b"]), (new_a - a, new_b - b), atol=1e-5
        )
      adam_state = state.inner_state[0][0].inner_state  # momentum_reset's inner state
      fresh = optax.scale_by_adam(0.8, 0.95, 1e-6).init(params)
      chex.assert_trees_all_equal(adam_state, fresh)
      reference_state = (fresh, *reference_state[1:])  # restart, keep the schedule count
    else:
      chex.assert_trees_all_close(updates, expected, atol=1e-6)
    params = optax.apply_updates(params, updates)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"every": 0}, "every must be a positive Python int, got 0"),
        ({"every": 2.5}, "every must be a positive Python int"),
        ({"every": 2, "b1": 1.0}, "b1 must be >= 0.0, < 1.0, got 1.0"),
        ({"every": 2, "b2": -0.1}, "b2 must be >= 0.0"),
        ({"every": 2, "eps": -1e-8}, "eps must be >= 0.0"),
        ({"every": 2, "weight_decay": -0.1}, "weight_decay must be >= 0.0"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    loro(0.1, **kwargs)


def test_mismatched_factors_and_missing_params_are_errors():
  optimizer = loro(0.1, every=2)
  with pytest.raises(ValueError, match="are not"):
    optimizer.init({"q_proj": {"a": jnp.ones((4, 2)), "b": jnp.ones((3, 4))}})
  params = model_params(jax.random.key(3))
  with pytest.raises(ValueError, match="loro needs params"):
    optimizer.update(params, optimizer.init(params))
