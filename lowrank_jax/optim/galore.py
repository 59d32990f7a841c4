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

from lowrank_jax.optim.docstrings import shared_args
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


@shared_args
def scale_by_galore(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 0.25,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    projection_mask=None,
    moment_dtype=None,
    options=None,
) -> optax.GradientTransformation:
  """GaLore's rescaling of the gradients (no learning rate, no weight decay).

  Args:
    {shared_args}
    scale: GaLore's ``alpha``, multiplies the projected-back update (>= 0).

  Returns:
    An ``optax.GradientTransformation``; its state is an ``optax.PartitionState``
    with ``inner_states["projected"]`` holding a
    :class:`~lowrank_jax.optim._projection.lowrank_adam.LowRankAdamState` and
    ``inner_states["dense"]`` a
    :class:`~lowrank_jax.optim.adam.FoldedAdamState`.
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


@shared_args
def galore(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 0.25,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    mask=None,
    projection_mask=None,
    moment_dtype=None,
    options=None,
) -> optax.GradientTransformation:
  """GaLore-AdamW: ``chain(scale_by_galore, add_decayed_weights, scale_by_learning_rate)``.

  Args:
    {alias_args}
    {shared_args}
    scale: GaLore's ``alpha`` (paper default 0.25).

  Returns:
    An ``optax.GradientTransformation``.
  """
  return with_decoupled_weight_decay(
      scale_by_galore(
          rank, update_proj_gap, scale, b1, b2, eps, projection_mask, moment_dtype, options
      ),
      learning_rate,
      weight_decay,
      mask,
  )
