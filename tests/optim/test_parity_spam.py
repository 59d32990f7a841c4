"""Parity of ``spam`` / ``stable_spam`` with pytorch_optimizer's SPAM / StableSPAM, whose
cosine schedules are patched to the authors' (:class:`AuthorsCosineDecay`).

The same gradient sequence (Gaussian, with injected spikes so that clipping
fires, and a leaf whose gradient is zero on some steps) runs through the torch
reference and through our transform for 16 steps with a reset every 5 steps,
so three resets are crossed. The parameter change must agree to 1e-4 relative
in float32, on tall, wide and square matrices plus a vector and a 3-D tensor.
Each test also checks that its clipping mattered: the reference with clipping
turned off ends elsewhere.
"""

import warnings

import jax
import numpy as np
import optax
import pytest

from lowrank_jax.optim import spam, stable_spam
from reference_packages import require

torch = require("torch")
reference = require("pytorch_optimizer")

SHAPES = {
    "tall": (6, 4),
    "wide": (4, 6),
    "square": (5, 5),
    "vector": (7,),
    "cube": (2, 3, 4),
    "sometimes_idle": (3,),
}
NUM_STEPS = 16
RESET_INTERVAL = 5
SPIKE_STEPS = (3, 8, 14)  # 1-based; clipping is active on these steps in both tests
IDLE_STEPS = (1, 9)  # steps on which "sometimes_idle" gets an all-zero gradient
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.01


def initial_params() -> dict[str, np.ndarray]:
  """N(0, 0.02) weights, as in LLaMA: small enough that float32 rounding of the
  weights (about 1e-9 here) stays far below 1e-4 of the ~1e-3 changes."""
  rng = np.random.default_rng(0)
  return {
      name: (0.02 * rng.normal(size=shape)).astype(np.float32) for name, shape in SHAPES.items()
  }


def gradient_sequence() -> list[dict[str, np.ndarray]]:
  """Gaussian gradients; on SPIKE_STEPS two entries per leaf are scaled by 1000."""
  rng = np.random.default_rng(1)
  sequence = []
  for step in range(1, NUM_STEPS + 1):
    grads = {}
    for name, shape in SHAPES.items():
      grad = rng.normal(size=shape).astype(np.float32)
      if step in SPIKE_STEPS:
        flat = grad.reshape(-1)
        flat[rng.choice(flat.size, size=2, replace=False)] *= 1000.0
      if name == "sometimes_idle" and step in IDLE_STEPS:
        grad = np.zeros_like(grad)
      grads[name] = grad
    sequence.append(grads)
  return sequence


def reference_change(optimizer_class, **kwargs) -> dict[str, np.ndarray]:
  """Parameter change after running the torch reference over the sequence."""
  start = initial_params()
  params = {name: torch.nn.Parameter(torch.tensor(value)) for name, value in start.items()}
  optimizer = optimizer_class(list(params.values()), foreach=False, **kwargs)
  for grads in gradient_sequence():
    for name, param in params.items():
      param.grad = torch.tensor(grads[name])
    optimizer.step()
  return {name: param.detach().numpy() - start[name] for name, param in params.items()}


def our_change(transform: optax.GradientTransformation) -> dict[str, np.ndarray]:
  """Parameter change after running our jitted transform over the sequence."""
  start = initial_params()
  params = jax.tree.map(jax.numpy.asarray, start)
  state = transform.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = transform.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for grads in gradient_sequence():
    params, state = step(params, state, grads)
  return {name: np.asarray(params[name]) - start[name] for name in start}


def assert_changes_match(ours, theirs, rtol=1e-4):
  """``rtol`` relative per entry; entries near zero are held to ``rtol`` of the leaf's scale."""
  for name in SHAPES:
    scale = np.abs(theirs[name]).max()
    np.testing.assert_allclose(ours[name], theirs[name], rtol=rtol, atol=rtol * scale, err_msg=name)


def assert_changes_differ(changes, other):
  assert any(not np.allclose(changes[n], other[n], rtol=1e-3) for n in SHAPES)


class AuthorsCosineDecay:
  """The authors' ``CosineDecay``: torch's closed-form ``CosineAnnealingLR(T_max = t_max + 1)``
  at epoch ``step`` (their ``stepper.step(step)``), which ``pytorch_optimizer`` replaces by
  a recursive update that runs a step ahead. SPAM's copy (para_eff_pt/pt_spam/SPAM.py)
  returns ``eta_min`` from ``t_max`` on; Stable-SPAM's (galore_torch/stablespam.py) does not."""

  def __init__(self, death_rate: float, t_max: int, eta_min: float = 0.0, floor: bool = True):
    self.sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=death_rate)
    self.stepper = torch.optim.lr_scheduler.CosineAnnealingLR(self.sgd, t_max + 1, eta_min)
    self.t_max, self.eta_min, self.floor = t_max, eta_min, floor

  def get_death_rate(self, step: int) -> float:
    if self.floor and step >= self.t_max:
      return self.eta_min
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # torch deprecates step(epoch), which the authors use
      self.stepper.step(step)
    return self.sgd.param_groups[0]["lr"]


@pytest.fixture(autouse=True)
def authors_cosine_decay(monkeypatch):
  """pytorch_optimizer's SPAM with the authors' re-warmup (it recreates it at each reset)."""
  monkeypatch.setattr(reference.optimizer.spam, "CosineDecay", AuthorsCosineDecay)


SPAM_SETTINGS = dict(warmup_steps=3, spike_grace_steps=2)


def reference_spam(spike_threshold: float) -> dict[str, np.ndarray]:
  return reference_change(
      reference.SPAM,
      lr=LEARNING_RATE,
      betas=(0.9, 0.999),
      eps=1e-6,
      weight_decay=WEIGHT_DECAY,
      density=1.0,
      threshold=spike_threshold,
      update_proj_gap=RESET_INTERVAL,
      warmup_epoch=SPAM_SETTINGS["warmup_steps"],
      grad_accu_steps=SPAM_SETTINGS["spike_grace_steps"],
  )


@pytest.mark.parametrize("spike_threshold", [5000.0, 0.0])
def test_spam_matches_pytorch_optimizer(spike_threshold):
  ours = our_change(
      spam(
          LEARNING_RATE,
          weight_decay=WEIGHT_DECAY,
          spike_threshold=spike_threshold,
          reset_interval=RESET_INTERVAL,
          **SPAM_SETTINGS,
      )
  )
  assert_changes_match(ours, reference_spam(spike_threshold))


def test_spam_spike_clipping_triggers():
  assert_changes_differ(reference_spam(5000.0), reference_spam(0.0))


def reference_stable_spam(theta: float) -> dict[str, np.ndarray]:
  return reference_change(
      reference.StableSPAM,
      lr=LEARNING_RATE,
      betas=(0.9, 0.999),
      eps=1e-8,
      weight_decay=WEIGHT_DECAY,
      gamma1=0.7,
      gamma2=0.9,
      theta=theta,
      update_proj_gap=RESET_INTERVAL,
  )


@pytest.mark.parametrize("theta", [0.999, 0.0])
def test_stable_spam_matches_pytorch_optimizer(theta):
  ours = our_change(
      stable_spam(
          LEARNING_RATE,
          weight_decay=WEIGHT_DECAY,
          gamma1=0.7,
          gamma2=0.9,
          theta=theta,
          reset_interval=RESET_INTERVAL,
      )
  )
  assert_changes_match(ours, reference_stable_spam(theta))


def test_stable_spam_adaptive_clipping_triggers():
  assert_changes_differ(reference_stable_spam(0.999), reference_stable_spam(0.0))


DECAY_STEPS = 12  # shorter than the run: the factor passes its floor and rises again


def test_stable_spam_momentum_decay_matches_the_authors_cosine():
  def with_authors_decay(params, **kwargs):
    optimizer = reference.StableSPAM(params, t_max=DECAY_STEPS, eta_min=0.5, **kwargs)
    optimizer.warmup = AuthorsCosineDecay(1.0, DECAY_STEPS, eta_min=0.5, floor=False)
    return optimizer

  settings = dict(weight_decay=WEIGHT_DECAY, gamma1=0.85, gamma2=0.999, theta=0.999)
  theirs = reference_change(
      with_authors_decay, lr=LEARNING_RATE, update_proj_gap=RESET_INTERVAL, **settings
  )
  ours = our_change(
      stable_spam(
          LEARNING_RATE,
          reset_interval=RESET_INTERVAL,
          total_steps=DECAY_STEPS,
          eta_min=0.5,
          **settings,
      )
  )
  assert_changes_match(ours, theirs, rtol=1e-5)
  without_decay = stable_spam(LEARNING_RATE, reset_interval=RESET_INTERVAL, **settings)
  assert_changes_differ(ours, our_change(without_decay))


def authors_stable_spam_change(decay_steps, gamma1, gamma2, theta, eta_min=0.5, eps=1e-8):
  """TianjinYellow/StableSPAM ``StableSPAM.step`` restated in float64 NumPy, slips included:
  ``exp_avg`` is bound before the reset, so the reset step updates and uses the old moments
  (bias correction of step 1) and the state keeps zeros; the per-parameter ``step`` that the
  reset sets to 1 also drives the bias corrections of the max and norm statistics."""
  b1, b2 = 0.9, 0.999
  params = {k: v.astype(np.float64) for k, v in initial_params().items()}
  state = {k: dict(step=0, m=0.0, v=0.0, m_max=0.0, m_norm=0.0, v_norm=0.0) for k in params}
  for total, grads in enumerate(gradient_sequence(), start=1):
    angle = np.pi * total / (decay_steps + 1)
    scale = eta_min + (1 - eta_min) * 0.5 * (1 + np.cos(angle))
    for name, p in params.items():
      s, g = state[name], grads[name].astype(np.float64).copy()
      p *= 1 - LEARNING_RATE * WEIGHT_DECAY
      exp_avg, exp_avg_sq = s["m"], s["v"]
      max_gradient = np.abs(g).max()
      s["step"] += 1
      s["m_max"] = theta * s["m_max"] + (1 - theta) * max_gradient
      m_max_hat = s["m_max"] / (1 - theta ** s["step"])
      mask = np.abs(g) > m_max_hat
      g[mask] = g[mask] / max_gradient * m_max_hat
      norm = np.linalg.norm(g)
      s["m_norm"] = gamma1 * scale * s["m_norm"] + (1 - gamma1 * scale) * norm
      s["v_norm"] = gamma2 * s["v_norm"] + (1 - gamma2) * norm**2
      m_norm_hat = s["m_norm"] / (1 - (gamma1 * scale) ** s["step"])
      v_norm_hat = s["v_norm"] / (1 - gamma2 ** s["step"])
      if norm > 0:
        g = g / norm * (m_norm_hat / (np.sqrt(v_norm_hat) + eps))
      if total % RESET_INTERVAL == 0:
        s["m"], s["v"], s["step"] = 0.0, 0.0, 1
      beta1 = b1 * scale
      exp_avg = beta1 * exp_avg + (1 - beta1) * g
      exp_avg_sq = b2 * exp_avg_sq + (1 - b2) * g * g
      if total % RESET_INTERVAL:
        s["m"], s["v"] = exp_avg, exp_avg_sq
      denom = np.sqrt(exp_avg_sq) / np.sqrt(1 - b2 ** s["step"]) + eps
      p -= LEARNING_RATE / (1 - beta1 ** s["step"]) * exp_avg / denom
  start = initial_params()
  return {name: (params[name] - start[name]).astype(np.float32) for name in params}


def test_stable_spam_authors_resets_match_the_authors_code():
  settings = dict(gamma1=0.85, gamma2=0.999, theta=0.999)
  theirs = authors_stable_spam_change(DECAY_STEPS, **settings)
  ours = our_change(
      stable_spam(
          LEARNING_RATE,
          weight_decay=WEIGHT_DECAY,
          reset_interval=RESET_INTERVAL,
          total_steps=DECAY_STEPS,
          authors_resets=True,
          **settings,
      )
  )
  assert_changes_match(ours, theirs, rtol=1e-5)
  corrected = stable_spam(
      LEARNING_RATE,
      weight_decay=WEIGHT_DECAY,
      reset_interval=RESET_INTERVAL,
      total_steps=DECAY_STEPS,
      **settings,
  )
  assert_changes_differ(ours, our_change(corrected))
