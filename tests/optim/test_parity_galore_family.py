"""Parity of GaLore, Fira and APOLLO with their PyTorch reference implementations.

Both sides get the same gradients for 10 steps with ``update_proj_gap=4``
(refreshes at steps 0, 4 and 8) on tall, wide and square kernels, a stacked
``(3, 8, 16)`` leaf (compared slice by slice against three torch weights) and a
bias (plain Adam on both sides). Flax kernels are ``(in, out)``, torch weights
``(out, in)``: the torch side sees transposed gradients.

Singular vectors are only defined up to sign, and GaLore carries its moments
across refreshes, so the references' SVD is patched to the same sign convention
as ours (each projector vector's largest-magnitude entry positive).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lowrank_jax.optim as lro
from reference_packages import require

torch = require("torch")

SHAPES = {"tall": (8, 16), "wide": (16, 8), "square": (12, 12), "stack": (3, 8, 16), "bias": (16,)}
STEPS, GAP, RANK, LR = 10, 4, 3, 0.01


def canonical_rows(matrix):
  """Flips each row so that its largest-magnitude entry is positive (torch)."""
  index = matrix.abs().argmax(dim=1, keepdim=True)
  signs = torch.where(matrix.gather(1, index) < 0, -1.0, 1.0)
  return matrix * signs


def patch_signs(monkeypatch, projector_class):
  """Makes ``projector_class.get_orthogonal_matrix`` return sign-canonical vectors."""
  original = projector_class.get_orthogonal_matrix

  def patched(self, weights, rank, type, *args, **kwargs):
    basis = original(self, weights, rank, type, *args, **kwargs)
    return canonical_rows(basis) if type == "right" else canonical_rows(basis.T).T

  monkeypatch.setattr(projector_class, "get_orthogonal_matrix", patched)


def gradients(seed=0):
  rng = np.random.default_rng(seed)
  return [
      {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
      for _ in range(STEPS)
  ]


def torch_weights(tree):
  """Our leaves as torch weights: kernels transposed, stacks split (name -> list)."""
  out = {}
  for name, value in tree.items():
    value = np.asarray(value)
    if value.ndim == 1:
      out[name] = [value]
    elif value.ndim == 2:
      out[name] = [value.T]
    else:
      out[name] = [v.T for v in value]
  return out


def run_jax(tx, params, grads):
  state = tx.init(params)
  update = jax.jit(tx.update)
  for g in grads:
    updates, state = update(jax.tree.map(jnp.asarray, g), state, params)
    params = optax.apply_updates(params, updates)
  return params


def run_torch(make_optimizer, params, grads):
  weights = {
      k: [torch.nn.Parameter(torch.tensor(w.copy())) for w in ws]
      for k, ws in torch_weights(params).items()
  }
  matrices = [w for k, ws in weights.items() if k != "bias" for w in ws]
  optimizer = make_optimizer(matrices, weights["bias"])
  for g in grads:
    for name, gs in torch_weights(g).items():
      for w, gw in zip(weights[name], gs):
        w.grad = torch.tensor(gw.copy())
    optimizer.step()
  return {k: [w.detach().numpy() for w in ws] for k, ws in weights.items()}


def assert_same_change(ours, reference, initial):
  ours, initial = torch_weights(ours), torch_weights(initial)
  for name in SHAPES:
    for a, b, w0 in zip(ours[name], reference[name], initial[name]):
      change, expected = a - w0, b - w0
      error = np.linalg.norm(change - expected) / np.linalg.norm(expected)
      assert error < 1e-4, f"{name}: relative error {error:.2e}"


def initial_params():
  rng = np.random.default_rng(42)
  return {
      k: jnp.asarray(0.1 * rng.standard_normal(s).astype(np.float32)) for k, s in SHAPES.items()
  }


def groups(matrices, bias, **projected):
  return [
      {"params": bias},
      {"params": matrices, "rank": RANK, "update_proj_gap": GAP, "proj_type": "std", **projected},
  ]


def test_galore_matches_galore_torch(monkeypatch):
  galore_torch = require("galore_torch")
  from galore_torch.galore_projector import GaLoreProjector

  patch_signs(monkeypatch, GaLoreProjector)
  params, grads = initial_params(), gradients()
  ours = run_jax(lro.galore(LR, rank=RANK, update_proj_gap=GAP, scale=0.25), params, grads)
  reference = run_torch(
      lambda m, b: galore_torch.GaLoreAdamW(
          groups(m, b, scale=0.25), lr=LR, no_deprecation_warning=True
      ),
      params,
      grads,
  )
  assert_same_change(ours, reference, params)


@pytest.mark.parametrize("scale", [0.25, 1.0])
def test_fira_matches_fira_package(monkeypatch, scale):
  fira = require("fira")
  from fira.gradient_projection import GradientProjector

  patch_signs(monkeypatch, GradientProjector)
  params, grads = initial_params(), gradients(1)
  ours = run_jax(lro.fira(LR, rank=RANK, update_proj_gap=GAP, scale=scale), params, grads)
  reference = run_torch(
      lambda m, b: fira.FiraAdamW(groups(m, b, alpha=scale), lr=LR, no_deprecation_warning=True),
      params,
      grads,
  )
  assert_same_change(ours, reference, params)


@pytest.mark.parametrize("mini, scale_front", [(False, False), (False, True), (True, False)])
def test_apollo_svd_matches_apollo_torch(monkeypatch, mini, scale_front):
  apollo_torch = require("apollo_torch")
  from apollo_torch.svd_projector import GaLoreProjector

  patch_signs(monkeypatch, GaLoreProjector)
  params, grads = initial_params(), gradients(2)
  rank, scale = (1, 128.0) if mini else (RANK, 2.0)
  factory = lro.apollo_mini if mini else lro.apollo
  ours = run_jax(
      factory(
          LR, rank=rank, update_proj_gap=GAP, scale=scale, projection="svd", scale_front=scale_front
      ),
      params,
      grads,
  )
  reference = run_torch(
      lambda m, b: apollo_torch.APOLLOAdamW(
          [
              {"params": b},
              {
                  "params": m,
                  "rank": rank,
                  "update_proj_gap": GAP,
                  "proj_type": "std",
                  "proj": "svd",
                  "scale": scale,
                  "scale_type": "tensor" if mini else "channel",
              },
          ],
          lr=LR,
          scale_front=scale_front,
      ),
      params,
      grads,
  )
  assert_same_change(ours, reference, params)


def drawn_projectors(rank, scale_type, grads):
  """The random projectors APOLLO draws at each refresh (steps 0, 4, 8), in the order
  apollo-torch asks for them (matrix by matrix, stacks slice by slice), as its ``ortho``
  (``r x in`` or ``out x r``: our stored projector transposed)."""
  tx = lro.scale_by_apollo(rank, GAP, scale_type=scale_type, store_projector=True)
  state, drawn = tx.init(initial_params()), []
  for step, g in enumerate(grads):
    _, state = tx.update(jax.tree.map(jnp.asarray, g), state, initial_params())
    if step % GAP == 0:
      (lowrank_state,) = lro.find_lowrank_states(state)
      for name in ("tall", "wide", "square", "stack"):
        projector = np.asarray(lowrank_state.projector[name])
        drawn += [p.T for p in projector] if projector.ndim == 3 else [projector.T]
  return drawn


@pytest.mark.parametrize("mini", [False, True])
def test_apollo_random_projection_matches_apollo_torch_given_the_same_draws(monkeypatch, mini):
  """The default (regenerated random) path against apollo-torch's ``proj="random"``, whose
  Gaussian draws are replaced by ours: the streams differ, the rest must not."""
  apollo_torch = require("apollo_torch")
  from apollo_torch.random_projector import GradientProjector

  params, grads = initial_params(), gradients()
  rank, scale, scale_type = (1, 128.0, "tensor") if mini else (RANK, 2.0, "channel")
  queue = drawn_projectors(rank, scale_type, grads)
  monkeypatch.setattr(
      GradientProjector,
      "get_orthogonal_matrix",
      lambda self, weights, rank, type, seed: torch.tensor(queue.pop(0)),
  )
  factory = lro.apollo_mini if mini else lro.apollo
  ours = run_jax(factory(LR, rank=rank, update_proj_gap=GAP, scale=scale), params, grads)
  reference = run_torch(
      lambda m, b: apollo_torch.APOLLOAdamW(
          groups(m, b, proj="random", scale=scale, scale_type=scale_type, rank=rank), lr=LR
      ),
      params,
      grads,
  )
  assert not queue  # every refresh took one of our draws
  assert_same_change(ours, reference, params)
