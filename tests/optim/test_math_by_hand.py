"""The optimizers' and the model's math against NumPy written here, without torch.

The reference-parity tests need torch and the authors' packages; these need neither, so the
math stays guarded where those are missing. Each check takes a few steps of one small
matrix (or one attention / MLP call) and recomputes it in float64 from the formulas of the
papers, as the module docstrings state them. The projectors of the GaLore family come from
NumPy's SVD (GaLore, Fira: sign-free on the first projector, see :func:`galore_by_hand`) or
from the optimizer's stored random projector (APOLLO: the draw is not the math under test).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lowrank_jax.optim as lro
from lowrank_jax.models import LlamaConfig
from lowrank_jax.models.llama import MLP, Attention

EPS, RANK, GAP = 1e-6, 3, 10  # one projector for all the steps
B1, B2 = float(np.float32(0.9)), float(np.float32(0.999))  # as the optimizers hold them
SHAPE = (8, 16)  # the smaller axis 0 is projected: P is 8 x r, R = P^T G is r x 16


def gradients(steps, seed=0, spike=None):
  """``steps`` float32 gradients; the one at index ``spike`` is 10 times larger."""
  rng = np.random.default_rng(seed)
  grads = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(steps)]
  if spike is not None:
    grads[spike] = grads[spike] * 10
  return grads


def run(tx, grads) -> tuple[list[np.ndarray], object]:
  """The transform's updates of ``{"w": g}`` for each gradient, and its last state."""
  state = tx.init({"w": jnp.zeros(SHAPE)})
  update = jax.jit(tx.update)
  updates = []
  for g in grads:
    u, state = update({"w": jnp.asarray(g)}, state, {"w": jnp.zeros(SHAPE)})
    updates.append(np.asarray(u["w"], np.float64))
  return updates, state


def moments(projected):
  """Adam's ``m, v`` after each of ``projected`` (float64, from zero)."""
  m = v = 0.0
  for r in projected:
    m, v = B1 * m + (1 - B1) * r, B2 * v + (1 - B2) * r**2
    yield m, v


def assert_close(got, expected, step=None):
  """Equal up to float32 rounding: a relative error of the whole matrix below 1e-5."""
  error = np.linalg.norm(np.asarray(got) - expected) / np.linalg.norm(expected)
  assert error < 1e-5, f"step {step}: relative error {error:.2e}"


def folded_correction(t: int) -> float:
  """The references' bias correction, folded into the step size."""
  return math.sqrt(1 - B2**t) / (1 - B1**t)


def top_left_singular_vectors(g: np.ndarray) -> np.ndarray:
  return np.linalg.svd(np.asarray(g, np.float64))[0][:, :RANK]


def rank_norm(x: np.ndarray) -> np.ndarray:
  """Norm over the rank axis: one value per kept column."""
  return np.linalg.norm(x, axis=0, keepdims=True)


def limited(norms, gamma=1.01):
  """Fira's limiter: divisors ``c_t = max(|S_t| / |S_{t-1}|, gamma) / gamma`` (1 at t = 1),
  the previous norm being the limited one."""
  previous, divisors = None, []
  for norm in norms:
    c = 1.0 if previous is None else max(norm / (previous + 1e-8), gamma) / gamma
    divisors.append(c)
    previous = norm / c
  return divisors


def galore_by_hand(grads, scale):
  """GaLore (arXiv 2403.03507): ``u_t = c_t * scale * P N_t``, ``N = m / (sqrt(v) + eps)``.

  A projector column's sign flips ``R``'s row, ``m``'s row and ``N``'s row alike, so
  ``P N`` does not depend on the SVD's signs.
  """
  p = top_left_singular_vectors(grads[0])
  projected = [p.T @ g for g in grads]
  return [
      folded_correction(t) * scale * p @ (m / (np.sqrt(v) + EPS))
      for t, (m, v) in enumerate(moments(projected), 1)
  ]


def test_galore_steps_by_hand():
  grads = gradients(3)
  updates, _ = run(lro.scale_by_galore(RANK, GAP, 0.25, b1=B1, b2=B2, eps=EPS), grads)
  for got, expected in zip(updates, galore_by_hand(grads, 0.25)):
    assert_close(got, expected)


def test_fira_steps_by_hand():
  """Fira (arXiv 2410.01623): ``u = c_t (alpha P N + S / l_t)`` with the residual
  ``S = phi (G - alpha P R)``, ``phi = |N|_r / |R|_r`` per column, and the norm-growth
  limiter ``l_t`` (the spike at step 3 triggers it)."""
  grads, alpha = gradients(4, spike=2), 0.25
  p = top_left_singular_vectors(grads[0])
  projected = [p.T @ g for g in grads]
  directions, residuals = [], []
  for g, r, (m, v) in zip(grads, projected, moments(projected)):
    n = m / (np.sqrt(v) + EPS)
    phi = rank_norm(n) / (rank_norm(r) + 1e-8)
    directions.append(alpha * p @ n)
    residuals.append(phi * (g - alpha * p @ r))
  divisors = limited([np.linalg.norm(s) for s in residuals])
  assert divisors[2] > 1.5  # the limiter acts on the spike
  updates, _ = run(lro.scale_by_fira(RANK, GAP, alpha, b1=B1, b2=B2, eps=EPS), grads)
  for t, (got, d, s, c) in enumerate(zip(updates, directions, residuals, divisors), 1):
    assert_close(got, folded_correction(t) * (d + s / c), t)


@pytest.mark.parametrize("scale_type,rank,scale", [("channel", RANK, 4.0), ("tensor", 1, 128.0)])
def test_apollo_steps_by_hand(scale_type, rank, scale):
  """APOLLO (arXiv 2412.05270): ``u = c_t sqrt(scale) (s G) / l_t`` with the ratio
  ``s = |N| / |R|`` per column (channel) or per matrix (tensor, APOLLO-Mini) and Fira's
  limiter on ``|s G|``. The random projector is read from the state."""
  grads = gradients(4, spike=2)
  tx = lro.scale_by_apollo(
      rank, GAP, scale, b1=B1, b2=B2, eps=EPS, scale_type=scale_type, store_projector=True
  )
  updates, state = run(tx, grads)
  (lowrank_state,) = lro.find_lowrank_states(state)
  p = np.asarray(lowrank_state.projector["w"], np.float64)
  assert p.shape == (SHAPE[0], rank)
  norm = rank_norm if scale_type == "channel" else np.linalg.norm
  projected = [p.T @ g for g in grads]
  scaled = [
      norm(m / (np.sqrt(v) + EPS)) / (norm(r) + 1e-8) * g
      for g, r, (m, v) in zip(grads, projected, moments(projected))
  ]
  divisors = limited([np.linalg.norm(x) for x in scaled])
  assert divisors[2] > 1.01  # the limiter acts on the spike (the ratio absorbs most of it)
  for t, (got, x, c) in enumerate(zip(updates, scaled, divisors), 1):
    expected = folded_correction(t) * math.sqrt(scale) * x / c
    assert_close(got, expected)


def test_apollo_mini_is_the_tensor_wise_rank_1_apollo_with_scale_128():
  grads = gradients(3)
  mini, _ = run(lro.scale_by_apollo_mini(update_proj_gap=GAP, b1=B1, b2=B2, eps=EPS), grads)
  tensor, _ = run(
      lro.scale_by_apollo(1, GAP, 128.0, b1=B1, b2=B2, eps=EPS, scale_type="tensor"), grads
  )
  np.testing.assert_allclose(mini, tensor, rtol=1e-6)


def test_spam_steps_by_hand():
  """SPAM (arXiv 2501.06842): moments zeroed at the start of updates ``n = kT``; entries with
  ``g^2 > theta v`` clipped to ``sign(g) sqrt(theta v)`` once ``n >= K`` and ``n mod T >= K``;
  ``u = s_n sqrt(1 - b2^n) / (1 - b1^n) m / (sqrt(v) + eps)`` with the cosine re-warmup
  ``s_n = 1 - 0.99 (1 + cos(pi j / (W + 1))) / 2`` for the ``j = n mod T < W`` updates after
  each reset (global ``n`` in the bias correction)."""
  interval, warmup, grace, theta = 4, 2, 2, 5.0
  grads = gradients(9, spike=6)
  tx = lro.scale_by_spam(
      B1,
      B2,
      EPS,
      spike_threshold=theta,
      reset_interval=interval,
      warmup_steps=warmup,
      spike_grace_steps=grace,
  )
  updates, _ = run(tx, grads)
  m = v = np.zeros(SHAPE)
  clipped_any = False
  for n, (g, got) in enumerate(zip(grads, updates), 1):
    g = np.asarray(g, np.float64)
    if n % interval == 0:
      m = v = np.zeros(SHAPE)
    if n >= grace and n % interval >= grace:
      spikes = g**2 > theta * v
      clipped_any |= bool(spikes.any()) and n > 1
      g = np.where(spikes, np.sign(g) * np.sqrt(theta * v), g)
    m, v = B1 * m + (1 - B1) * g, B2 * v + (1 - B2) * g**2
    rewarm = 1.0
    if n >= interval and n % interval < warmup:
      rewarm = 1 - 0.99 * 0.5 * (1 + math.cos(math.pi * (n % interval) / (warmup + 1)))
    expected = rewarm * folded_correction(n) * m / (np.sqrt(v) + EPS)
    assert_close(got, expected, n)
  assert clipped_any  # the spike at step 7 is clipped


def test_stable_spam_steps_by_hand():
  """Stable-SPAM (arXiv 2502.17055), without momentum decay: AdaClip against the bias-corrected
  EMA of max |g|, AdaGN by the bias-corrected norm EMAs, Adam moments (and their bias
  correction) restarted at updates ``n = kT``, eps on the corrected ``sqrt(v)``."""
  interval, gamma1, gamma2, theta, eps = 3, 0.7, 0.9, 0.999, 1e-8
  grads = gradients(7, spike=4)
  tx = lro.scale_by_stable_spam(
      B1, B2, eps, gamma1=gamma1, gamma2=gamma2, theta=theta, reset_interval=interval
  )
  updates, _ = run(tx, grads)
  m = v = np.zeros(SHAPE)
  max_ema = norm_ema = norm_sq_ema = 0.0
  since_reset = 0
  for n, (g, got) in enumerate(zip(grads, updates), 1):
    g = np.asarray(g, np.float64)
    if n % interval == 0:
      m = v = np.zeros(SHAPE)
      since_reset = 0
    since_reset += 1
    largest = np.abs(g).max()
    max_ema = theta * max_ema + (1 - theta) * largest
    threshold = max_ema / (1 - theta**n)
    g = np.where(np.abs(g) > threshold, g * threshold / largest, g)
    norm = np.linalg.norm(g)
    norm_ema = gamma1 * norm_ema + (1 - gamma1) * norm
    norm_sq_ema = gamma2 * norm_sq_ema + (1 - gamma2) * norm**2
    g = g / norm * (norm_ema / (1 - gamma1**n)) / (np.sqrt(norm_sq_ema / (1 - gamma2**n)) + eps)
    m, v = B1 * m + (1 - B1) * g, B2 * v + (1 - B2) * g**2
    t = since_reset if n >= interval else n
    expected = m / (1 - B1**t) / (np.sqrt(v) / np.sqrt(1 - B2**t) + eps)
    assert_close(got, expected, n)


CONFIG = LlamaConfig.preset(
    "nano", num_layers=1, hidden_size=16, intermediate_size=24, num_heads=2, vocab_size=32
)


def kernel(linear) -> np.ndarray:
  return np.asarray(linear.kernel[...], np.float64)


def rope_by_hand(x: np.ndarray, theta: float) -> np.ndarray:
  """RoFormer's rotation, rotate-half layout: pair ``i`` of ``[x1, x2]`` turns by
  ``p theta^(-2i/d)`` at position ``p``. ``x``: (seq, heads, head_dim)."""
  seq, _, dim = x.shape
  half = dim // 2
  angles = np.arange(seq)[:, None] * theta ** (-np.arange(half) * 2 / dim)  # (seq, half)
  cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def test_attention_by_hand():
  """Causal softmax attention of RoPE-rotated queries and keys, per head."""
  attention = Attention(CONFIG, rngs=nnx.Rngs(0))
  x = np.random.default_rng(0).standard_normal((1, 6, 16))
  got = attention(jnp.asarray(x, jnp.float32), jnp.arange(6)[None])
  heads, dim = CONFIG.num_heads, CONFIG.head_dim
  split = lambda t: t.reshape(6, heads, dim)
  q = rope_by_hand(split(x[0] @ kernel(attention.q_proj)), CONFIG.rope_theta)
  k = rope_by_hand(split(x[0] @ kernel(attention.k_proj)), CONFIG.rope_theta)
  v = split(x[0] @ kernel(attention.v_proj))
  scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(dim)
  scores = np.where(np.tril(np.ones((6, 6), bool)), scores, -np.inf)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum("hqk,khd->qhd", weights, v).reshape(6, heads * dim)
  np.testing.assert_allclose(got[0], out @ kernel(attention.o_proj), rtol=1e-4, atol=1e-6)


def test_swiglu_by_hand():
  """``down(silu(x W_gate) * (x W_up))``, silu(z) = z / (1 + e^-z)."""
  mlp = MLP(CONFIG, rngs=nnx.Rngs(0))
  x = np.random.default_rng(1).standard_normal((2, 16))
  gate, up = x @ kernel(mlp.gate_proj), x @ kernel(mlp.up_proj)
  expected = (gate / (1 + np.exp(-gate)) * up) @ kernel(mlp.down_proj)
  np.testing.assert_allclose(mlp(jnp.asarray(x, jnp.float32)), expected, rtol=1e-4, atol=1e-6)
