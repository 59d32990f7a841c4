r"""GaLore: Adam on gradients projected onto their top singular subspace.

For each projected matrix ``G`` (see :mod:`lowrank_jax.optim._projection.projection` for
the side rule and the refresh), with ``R = P^T G`` and Adam moments on ``R``:

.. math::
  N = \frac{M}{\sqrt{V} + \epsilon}, \qquad
  u = \alpha\, \frac{\sqrt{1 - b_2^t}}{1 - b_1^t}\, P N,

and the parameter moves by ``-lr * u`` (plus decoupled weight decay). State per
``m x n`` matrix: a ``min(m, n) x r`` projector and two ``max(m, n) x r``
moments. This reproduces ``galore_torch.GaLoreAdamW`` (``proj_type="std"``),
up to the sign convention of the singular vectors, which this library fixes.

References:
  Zhao et al., GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
  Projection, ICML 2024, https://arxiv.org/abs/2403.03507

>>> import jax, jax.numpy as jnp, optax
>>> params = {"w": jnp.ones((8, 16)), "b": jnp.zeros(16)}
>>> tx = galore(learning_rate=0.01, rank=2, update_proj_gap=4)
>>> state = tx.init(params)
>>> grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(0), p.shape), params)
>>> updates, state = jax.jit(tx.update)(grads, state, params)
>>> jax.tree.map(jnp.shape, updates)
{'b': (16,), 'w': (8, 16)}
"""

import optax

from lowrank_jax.optim._projection.lowrank_adam import (
    LowRankStep,
    scale_by_projected_method,
)
from lowrank_jax.optim.adam import with_decoupled_weight_decay
from lowrank_jax.optim._checks import check_range


def galore_method(scale):
  """GaLore's update from a projected step: ``scale * P N``."""

  def method(step: LowRankStep):
    return scale * step.project_back(step.direction), step.norm

  return method


def scale_by_galore(
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
) -> optax.GradientTransformation:
  r"""GaLore's rescaling of the gradients (no learning rate, no weight decay).

  For each projected matrix ``G``, with the projector ``P`` refreshed to the top-``r``
  singular vectors of ``G`` every ``update_proj_gap`` steps and ``R = P^T G``:

  .. math::
    M \leftarrow b_1 M + (1 - b_1) R, \quad V \leftarrow b_2 V + (1 - b_2) R^2, \quad
    u = \alpha\, \frac{\sqrt{1 - b_2^t}}{1 - b_1^t}\, P \frac{M}{\sqrt{V} + \epsilon};

  the other leaves get the references' Adam (:func:`~lowrank_jax.optim.scale_by_folded_adam`)
  with the same ``b1``, ``b2``, ``eps``.

  Args:
    rank: projection rank ``r`` (a Python int), at most the smaller side of every projected
      matrix (checked at init). Shapes depend on it: with ``optax.inject_hyperparams`` list it
      (and ``update_proj_gap``) in ``static_args``.
    update_proj_gap: refresh the projectors every this many steps (Python int >= 1).
    scale: GaLore's ``alpha``, multiplies the projected-back update (>= 0; the paper's 0.25).
    b1: Adam's first-moment decay, in [0, 1).
    b2: Adam's second-moment decay, in [0, 1).
    eps: added to ``sqrt(V)`` (the references' placement), >= 0.
    projection_mask: which leaves are projected: None (every leaf with ndim >= 2), a pytree of
      bools, or a callable on the params.
    moment_dtype: storage dtype of all Adam moments (e.g. ``jnp.bfloat16``); None keeps each
      parameter's dtype. Arithmetic and SVDs are float32.
    options: :class:`~lowrank_jax.optim.ProjectionOptions` (side rule, dimension numbers,
      refresh method, moment policy, staggering, seed, projector dtype); None: GaLore's
      defaults (``refresh="svd"``, ``moment_policy="keep"``).

  Returns:
    An ``optax.GradientTransformation``; its state is an ``optax.PartitionState`` with
    ``inner_states["projected"]`` holding a :class:`~lowrank_jax.optim.ScaleByLowRankAdamState`
    and ``inner_states["dense"]`` a :class:`~lowrank_jax.optim.ScaleByFoldedAdamState`.

  >>> import jax.numpy as jnp
  >>> state = scale_by_galore(rank=2).init({"w": jnp.ones((8, 16))})
  >>> state.inner_states["projected"].inner_state.mu["w"].shape
  (2, 16)
  """
  check_range("scale", scale, 0.0)
  return scale_by_projected_method(
      galore_method(scale),
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
  )


def galore(
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
) -> optax.GradientTransformation:
  r"""GaLore-AdamW: ``chain(scale_by_galore, add_decayed_weights, scale_by_learning_rate)``.

  The parameter moves by ``-learning_rate * (u + weight_decay * p)`` with ``u`` the update of
  :func:`scale_by_galore`:

  .. math::
    u = \alpha\, \frac{\sqrt{1 - b_2^t}}{1 - b_1^t}\, P \frac{M}{\sqrt{V} + \epsilon}.

  Args:
    learning_rate: a float or an optax schedule.
    rank: projection rank ``r`` (a Python int), at most the smaller side of every projected
      matrix.
    update_proj_gap: refresh the projectors every this many steps (Python int >= 1).
    scale: GaLore's ``alpha`` (the paper's 0.25), >= 0.
    b1: Adam's first-moment decay, in [0, 1).
    b2: Adam's second-moment decay, in [0, 1).
    eps: added to ``sqrt(V)`` (the references' placement), >= 0.
    weight_decay: decoupled weight decay (``p -= lr * wd * p``), >= 0.
    mask: the leaves weight decay applies to, as optax's ``mask``; None decays every leaf, as
      the references.
    projection_mask: which leaves are projected: None (every leaf with ndim >= 2), a pytree of
      bools, or a callable on the params; the others get the references' Adam.
    moment_dtype: storage dtype of all Adam moments; None keeps each parameter's dtype.
    options: :class:`~lowrank_jax.optim.ProjectionOptions`; None: GaLore's defaults.

  Returns:
    An ``optax.GradientTransformation``.
  """
  return with_decoupled_weight_decay(
      scale_by_galore(
          rank,
          update_proj_gap,
          scale,
          b1=b1,
          b2=b2,
          eps=eps,
          projection_mask=projection_mask,
          moment_dtype=moment_dtype,
          options=options,
      ),
      learning_rate,
      weight_decay,
      mask,
  )
