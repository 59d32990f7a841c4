"""GoLore-AdamW step by step against a NumPy restatement of GoLore's own code.

The reference is pkumelon/Golore@7ee5a8a, ``peft_pretraining/golore_torch/adamw.py``
(``AdamW.step``) with ``golore_projector.py`` (``GoLoreProjector``, ``proj_type="std"``) and the
switch ``rand_epoch = rand_ratio * num_training_steps`` of ``torchrun_main.py`` (line 601),
restated in float64 on the torch layout (our ``(in, out)`` kernels transposed). 12 steps of
``update_proj_gap=2``, ``total_steps=12``, ``rand_ratio=0.5``: SVD refreshes at steps 0, 2, 4,
random ones at 6, 8, 10, on a tall, a wide and a square kernel (the side rule's tie) and a
bias (plain Adam on both sides). After every step the parameters, the projectors and both
moments must agree at 1e-5; a non-default ``scale``, a large ``eps`` and a weight decay make
their placements visible.

What the restatement pins down, from the reference's math (not our code):

* a projector change keeps the stored first moment as it was before the step: the step itself
  uses ``b1 P_new^T P_old M + (1 - b1) R`` (``adamw.py`` lines 108-114), but that product is
  bound to the local ``exp_avg`` only, so ``state["exp_avg"]`` is neither re-projected nor
  updated at a refresh; the second moment is updated in place as on any step;
* eps is added to the uncorrected ``sqrt(V)`` and the bias correction is folded into the step
  size (lines 124-130); ``scale`` multiplies the projected-back direction (projector line 68);
* the SVD side: a torch weight ``(out, in)`` with ``out >= in`` is projected on the right.

Two things cannot come from the reference's math. The random projectors are torch draws, ours
JAX's: each is read from our state after its step, checked orthonormal and away from the SVD
basis, and given to the restatement. Singular vectors are only defined up to sign, and the
stored moment outlives its basis, so the NumPy SVD takes our sign convention (each vector's
largest-magnitude entry positive). Weight decay is optax's, ``p -= lr (u + wd p)``, where the
reference decays the updated parameter (lines 149-150): the main test restates ours, a second
one bounds the difference by its ``lr * wd`` order.
"""

import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lowrank_jax.optim as lro

STEPS, GAP, RANK = 12, 2, 3
TOTAL_STEPS, RAND_RATIO = 12, 0.5
RAND_EPOCH = RAND_RATIO * TOTAL_STEPS  # torchrun_main.py:601; random when step >= it
LR, SCALE, EPS, WD = 0.01, 0.5, 1e-3, 0.1
B1, B2 = float(np.float32(0.9)), float(np.float32(0.999))  # as our optimizer holds them
# Our (in, out) kernels; the torch weights are their transposes: (16, 8) tall, (8, 16) wide.
SHAPES = {"tall": (8, 16), "wide": (16, 8), "square": (8, 8), "bias": (16,)}
MATRICES = ("tall", "wide", "square")
REFRESHES = range(0, STEPS, GAP)


def relative_error(got, expected) -> float:
  got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
  return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


def initial_params():
  rng = np.random.default_rng(0)
  return {k: (0.1 * rng.standard_normal(s)).astype(np.float32) for k, s in SHAPES.items()}


def gradients():
  rng = np.random.default_rng(1)
  return [
      {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
      for _ in range(STEPS)
  ]


@functools.cache
def run_ours():
  """Our GoLore over the steps: after each, the params and the low-rank state (NumPy)."""
  tx = lro.golore(
      LR,
      rank=RANK,
      update_proj_gap=GAP,
      scale=SCALE,
      b1=B1,
      b2=B2,
      eps=EPS,
      weight_decay=WD,
      total_steps=TOTAL_STEPS,
      rand_ratio=RAND_RATIO,
  )
  params = jax.tree.map(jnp.asarray, initial_params())
  state, update, history = tx.init(params), jax.jit(tx.update), []
  for g in gradients():
    updates, state = update(jax.tree.map(jnp.asarray, g), state, params)
    params = optax.apply_updates(params, updates)
    lowrank = state[0].inner_states["projected"].inner_state  # the module docstring's path
    assert isinstance(lowrank, lro.ScaleByLowRankAdamState)
    snapshot = {"params": params, **lowrank._asdict()}
    history.append(jax.tree.map(np.asarray, snapshot))
  return history


# --- the reference, on the torch layout: a weight (out, in), its gradient G -----------------


def side_of(shape) -> str:
  """``proj_type="std"``: the right (``G B^T``) when out >= in, else the left (``A^T G``)."""
  return "right" if shape[0] >= shape[1] else "left"


def canonical_columns(q):
  """Each column flipped so that its largest-magnitude entry is positive (our convention)."""
  largest = q[np.argmax(np.abs(q), axis=0), np.arange(q.shape[1])]
  return q * np.where(largest < 0, -1.0, 1.0)


def svd_basis(g, side):
  """The top-r singular vectors: ``A = U[:, :r]`` (m x r) or ``B = Vh[:r]`` (r x n)."""
  u, _, vh = np.linalg.svd(g, full_matrices=False)
  return canonical_columns(u[:, :RANK]) if side == "left" else canonical_columns(vh[:RANK].T).T


def project(g, basis, side):
  return basis.T @ g if side == "left" else g @ basis.T


def project_back(n, basis, side):
  return basis @ n if side == "left" else n @ basis


def change_basis(m, new, old, side):
  """The first moment carried to the new basis: ``A_new^T A_old M`` or ``M B_old B_new^T``."""
  return new.T @ old @ m if side == "left" else m @ old @ new.T


def orthonormality_error(basis, side) -> float:
  gram = basis.T @ basis if side == "left" else basis @ basis.T
  return float(np.abs(gram - np.eye(RANK)).max())


def reference_golore(grads, random_bases, decay_updated_parameter=False):
  """GoLore-AdamW's step on every weight; returns, after each step, per name,
  ``{"weight", "basis", "m", "v"}`` (torch layout, float64; ``basis`` None for the bias).

  ``random_bases[t][name]`` is the projector of a random refresh at step ``t``.
  """
  weights = {k: np.asarray(w, np.float64).T for k, w in initial_params().items()}
  state = {k: {"basis": None, "m": None, "v": None} for k in SHAPES}
  history = []
  for t, step_grads in enumerate(grads):
    for name, grad in step_grads.items():
      s, g = state[name], np.asarray(grad, np.float64).T
      m_carried, store_m = s["m"], True
      if name in MATRICES:
        side = side_of(g.shape)
        if s["basis"] is None or t % GAP == 0:
          new = random_bases[t][name] if t >= RAND_EPOCH else svd_basis(g, side)
          if s["basis"] is not None:
            # The step uses the carried moment; the state keeps the old one (a local rebinding).
            m_carried, store_m = change_basis(s["m"], new, s["basis"], side), False
          s["basis"] = new
        g = project(g, s["basis"], side)
      if s["m"] is None:
        s["m"] = s["v"] = m_carried = np.zeros_like(g)
      m = B1 * m_carried + (1 - B1) * g
      s["v"] = B2 * s["v"] + (1 - B2) * g**2
      if store_m:
        s["m"] = m
      step_size = LR * math.sqrt(1 - B2 ** (t + 1)) / (1 - B1 ** (t + 1))
      direction = m / (np.sqrt(s["v"]) + EPS)
      if name in MATRICES:
        direction = SCALE * project_back(direction, s["basis"], side)
      if decay_updated_parameter:
        weights[name] = weights[name] - step_size * direction
        weights[name] = weights[name] - LR * WD * weights[name]
      else:
        weights[name] = weights[name] - step_size * direction - LR * WD * weights[name]
    history.append({k: {"weight": weights[k], **state[k]} for k in SHAPES})
  return history


def our_random_bases(ours):
  """Our projector at each random refresh, on the torch layout (the transpose)."""
  return {
      t: {name: ours[t]["projector"][name].T.astype(np.float64) for name in MATRICES}
      for t in REFRESHES
      if t >= RAND_EPOCH
  }


def test_golore_matches_the_reference_step_by_step_across_svd_and_random_refreshes():
  ours, grads = run_ours(), gradients()
  random_bases = our_random_bases(ours)
  assert sorted(random_bases) == [6, 8, 10]  # two SVD changes (2, 4), three random ones
  for t, bases in random_bases.items():
    for name, basis in bases.items():
      side = side_of(SHAPES[name][::-1])
      assert orthonormality_error(basis, side) < 1e-5, f"step {t}, {name}"
      svd = svd_basis(np.asarray(grads[t][name], np.float64).T, side)
      assert not np.allclose(np.abs(basis), np.abs(svd), atol=1e-2), f"step {t}, {name}: SVD"
  reference = reference_golore(grads, random_bases)
  initial = initial_params()
  for t, (got, expected) in enumerate(zip(ours, reference)):
    for name in SHAPES:
      change = got["params"][name] - initial[name]
      error = relative_error(change.T, expected[name]["weight"] - initial[name].T)
      assert error < 1e-5, f"step {t}, {name}: parameter change off by {error:.1e}"
    for name in MATRICES:
      for ours_key, key in (("projector", "basis"), ("mu", "m"), ("nu", "v")):
        error = relative_error(got[ours_key][name].T, expected[name][key])
        assert error < 1e-5, f"step {t}, {name}: {ours_key} off by {error:.1e}"


def test_a_projector_change_leaves_the_stored_first_moment_as_before_the_step():
  """adamw.py:108-114: the refresh step's update reads ``P_new^T P_old M``, the state keeps
  ``M`` (old basis, not decayed, without the step's gradient); the second moment moves on."""
  ours = run_ours()
  for t in REFRESHES[1:]:
    for name in MATRICES:
      np.testing.assert_array_equal(ours[t]["mu"][name], ours[t - 1]["mu"][name])
      assert not np.allclose(ours[t]["nu"][name], ours[t - 1]["nu"][name])
      assert not np.allclose(ours[t]["projector"][name], ours[t - 1]["projector"][name])
  for t in (1, 3, 7):  # between refreshes the first moment moves on
    assert not np.allclose(ours[t]["mu"]["tall"], ours[t - 1]["mu"]["tall"])


def test_weight_decay_departs_from_the_reference_only_at_order_lr_times_wd():
  """Ours decays the parameter before the step, the reference the updated one (adamw.py:150):
  ``(p - lr u)(1 - lr wd)`` differs from ``p - lr u - lr wd p`` by ``lr^2 wd u`` a step."""
  ours, grads = run_ours(), gradients()
  reference = reference_golore(grads, our_random_bases(ours), decay_updated_parameter=True)
  initial = initial_params()
  for name in SHAPES:
    change = ours[-1]["params"][name] - initial[name]
    error = relative_error(change.T, reference[-1][name]["weight"] - initial[name].T)
    assert 1e-5 < error < 2 * LR * WD, f"{name}: {error:.1e}"


def test_golore_defaults_are_the_references():
  """``GoLoreProjector(scale=1.0)`` (golore_projector.py:4, ``--scale 1.0`` in
  torchrun_main.py:135), ``AdamW``'s betas and eps (adamw.py:41-43), and script/Go_pt.sh's
  rank 128, gap 200 and ``--rand_ratio 0.8`` (torchrun_main.py's own default, 2, never turns
  random)."""
  defaults = {k: p.default for k, p in inspect.signature(lro.golore).parameters.items()}
  expected = dict(scale=1.0, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0, rank=128)
  assert {k: defaults[k] for k in expected} == expected
  assert defaults["update_proj_gap"] == 200 and defaults["rand_ratio"] == 0.8
