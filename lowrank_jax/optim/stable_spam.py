r"""Stable-SPAM: Adam with adaptive spike clipping, gradient-norm scaling and resets.

Huang, Hu, Zhang, Jin, Li, Shen, Chen, Liu, Wen, Wang, Liu, "Stable-SPAM: How
to Train in 4-Bit More Stably than 16-Bit Adam", ICML 2025,
https://arxiv.org/abs/2502.17055. In the benchmark of arXiv 2505.22922 it is a
tuned full-rank baseline.

Per parameter leaf (each leaf keeps its own three scalar statistics), with the
1-based global step :math:`n`, reset interval :math:`T` and the step since the
last reset :math:`t` (:math:`t = n` before the first reset, then
:math:`t = (n \bmod T) + 1`):

.. math::

  m, v &\leftarrow 0 \quad \text{if } n \bmod T = 0
      \qquad \text{(reset of the Adam moments and of their bias correction)} \\
  a &= \max_i |g_i|, \qquad
  \bar a \leftarrow \theta \bar a + (1 - \theta) a, \qquad
  \hat a = \bar a / (1 - \theta^n) \\
  g_i &\leftarrow g_i \, \hat a / a \quad \text{where } |g_i| > \hat a
      \qquad \text{(AdaClip)} \\
  \nu &= \lVert g \rVert_2, \quad
  \mu_n \leftarrow \gamma_1 \mu_n + (1 - \gamma_1) \nu, \quad
  \sigma_n \leftarrow \gamma_2 \sigma_n + (1 - \gamma_2) \nu^2 \\
  g &\leftarrow \frac{g}{\nu} \cdot
      \frac{\mu_n / (1 - \gamma_1^n)}{\sqrt{\sigma_n / (1 - \gamma_2^n)} + \epsilon}
      \qquad \text{(AdaGN)} \\
  m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
  v \leftarrow \beta_2 v + (1 - \beta_2) g^2 \\
  u &= \frac{1}{1 - \beta_1^t} \, \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon}

**Momentum decay.** With ``total_steps`` (the reference's ``total_T``) set, :math:`\beta_1`
and :math:`\gamma_1` above are multiplied, on step :math:`n`, by

.. math::

  c_n = \eta_\text{min} + (1 - \eta_\text{min}) \, \tfrac12
        \left(1 + \cos \frac{\pi n}{T_\text{total} + 1}\right),

which takes them from their full value towards :math:`\eta_\text{min}` (0.5) times it over
training; the bias corrections use the decayed values, :math:`1 - (c_n \gamma_1)^n` and
:math:`1 - (c_n \beta_1)^t`. This is the closed form the authors' ``CosineDecay`` evaluates
(``CosineAnnealingLR.step(n)`` with ``T_max = total_T + 1``; like theirs, it rises again
past :math:`T_\text{total} + 1`). ``pytorch_optimizer.StableSPAM(t_max=...)`` steps its
scheduler differently and lands on other values, so the tests check this form against a
NumPy transcription of the authors' code.

A leaf whose clipped gradient is all zeros (:math:`\nu = 0`) gets a zero
update and keeps :math:`\mu_n, \sigma_n, m, v` (only :math:`\bar a` moves), as
in the reference.

Order of operations, as in ``pytorch_optimizer.StableSPAM`` (4.1.0), which corrects two
slips of the authors' code (TianjinYellow/StableSPAM, ``galore_torch/stablespam.py``;
``authors_resets=True`` restores them, see ``lowrank_jax/optim/README.md``):

* the "full reset" zeroes :math:`m, v` and restarts their bias correction
  (:math:`t = 1` on a reset step); the norm statistics
  :math:`\bar a, \mu_n, \sigma_n` and their bias corrections (global :math:`n`)
  run on;
* :math:`\epsilon` is added to the bias-corrected :math:`\sqrt{\hat v}`
  (textbook Adam), unlike SPAM;
* weight decay, in :func:`stable_spam`, acts on the weights before the step,
  which is exactly optax's ``add_decayed_weights``.

Defaults are the authors' ``StableSPAM`` class defaults (:math:`\gamma_1 = 0.7`,
:math:`\gamma_2 = 0.9`, :math:`\theta = 0.999`, :math:`\epsilon = 10^{-8}`, no momentum
decay, ``update_proj_gap`` 1000). The paper's arguments (``para_eff_pt/utils/args.py``:
:math:`\gamma_1 = 0.85`, :math:`\gamma_2 = 0.999`, ``total_T`` 20000, ``--update_gap`` 500,
:math:`\eta_\text{min} = 0.5`) are in ``experiments/configs/``.

Example:

>>> import jax.numpy as jnp
>>> import optax
>>> from lowrank_jax.optim import stable_spam
>>> params = {'w': jnp.ones((3, 2))}
>>> optimizer = stable_spam(learning_rate=1e-3)
>>> state = optimizer.init(params)
>>> grads = {'w': jnp.full((3, 2), 0.5)}
>>> updates, state = optimizer.update(grads, state, params)
>>> params = optax.apply_updates(params, updates)
>>> params['w'][0, 0]
Array(0.999, dtype=float32)
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lowrank_jax.optim import spike_aware
from lowrank_jax.optim.adam import check_adam_hyperparameters, update_moments
from lowrank_jax.optim.adam import with_decoupled_weight_decay
from lowrank_jax.optim.tree_utils import map_unzip
from lowrank_jax.optim._checks import check_range


class ScaleByStableSpamState(NamedTuple):
  """State of :func:`scale_by_stable_spam`.

  Attributes:
    count: shape ``()``, int32: the number of updates taken (the global step
      :math:`n`, never reset).
    mu: first moments :math:`m`, a tree like the params, each leaf of its
      param's shape and of dtype ``moment_dtype`` (default: the param's dtype).
    nu: second moments :math:`v`, same shapes and dtypes as ``mu``.
    max_abs_ema: :math:`\\bar a`, a tree like the params of shape-``()``
      scalars in float32: EMA of
      :math:`\\max |g|`.
    norm_ema: :math:`\\mu_n`, same layout: EMA of the clipped gradient norm.
    norm_sq_ema: :math:`\\sigma_n`, same layout: EMA of its square.
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  max_abs_ema: optax.Updates
  norm_ema: optax.Updates
  norm_sq_ema: optax.Updates


def momentum_decay(step: jax.Array, total_steps: int | None, eta_min: float) -> jax.Array:
  """The factor :math:`c_n` of the 1-based ``step`` (float32; 1 without ``total_steps``).

  >>> import jax.numpy as jnp
  >>> [round(float(momentum_decay(jnp.asarray(n), 9, 0.5)), 3) for n in (0, 5, 10, 15)]
  [1.0, 0.75, 0.5, 0.75]
  """
  if total_steps is None:
    return jnp.ones([], jnp.float32)
  angle = jnp.pi * step.astype(jnp.float32) / (total_steps + 1)
  return eta_min + (1.0 - eta_min) * 0.5 * (1.0 + jnp.cos(angle))


def scale_by_stable_spam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    gamma1: float = 0.7,
    gamma2: float = 0.9,
    theta: float = 0.999,
    reset_interval: int = 1000,
    moment_dtype: Any = None,
    total_steps: int | None = None,
    eta_min: float = 0.5,
    authors_resets: bool = False,
) -> optax.GradientTransformation:
  r"""Rescales updates by Stable-SPAM (AdaClip, AdaGN, Adam with periodic reset).

  The update is the :math:`u` of the module docstring, without learning rate
  and weight decay (see :func:`stable_spam` for those).

  Args:
    b1: decay of Adam's first moment, in [0, 1).
    b2: decay of Adam's second moment, in [0, 1).
    eps: added in the Adam denominator and in the AdaGN ratio, >= 0.
    gamma1: decay of the EMA of the gradient norm (AdaGN), in [0, 1).
    gamma2: decay of the EMA of the squared gradient norm (AdaGN), in [0, 1).
    theta: decay of the EMA of :math:`\max |g|`, the adaptive clip level
      (AdaClip), in [0, 1); 0 turns clipping off.
    reset_interval: :math:`T`: Adam's moments and bias correction restart at
      steps :math:`T, 2T, \dots` (1-based), an integer >= 1.
    moment_dtype: dtype of Adam's moments; ``None`` uses each param's dtype.
      The scalar statistics are float32 and the update is computed in float32.
    total_steps: :math:`T_\text{total}` of the momentum decay (the reference's
      ``total_T``), an integer >= 1; ``None`` (the reference's default) turns it off.
    eta_min: the factor :math:`\eta_\text{min}` the decay aims at, in [0, 1].
    authors_resets: reset as the authors' code does rather than as the module docstring
      says: the reset step updates and uses the *old* moments with Adam's bias correction
      of step 1 and leaves zeros in the state; the bias corrections of
      :math:`\bar a, \mu_n, \sigma_n` count the per-parameter step, which restarts at 1
      on each reset; a leaf whose gradient is all zero still updates every statistic.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ScaleByStableSpamState`.
  """
  check_adam_hyperparameters(b1, b2, eps)
  for name, value in (("gamma1", gamma1), ("gamma2", gamma2), ("theta", theta)):
    check_range(name, value, 0.0, 1.0)
  spike_aware.check_step_count("reset_interval", reset_interval, minimum=1)
  spike_aware.check_moment_dtype(moment_dtype)
  if total_steps is not None:
    spike_aware.check_step_count("total_steps", total_steps, minimum=1)
  check_range("eta_min", eta_min, 0.0, 1.0, include_high=True)

  def init_fn(params):
    moments = lambda: jax.tree.map(lambda p: spike_aware.init_moment(p, moment_dtype), params)
    scalars = lambda: jax.tree.map(lambda p: jnp.zeros([], jnp.float32), params)
    return ScaleByStableSpamState(
        count=jnp.zeros([], jnp.int32),
        mu=moments(),
        nu=moments(),
        max_abs_ema=scalars(),
        norm_ema=scalars(),
        norm_sq_ema=scalars(),
    )

  def update_fn(updates, state, params=None):
    del params
    step = optax.safe_increment(state.count)
    reset = spike_aware.is_reset_step(step, reset_interval)
    if authors_resets:  # the per-parameter step: T + 1 at later resets, then 1
      statistics_step = jnp.where(step <= reset_interval, step, (step - 1) % reset_interval + 2)
      adam_step = jnp.where(reset, 1, statistics_step)
    else:
      statistics_step = step
      adam_step = jnp.where(step < reset_interval, step, step % reset_interval + 1)
    decay = momentum_decay(step, total_steps, eta_min)
    norm_decay, b1_now = gamma1 * decay, b1 * decay
    clip_level_correction = 1.0 - spike_aware.power(theta, statistics_step)
    norm_correction = 1.0 - spike_aware.power(norm_decay, statistics_step)
    norm_sq_correction = 1.0 - spike_aware.power(gamma2, statistics_step)
    step_size = 1.0 / (1.0 - spike_aware.power(b1_now, adam_step))
    nu_correction = jnp.sqrt(1.0 - spike_aware.power(b2, adam_step))

    def update_leaf(grad, mu, nu, max_abs_ema, norm_ema, norm_sq_ema):
      g = grad.astype(jnp.float32)
      max_abs = jnp.max(jnp.abs(g))
      max_abs_ema = theta * max_abs_ema + (1 - theta) * max_abs
      clip_level = max_abs_ema / clip_level_correction
      g = jnp.where(jnp.abs(g) > clip_level, g / max_abs * clip_level, g)

      norm = jnp.linalg.norm(g)
      active = norm > 0
      new_norm_ema = norm_decay * norm_ema + (1 - norm_decay) * norm
      new_norm_sq_ema = gamma2 * norm_sq_ema + (1 - gamma2) * jnp.square(norm)
      norm_scale = (new_norm_ema / norm_correction) / (
          jnp.sqrt(new_norm_sq_ema / norm_sq_correction) + eps
      )
      g = g / jnp.where(active, norm, 1.0) * norm_scale

      if authors_resets:  # the step uses the old moments; the state keeps zeros
        _, new_mu, new_nu = update_moments(g, mu, nu, b1_now, b2, eps)
        keep_if_idle = lambda new, old: new.astype(old.dtype)
        stored = lambda new, old: spike_aware.zeros_if(reset, new).astype(old.dtype)
        active = True
      else:
        mu, nu = spike_aware.zeros_if(reset, mu), spike_aware.zeros_if(reset, nu)
        _, new_mu, new_nu = update_moments(g, mu, nu, b1_now, b2, eps)
        keep_if_idle = lambda new, old: jnp.where(active, new, old).astype(old.dtype)
        stored = keep_if_idle
      update = step_size * new_mu / (jnp.sqrt(new_nu) / nu_correction + eps)
      return (
          jnp.where(active, update, 0.0).astype(grad.dtype),
          stored(new_mu, mu),
          stored(new_nu, nu),
          max_abs_ema,
          keep_if_idle(new_norm_ema, norm_ema),
          keep_if_idle(new_norm_sq_ema, norm_sq_ema),
      )

    updates, *statistics = map_unzip(
        6,
        update_leaf,
        updates,
        state.mu,
        state.nu,
        state.max_abs_ema,
        state.norm_ema,
        state.norm_sq_ema,
    )
    return updates, ScaleByStableSpamState(step, *statistics)

  return optax.GradientTransformation(init_fn, update_fn)


def stable_spam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    weight_decay: float = 0.0,
    gamma1: float = 0.7,
    gamma2: float = 0.9,
    theta: float = 0.999,
    reset_interval: int = 1000,
    moment_dtype: Any = None,
    mask: Any = None,
    total_steps: int | None = None,
    eta_min: float = 0.5,
    authors_resets: bool = False,
) -> optax.GradientTransformation:
  r"""Stable-SPAM with decoupled weight decay: ``chain(scale_by_stable_spam, decay, lr)``.

  The parameter moves by :math:`-\eta (u + \lambda p)`, with :math:`u` the update of
  :func:`scale_by_stable_spam`: Adam, restarted every :math:`T` steps, on gradients clipped
  to an EMA of their maximum (AdaClip) and rescaled to an EMA of their norm (AdaGN),

  .. math::
    u = \frac{1}{1 - \beta_1^t} \, \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon}.

  Args:
    learning_rate: a float or an optax schedule :math:`\eta` (> 0).
    b1: decay of Adam's first moment, in [0, 1).
    b2: decay of Adam's second moment, in [0, 1).
    eps: added in the Adam denominator and in the AdaGN ratio, >= 0.
    weight_decay: :math:`\lambda`, decoupled weight decay (``p -= lr * wd * p``), >= 0.
    gamma1: decay of the EMA of the gradient norm (AdaGN), in [0, 1).
    gamma2: decay of the EMA of the squared gradient norm (AdaGN), in [0, 1).
    theta: decay of the EMA of :math:`\max |g|` (AdaClip), in [0, 1); 0 turns clipping off.
    reset_interval: :math:`T`: Adam's moments and bias correction restart at steps
      :math:`T, 2T, \dots`, >= 1.
    moment_dtype: dtype of Adam's moments; ``None`` uses each param's dtype.
    mask: the leaves weight decay applies to, as optax's ``mask``; None decays every leaf.
    total_steps: :math:`T_\text{total}` of the momentum decay, >= 1; ``None`` turns it off.
    eta_min: the factor the momentum decay aims at, in [0, 1].
    authors_resets: reset as the authors' code does (see :func:`scale_by_stable_spam`).

  Returns:
    An ``optax.GradientTransformation``.
  """
  spike_aware.check_learning_rate(learning_rate)
  stabilized_update = scale_by_stable_spam(
      b1,
      b2,
      eps,
      gamma1=gamma1,
      gamma2=gamma2,
      theta=theta,
      reset_interval=reset_interval,
      moment_dtype=moment_dtype,
      total_steps=total_steps,
      eta_min=eta_min,
      authors_resets=authors_resets,
  )
  return with_decoupled_weight_decay(stabilized_update, learning_rate, weight_decay, mask)
