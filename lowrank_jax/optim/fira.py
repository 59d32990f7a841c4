r"""Fira: GaLore plus a scaled full-rank residual, under a norm-growth limiter.

With ``R = P^T G``, ``N = M / (sqrt(V) + eps)`` (no bias correction) and
``back(X) = alpha P X`` (arXiv 2505.22922, methods survey):

.. math::
  \phi = \frac{\|N\|_r}{\|R\|_r + 10^{-8}}, \qquad
  S = \phi \odot (G - \mathrm{back}(R)), \qquad
  u = \frac{\sqrt{1 - b_2^t}}{1 - b_1^t} \left(\mathrm{back}(N) + \mathrm{limit}_\gamma(S)\right),

where the norms run over the rank axis, so ``phi`` has one entry per row or
column of the kept axis (``max(m, n)`` entries with the ``"std"`` side), and
``limit`` is the norm-growth limiter
(:func:`~lowrank_jax.optim._projection.lowrank_adam.norm_growth_factor`, gamma 1.01); the
update costs two projection matmuls (see :func:`fira_method`). Extra
state: one float32 norm per matrix. This reproduces ``fira.FiraAdamW``; as
there, the residual is taken against ``alpha``-scaled ``back(R)``.

References:
  Chen et al., Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank
  Constraint?, https://arxiv.org/abs/2410.01623

>>> import jax, jax.numpy as jnp
>>> params = {"w": jnp.ones((3, 8, 16))}
>>> tx = fira(learning_rate=0.01, rank=2, update_proj_gap=4)
>>> state = tx.init(params)
>>> state[0].inner_states["projected"].inner_state.norm["w"].shape
(3,)
"""

import jax.numpy as jnp
import optax

from lowrank_jax.optim._projection import projection
from lowrank_jax.optim._projection.lowrank_adam import (
    LowRankStep,
    norm_growth_factor,
    scale_by_projected_method,
)
from lowrank_jax.optim.adam import with_decoupled_weight_decay
from lowrank_jax.optim._checks import check_range


def fira_method(scale, gamma):
  r"""Fira's update from a projected step, with two projection matmuls.

  ``phi`` scales the kept axis, so it commutes with ``P``; and since ``P`` has
  orthonormal columns and ``R = P^T G``, the residual's norm needs no
  back-projection:

  .. math::
    \|\phi (G - \alpha P R)\|^2 = \|\phi G\|^2 - (2\alpha - \alpha^2) \|\phi R\|^2,
    \qquad
    u = P\,\alpha (N - \phi R / c) + \phi G / c,

  with ``c`` the limiter's divisor: one back-projection instead of two.
  """

  def method(step: LowRankStep):
    rank_norm = lambda x: projection.rank_axis_norm(x, step.layout)
    phi = rank_norm(step.direction) / (rank_norm(step.projected) + 1e-8)
    grad = step.grad.astype(jnp.float32)
    squared = jnp.square(projection.matrix_norm(phi * grad, step.layout)) - (
        2 * scale - scale**2
    ) * jnp.square(projection.matrix_norm(phi * step.projected, step.layout))
    residual_norm = jnp.sqrt(jnp.maximum(squared, 0.0))
    factor = norm_growth_factor(residual_norm, step, gamma)
    weight = phi / jnp.expand_dims(factor, step.layout.matrix_axes)
    update = step.project_back(scale * (step.direction - weight * step.projected))
    return update + weight * grad, residual_norm / factor

  return method


def scale_by_fira(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 0.25,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    projection_mask=None,
    moment_dtype=None,
    options=None,
    gamma: float = 1.01,
) -> optax.GradientTransformation:
  r"""Fira's rescaling of the gradients (no learning rate, no weight decay).

  GaLore's step plus the residual ``G - alpha P R`` scaled by Adam's per-channel ratio
  ``phi = ||N||_r / (||R||_r + 1e-8)``, its norm growth limited to ``gamma`` per step:

  .. math::
    u = \frac{\sqrt{1 - b_2^t}}{1 - b_1^t} \left(\alpha P N
      + \mathrm{limit}_\gamma(\phi \odot (G - \alpha P R))\right),
    \qquad N = \frac{M}{\sqrt{V} + \epsilon}.

  Args:
    rank: projection rank ``r`` (a Python int), at most the smaller side of every projected
      matrix (checked at init); list it in ``static_args`` of ``optax.inject_hyperparams``.
    update_proj_gap: refresh the projectors every this many steps (Python int >= 1).
    scale: ``alpha``, multiplies the projected-back parts (>= 0; 0.0625 at 1B).
    b1: Adam's first-moment decay, in [0, 1).
    b2: Adam's second-moment decay, in [0, 1).
    eps: added to ``sqrt(V)`` (the references' placement), >= 0.
    projection_mask: which leaves are projected: None (every leaf with ndim >= 2), a pytree of
      bools, or a callable on the params; the others get the references' Adam.
    moment_dtype: storage dtype of all Adam moments; None keeps each parameter's dtype.
    options: :class:`~lowrank_jax.optim.ProjectionOptions` (its ``refresh`` must give an
      orthonormal projector, not ``"gaussian"``); None: ``refresh="svd"``,
      ``moment_policy="keep"``.
    gamma: the norm-growth limiter's maximal growth per step (>= 1; larger limits less).

  Returns:
    An ``optax.GradientTransformation`` (state as :func:`scale_by_galore`'s, with the
    limiter's norms in ``ScaleByLowRankAdamState.norm``).

  >>> import jax.numpy as jnp
  >>> state = scale_by_fira(rank=2).init({"w": jnp.ones((3, 8, 16))})
  >>> state.inner_states["projected"].inner_state.norm["w"].shape
  (3,)
  """
  check_range("scale", scale, 0.0)
  check_range("gamma", gamma, 1.0)
  if options is not None and options.refresh == "gaussian":
    raise ValueError(
        "fira needs an orthonormal projector, got refresh='gaussian'; use "
        "'svd', 'eigh', 'randomized' or 'orthonormal'."
    )
  return scale_by_projected_method(
      fira_method(scale, gamma),
      rank=rank,
      update_proj_gap=update_proj_gap,
      b1=b1,
      b2=b2,
      eps=eps,
      projection_mask=projection_mask,
      moment_dtype=moment_dtype,
      options=options,
      default_refresh="svd",
      default_moment_policy="keep",
      uses_norm=True,
  )


def fira(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 0.25,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    mask=None,
    projection_mask=None,
    moment_dtype=None,
    options=None,
    gamma: float = 1.01,
) -> optax.GradientTransformation:
  r"""Fira-AdamW: ``chain(scale_by_fira, add_decayed_weights, scale_by_learning_rate)``.

  The parameter moves by ``-learning_rate * (u + weight_decay * p)`` with ``u`` the update of
  :func:`scale_by_fira`:

  .. math::
    u = \frac{\sqrt{1 - b_2^t}}{1 - b_1^t} \left(\alpha P N
      + \mathrm{limit}_\gamma(\phi \odot (G - \alpha P R))\right).

  Args:
    learning_rate: a float or an optax schedule.
    rank: projection rank ``r`` (a Python int), at most the smaller side of every projected
      matrix.
    update_proj_gap: refresh the projectors every this many steps (Python int >= 1).
    scale: ``alpha`` (0.25 by default, 0.0625 at 1B), >= 0.
    b1: Adam's first-moment decay, in [0, 1).
    b2: Adam's second-moment decay, in [0, 1).
    eps: added to ``sqrt(V)`` (the references' placement), >= 0.
    weight_decay: decoupled weight decay (``p -= lr * wd * p``), >= 0.
    mask: the leaves weight decay applies to, as optax's ``mask``; None decays every leaf.
    projection_mask: which leaves are projected (None: every leaf with ndim >= 2).
    moment_dtype: storage dtype of all Adam moments; None keeps each parameter's dtype.
    options: :class:`~lowrank_jax.optim.ProjectionOptions` (an orthonormal ``refresh``).
    gamma: the norm-growth limiter's maximal growth per step (>= 1).

  Returns:
    An ``optax.GradientTransformation``.
  """
  return with_decoupled_weight_decay(
      scale_by_fira(
          rank,
          update_proj_gap,
          scale,
          b1=b1,
          b2=b2,
          eps=eps,
          projection_mask=projection_mask,
          moment_dtype=moment_dtype,
          options=options,
          gamma=gamma,
      ),
      learning_rate,
      weight_decay,
      mask,
  )
