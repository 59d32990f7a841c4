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


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"every": 0}, "every must be a positive Python int, got 0"),
        ({"every": 2.5}, "every must be a positive Python int"),
        ({"every": 2, "b1": 1.0}, "b1 must be >= 0.0, < 1.0, got 1.0"),
        ({"every": 2, "b2": -0.1}, "b2 must be >= 0.0"),
        ({"every": 2, "eps": -1e-8}, "eps must be >= 0.0"),
        ({"every": 2, "weight_decay": -0.1}, "weight_decay must be >= 0.0"),
        ({"every": 2, "lazy_scale": 0.0}, "lazy_scale must be > 0, got 0.0"),
        ({"every": 2, "restart_warmup_steps": 3}, "restart_warmup_steps must be in"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    loro(0.1, **kwargs)


def test_mismatched_factors_and_missing_params_are_errors():
  optimizer = loro(0.1, every=2, restart_warmup_steps=1)
  with pytest.raises(ValueError, match="are not"):
    optimizer.init({"q_proj": {"a": jnp.ones((4, 2)), "b": jnp.ones((3, 4))}})
  params = model_params(jax.random.key(3))
  with pytest.raises(ValueError, match="loro needs params"):
    optimizer.update(params, optimizer.init(params))


# --- Parity with LoRO's own optimizer (mzf666/LORO-main, loro_torch/loro_optim.py) ---------


class LoroMainReference:
  """``LOROAdamW(loro_type="loro")`` with ``--loro_refresh all``, restated in float64 NumPy.

  The reference's factors are ``M`` (out x r) and ``N`` (in x r) with ``W = M N^T``; ours are
  ``a = M`` and ``b = N^T``. Its lazy step scales the factors' rate by ``lazy_scale``; its exact
  step retracts ``M N^T - lr_t P_T`` along the Adam-normalised momenta; every state restarts
  after the exact step; the learning rate comes from ``rate(count)``.
  """

  def __init__(self, params, every, lazy_scale, rate, b1=0.9, b2=0.999, eps=1e-6):
    self.params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    self.every, self.lazy_scale, self.rate = every, lazy_scale, rate
    self.b1, self.b2, self.eps = b1, b2, eps
    self.count = 0
    self.restart()

  def restart(self):
    self.m = {k: np.zeros_like(v) for k, v in self.params.items()}
    self.v = {k: np.zeros_like(v) for k, v in self.params.items()}
    self.t = 0

  def exact(self, M, N, dM, dN, lr):
    r = M.shape[1]
    U, Rm = np.linalg.qr(M)
    V, Rn = np.linalg.qr(N)
    G_x_V = np.linalg.solve(Rn.T, dM.T).T
    Ut_x_G = np.linalg.solve(Rm.T, dN.T)
    K0 = Ut_x_G @ V
    Q1, K1 = np.linalg.qr((Ut_x_G - Ut_x_G @ V @ V.T).T)
    Q2, K2 = np.linalg.qr(G_x_V - U @ U.T @ G_x_V)
    sigma = np.block([[K0, K1.T], [K2, np.zeros((r, r))]])
    s_aug = np.zeros((2 * r, 2 * r))
    s_aug[:r, :r] = Rm @ Rn.T
    U_sig, S_sig, Vh_sig = np.linalg.svd(s_aug - lr * sigma)
    root = np.sqrt(S_sig[:r])
    M_new = np.concatenate([U, Q2], axis=1) @ U_sig[:, :r] * root
    N_new = np.concatenate([V, Q1], axis=1) @ Vh_sig.T[:, :r] * root
    return M_new, N_new

  def step(self, grads):
    self.count += 1
    self.t += 1
    lr = self.rate(self.count - 1)
    lr_t = lr * np.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
    directions = {}
    for k, g in grads.items():
      g = np.asarray(g, np.float64)
      self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
      self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
      directions[k] = self.m[k] / (np.sqrt(self.v[k]) + self.eps)
    p = self.params
    p["norm"] = p["norm"] - lr_t * directions["norm"]
    if self.count % self.every:
      p["a"] = p["a"] - lr_t * self.lazy_scale * directions["a"]
      p["b"] = p["b"] - lr_t * self.lazy_scale * directions["b"]
    else:
      M, N = self.exact(p["a"], p["b"].T, directions["a"], directions["b"].T, lr_t)
      p["a"], p["b"] = M, N.T
      self.restart()


def product_loss_grads(params, target, norm_target):
  """Gradients of 0.5 ||a b - target||^2 + 0.5 ||norm - norm_target||^2 (float64)."""
  a, b = (np.asarray(params[k], np.float64) for k in ("a", "b"))
  g = a @ b - target
  norm = np.asarray(params["norm"], np.float64) - norm_target
  return {"a": g @ b.T, "b": a.T @ g, "norm": norm}


def test_loro_matches_loro_main_over_three_exact_steps():
  every, warmup, lazy_scale, steps = 4, 2, 0.25, 13  # exact steps 4, 8, 12; re-warms after them
  base = optax.linear_schedule(0.05, 0.02, steps)

  def rate(count):  # the jagged re-warm from 0, restated
    since, restart = count % every, count - count % every
    return (
        float(base(restart + warmup)) * since / warmup
        if restart and since < warmup
        else float(base(count))
    )

  rng = np.random.default_rng(0)
  params = {
      "a": rng.normal(size=(7, 3)),
      "b": rng.normal(size=(3, 6)),
      "norm": rng.normal(size=(5,)),
  }
  target, norm_target = rng.normal(size=(7, 6)), rng.normal(size=(5,))
  reference = LoroMainReference(params, every, lazy_scale, rate)
  ours = jax.tree.map(
      lambda x: jnp.asarray(x, jnp.float32),
      {"m": {"a": params["a"], "b": params["b"]}, "norm": params["norm"]},
  )
  optimizer = loro(base, every, lazy_scale=lazy_scale, restart_warmup_steps=warmup)
  state = optimizer.init(ours)
  update = jax.jit(optimizer.update)
  for _ in range(steps):
    flat = {"a": ours["m"]["a"], "b": ours["m"]["b"], "norm": ours["norm"]}
    grads = product_loss_grads(flat, target, norm_target)
    reference.step(product_loss_grads(reference.params, target, norm_target))
    tree = {"m": {"a": grads["a"], "b": grads["b"]}, "norm": grads["norm"]}
    updates, state = update(jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), tree), state, ours)
    ours = optax.apply_updates(ours, updates)
  expected = reference.params
  product = np.asarray(ours["m"]["a"], np.float64) @ np.asarray(ours["m"]["b"], np.float64)
  np.testing.assert_allclose(product, expected["a"] @ expected["b"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ours["norm"], expected["norm"], rtol=1e-5, atol=1e-6)
