r"""SPAM: spike-aware Adam with momentum reset.

Huang, Zhu, Jin, Liu, Wang, Liu, "SPAM: Spike-Aware Adam with Momentum Reset
for Stable LLM Training", ICLR 2025, https://arxiv.org/abs/2501.06842. In the
benchmark of arXiv 2505.22922 it is a tuned full-rank baseline.

Per parameter leaf, with the 1-based step :math:`n`, reset interval :math:`T`,
re-warmup length :math:`W`, spike threshold :math:`\theta` and grace period
:math:`K`:

.. math::

  m, v &\leftarrow 0 \quad \text{if } n \bmod T = 0
      \qquad \text{(momentum reset, before anything else)} \\
  g_i &\leftarrow \operatorname{sign}(g_i) \sqrt{\theta v_i}
      \quad \text{where } g_i^2 > \theta v_i,
      \text{ if } \theta \neq 0,\ n \ge K,\ (n \bmod T) \ge K \\
  m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
  v \leftarrow \beta_2 v + (1 - \beta_2) g^2 \\
  u &= s_n \, \frac{\sqrt{1 - \beta_2^n}}{1 - \beta_1^n} \,
      \frac{m}{\sqrt{v} + \epsilon}

with the cosine re-warmup factor :math:`s_n = 1` before the first reset and,
from then on, with :math:`j = n \bmod T`,

.. math::

  s_n = \begin{cases}
    1 - 0.99 \cdot \tfrac12 \left(1 + \cos \dfrac{\pi j}{W + 1}\right) & j < W, \\
    1 & j \ge W,
  \end{cases}

which is 0.01 on a reset step and 1 from :math:`j = W` on. This is the authors'
``CosineDecay`` (``para_eff_pt/pt_spam/SPAM.py`` of the paper's repository: torch's
closed-form ``CosineAnnealingLR(T_max = W + 1).step(j)``, recreated at each reset);
``pytorch_optimizer.SPAM`` steps its scheduler once more per call and runs one step ahead
(about 0.076 on a reset step for :math:`W = 5`).

Order of operations, as in the authors' code and ``pytorch_optimizer.SPAM`` (4.1.0):

* the bias-correction step :math:`n` is global: a reset does *not* restart it
  (the re-warmup factor is what tames the first steps after a reset);
* :math:`\epsilon` is added to :math:`\sqrt{v}` outside the bias correction;
* the clip test uses the second moment *before* this step's update (zero on a
  reset step, which is why clipping waits :math:`K` steps after each reset).

Deliberate departures from the reference:

* weight decay (in :func:`spam`) is optax's: :math:`p \leftarrow p - \eta (u +
  \lambda p)`; the reference decays after the step, :math:`p \leftarrow (p -
  \eta u)(1 - \eta\lambda)`, which differs by the second-order term
  :math:`\eta^2 \lambda u`;
* no sparse momentum masks (the reference's ``density < 1``): SPAM here is a
  full-rank optimizer, equal to the reference with ``density=1``.

Example:

>>> import jax.numpy as jnp
>>> import optax
>>> from lowrank_jax.optim import spam
>>> params = {'w': jnp.ones((3, 2))}
>>> optimizer = spam(learning_rate=1e-3, reset_interval=100, warmup_steps=10)
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
from lowrank_jax.optim.adam import bias_correction, check_adam_hyperparameters, update_moments
from lowrank_jax.optim.adam import with_decoupled_weight_decay
from lowrank_jax.optim.tree_utils import map_unzip
from lowrank_jax.optim._checks import check_range

# The reference scales the step by 1 - _REWARMUP_DEPTH at the bottom of the
# cosine; the step on a reset step is therefore about 1% of the full one.
_REWARMUP_DEPTH = 0.99


class ScaleBySpamState(NamedTuple):
  """State of :func:`scale_by_spam`.

  Attributes:
    count: shape ``()``, int32: the number of updates taken (the global step,
      never reset).
    mu: first moments, a tree like the params, each leaf of its param's shape
      and of dtype ``moment_dtype`` (default: the param's dtype).
    nu: second moments, same shapes and dtypes as ``mu``.
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def rewarmup_factor(step: jax.Array, reset_interval: Any, warmup_steps: Any) -> jax.Array:
  """The cosine re-warmup factor :math:`s_n` of the 1-based ``step`` (float32 scalar).

  >>> import jax.numpy as jnp
  >>> [round(float(rewarmup_factor(jnp.asarray(n), 4, 2)), 4) for n in range(1, 8)]
  [1.0, 1.0, 1.0, 0.01, 0.2575, 1.0, 1.0]
  """
  steps_since_reset = step % reset_interval
  progress = steps_since_reset / (warmup_steps + 1)
  factor = 1.0 - _REWARMUP_DEPTH * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  rewarming = (step >= reset_interval) & (steps_since_reset < warmup_steps)
  return jnp.where(rewarming, factor, 1.0).astype(jnp.float32)


def scale_by_spam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    *,
    spike_threshold: float = 5000.0,
    reset_interval: int = 500,
    warmup_steps: int = 50,
    spike_grace_steps: int = 20,
    moment_dtype: Any = None,
) -> optax.GradientTransformation:
  r"""Rescales updates by SPAM: spike-clipped Adam with periodic momentum resets.

  The update is the :math:`u` of the module docstring, without learning rate
  and weight decay (see :func:`spam` for those).

  Args:
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: added to :math:`\sqrt{v}` in the denominator, >= 0.
    spike_threshold: :math:`\theta`: an entry with :math:`g^2 > \theta v` is a
      spike and is clipped to :math:`\operatorname{sign}(g)\sqrt{\theta v}`;
      0 turns clipping off. >= 0.
    reset_interval: :math:`T`: the moments are zeroed at steps
      :math:`T, 2T, \dots` (1-based), an integer >= 1.
    warmup_steps: :math:`W`: length of the cosine re-warmup of the step size
      after each reset, an integer >= 0.
    spike_grace_steps: :math:`K`: clipping is off for the first :math:`K`
      steps and for the first :math:`K` steps after each reset, while
      :math:`v` is too young to be a scale. An integer >= 2: with fewer, the
      first test would compare against :math:`v = 0` and zero the gradient
      (the reference accepts that and then stalls until the next reset).
    moment_dtype: dtype of both moments; ``None`` uses each param's dtype.
      The update itself is computed in float32.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ScaleBySpamState`.
  """
  check_adam_hyperparameters(b1, b2, eps)
  check_range("spike_threshold", spike_threshold, 0.0)
  spike_aware.check_step_count("reset_interval", reset_interval, minimum=1)
  spike_aware.check_step_count("warmup_steps", warmup_steps)
  spike_aware.check_step_count("spike_grace_steps", spike_grace_steps, minimum=2)
  spike_aware.check_moment_dtype(moment_dtype)

  def init_fn(params):
    moments = lambda: jax.tree.map(lambda p: spike_aware.init_moment(p, moment_dtype), params)
    return ScaleBySpamState(count=jnp.zeros([], jnp.int32), mu=moments(), nu=moments())

  def update_fn(updates, state, params=None):
    del params
    step = optax.safe_increment(state.count)
    reset = spike_aware.is_reset_step(step, reset_interval)
    clip = (
        (jnp.asarray(spike_threshold) != 0)
        & (step >= spike_grace_steps)
        & (step % reset_interval >= spike_grace_steps)
    )
    step_size = rewarmup_factor(step, reset_interval, warmup_steps) * bias_correction(
        state.count, b1, b2
    )

    def update_leaf(grad, mu, nu):
      g = grad.astype(jnp.float32)
      previous_nu = spike_aware.zeros_if(reset, nu).astype(jnp.float32)
      limit = spike_threshold * previous_nu
      g = jnp.where(clip & (jnp.square(g) > limit), jnp.sign(g) * jnp.sqrt(limit), g)
      direction, new_mu, new_nu = update_moments(
          g, spike_aware.zeros_if(reset, mu), previous_nu, b1, b2, eps
      )
      return (
          (step_size * direction).astype(grad.dtype),
          new_mu.astype(mu.dtype),
          new_nu.astype(nu.dtype),
      )

    updates, mu, nu = map_unzip(3, update_leaf, updates, state.mu, state.nu)
    return updates, ScaleBySpamState(count=step, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def spam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    *,
    weight_decay: float = 0.0,
    spike_threshold: float = 5000.0,
    reset_interval: int = 500,
    warmup_steps: int = 50,
    spike_grace_steps: int = 20,
    moment_dtype: Any = None,
    mask: Any = None,
) -> optax.GradientTransformation:
  r"""SPAM with decoupled weight decay: ``chain(scale_by_spam, add_decayed_weights, lr)``.

  The parameter moves by :math:`-\eta (u + \lambda p)`, with :math:`u` the update of
  :func:`scale_by_spam`, Adam on spike-clipped gradients with moment resets every :math:`T`
  steps and a cosine re-warmup :math:`s_n` of the step size after each:

  .. math::
    u = s_n \, \frac{\sqrt{1 - \beta_2^n}}{1 - \beta_1^n} \, \frac{m}{\sqrt{v} + \epsilon}.

  Defaults are the authors' ``SPAM`` class defaults (``pytorch_optimizer.SPAM``'s too). The
  weight decay is multiplied by the learning rate, not by the re-warmup factor.

  Args:
    learning_rate: a float or an optax schedule :math:`\eta` (> 0).
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: added to :math:`\sqrt{v}` in the denominator, >= 0.
    weight_decay: :math:`\lambda`, decoupled weight decay (``p -= lr * wd * p``), >= 0.
    spike_threshold: :math:`\theta`: an entry with :math:`g^2 > \theta v` is clipped to
      :math:`\operatorname{sign}(g)\sqrt{\theta v}`; 0 turns clipping off. >= 0.
    reset_interval: :math:`T`: the moments are zeroed at steps :math:`T, 2T, \dots`, >= 1.
    warmup_steps: :math:`W`: length of the re-warmup after each reset, >= 0.
    spike_grace_steps: :math:`K`: no clipping for the first :math:`K` steps and the first
      :math:`K` after each reset, >= 2.
    moment_dtype: dtype of both moments; ``None`` uses each param's dtype.
    mask: the leaves weight decay applies to, as optax's ``mask``; None decays every leaf.

  Returns:
    An ``optax.GradientTransformation``.
  """
  spike_aware.check_learning_rate(learning_rate)
  spike_aware_update = scale_by_spam(
      b1,
      b2,
      eps,
      spike_threshold=spike_threshold,
      reset_interval=reset_interval,
      warmup_steps=warmup_steps,
      spike_grace_steps=spike_grace_steps,
      moment_dtype=moment_dtype,
  )
  return with_decoupled_weight_decay(spike_aware_update, learning_rate, weight_decay, mask)
