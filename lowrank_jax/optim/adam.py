r"""Adam with the bias correction folded into the step size (the references' AdamW).

The GaLore-family references (galore-torch, fira, apollo-torch) all share one
Adam variant, which differs from ``optax.scale_by_adam`` in where ``eps`` sits:

.. math::
  m_t = b_1 m_{t-1} + (1 - b_1) g_t, \qquad
  v_t = b_2 v_{t-1} + (1 - b_2) g_t^2, \\
  u_t = \frac{\sqrt{1 - b_2^t}}{1 - b_1^t} \cdot \frac{m_t}{\sqrt{v_t} + \epsilon}.

``optax.scale_by_adam`` instead divides by ``sqrt(v_t / (1 - b_2^t)) + eps``.
The leaves a low-rank method does not project use this transform, so that the
whole optimizer reproduces the references (arXiv 2505.22922, methods survey).

>>> import jax.numpy as jnp
>>> tx = scale_by_folded_adam(b1=0.9, b2=0.999, eps=1e-6)
>>> params = {"b": jnp.zeros(3)}
>>> updates, state = tx.update({"b": jnp.array([1.0, -2.0, 0.5])}, tx.init(params))
>>> [round(float(x), 4) for x in updates["b"]]
[1.0, -1.0, 1.0]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lowrank_jax.optim.tree_utils import map_unzip
from lowrank_jax.optim._renamed import renamed_attributes
from lowrank_jax.optim._checks import check_range


class ScaleByFoldedAdamState(NamedTuple):
  """State of :func:`scale_by_folded_adam`.

  Attributes:
    count: int32 scalar, the number of updates applied so far.
    mu: first moments, one array per parameter with its shape, dtype
      ``moment_dtype`` (default: the parameter's dtype).
    nu: second moments, same shapes and dtypes as ``mu``.
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def check_adam_hyperparameters(b1, b2, eps) -> None:
  """Validates Adam's betas and epsilon (Python numbers only)."""
  check_range("b1", b1, 0.0, 1.0)
  check_range("b2", b2, 0.0, 1.0)
  check_range("eps", eps, 0.0)


def bias_correction(count: jax.Array, b1, b2) -> jax.Array:
  """``sqrt(1 - b2^t) / (1 - b1^t)`` for step ``t = count + 1``, in float32."""
  t = (count + 1).astype(jnp.float32)
  return jnp.sqrt(1.0 - jnp.asarray(b2, jnp.float32) ** t) / (
      1.0 - jnp.asarray(b1, jnp.float32) ** t
  )


def update_moments(grad: jax.Array, mu: jax.Array, nu: jax.Array, b1, b2, eps):
  """One Adam moment update in float32.

  Returns ``(direction, mu, nu)`` where ``direction = mu / (sqrt(nu) + eps)``
  (without bias correction) and the new moments are still float32: the caller
  casts them to the storage dtype.
  """
  grad = grad.astype(jnp.float32)
  mu = b1 * mu.astype(jnp.float32) + (1.0 - b1) * grad
  nu = b2 * nu.astype(jnp.float32) + (1.0 - b2) * jnp.square(grad)
  return mu / (jnp.sqrt(nu) + eps), mu, nu


def scale_by_folded_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6, *, moment_dtype=None
) -> optax.GradientTransformation:
  """Rescales updates by the references' Adam (bias correction in the step size).

  Args:
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: added to ``sqrt(nu)`` before dividing (not bias corrected), >= 0.
    moment_dtype: storage dtype of ``mu`` and ``nu``; None keeps each
      parameter's dtype. The arithmetic is always float32.

  Returns:
    An ``optax.GradientTransformation`` whose updates have the gradients' dtypes.
  """
  check_adam_hyperparameters(b1, b2, eps)

  def init_fn(params):
    zeros = lambda p: jnp.zeros(p.shape, moment_dtype or p.dtype)
    return ScaleByFoldedAdamState(
        jnp.zeros([], jnp.int32), jax.tree.map(zeros, params), jax.tree.map(zeros, params)
    )

  def update_fn(updates, state, params=None):
    del params
    correction = bias_correction(state.count, b1, b2)

    def leaf_update(grad, mu, nu):
      direction, new_mu, new_nu = update_moments(grad, mu, nu, b1, b2, eps)
      return (
          (correction * direction).astype(grad.dtype),
          new_mu.astype(mu.dtype),
          new_nu.astype(nu.dtype),
      )

    new_updates, mu, nu = map_unzip(3, leaf_update, updates, state.mu, state.nu)
    return new_updates, ScaleByFoldedAdamState(optax.safe_increment(state.count), mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def with_decoupled_weight_decay(
    scale_by: optax.GradientTransformation, learning_rate, weight_decay, mask
) -> optax.GradientTransformation:
  """``chain(scale_by, add_decayed_weights(weight_decay, mask), scale_by_learning_rate(lr))``.

  The update is ``-lr * (u + weight_decay * p)``: AdamW's decoupled decay
  ``p -= lr * wd * p`` as in the references (which decay the already-updated
  parameter, a difference of order ``lr^2 * wd``).
  """
  check_range("weight_decay", weight_decay, 0.0)
  return optax.chain(
      scale_by,
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate),
  )


# The state's name before it followed optax's ``ScaleBy<Method>State``.
__getattr__ = renamed_attributes(__name__, {"FoldedAdamState": ScaleByFoldedAdamState})
