r"""APOLLO and APOLLO-Mini: the raw gradient rescaled by a low-rank Adam's ratio.

A random projection ``R = P^T G`` with ``P`` of i.i.d. ``N(0, 1/r)`` entries
(regenerated from a per-matrix key every ``update_proj_gap`` steps, not
stored unless ``store_projector``) feeds Adam moments as in GaLore; the update
is the full gradient rescaled by how much Adam rescaled ``R``:

.. math::
  s = \frac{\|N\|_r}{\|R\|_r + 10^{-8}} \text{ (channel-wise, APOLLO)} \quad\text{or}\quad
  s = \frac{\|N\|_F}{\|R\|_F + 10^{-8}} \text{ (tensor-wise, APOLLO-Mini)}, \\
  u = \frac{\sqrt{1 - b_2^t}}{1 - b_1^t}\, \sqrt{\mathrm{scale}}\; \mathrm{limit}_\gamma(s \odot G),

with Fira's norm-growth limiter (gamma 1.01), applied before the
``sqrt(scale)`` factor or, with ``scale_front=True``, after it. State per
``m x n`` matrix: two ``max(m, n) x r`` moments and one norm (no projector).

``projection="svd"`` uses GaLore's projector instead (stored, as in the
reference's ``proj="svd"``); with it, this reproduces ``apollo_torch.APOLLOAdamW``.
With ``"random"`` exact parity is impossible: the random streams differ.

References:
  Zhu et al., APOLLO: SGD-like Memory, AdamW-level Performance,
  https://arxiv.org/abs/2412.05270

>>> import jax, jax.numpy as jnp
>>> tx = apollo_mini(learning_rate=0.01)
>>> state = tx.init({"w": jnp.ones((8, 16))})
>>> state[0].inner_states["projected"].inner_state.mu["w"].shape
(1, 16)

A stored projector is the regenerated one, drawn only at its refreshes:

>>> stored = apollo(0.01, rank=2, store_projector=True).init({"w": jnp.ones((8, 16))})
>>> stored[0].inner_states["projected"].inner_state.projector["w"].shape
(8, 2)

>>> grads = [{"w": jax.random.normal(jax.random.key(i), (8, 16))} for i in range(3)]
>>> def updates(tx):
...     state, out = tx.init(grads[0]), []
...     for g in grads:
...         u, state = jax.jit(tx.update)(g, state, g)
...         out.append(u["w"])
...     return jnp.stack(out)
>>> bool(jnp.allclose(updates(apollo(0.01, rank=2, update_proj_gap=2, store_projector=True)),
...                   updates(apollo(0.01, rank=2, update_proj_gap=2)), atol=1e-6))
True
"""

import jax
import jax.numpy as jnp
import optax

from lowrank_jax.optim._projection import projection
from lowrank_jax.optim.docstrings import shared_args
from lowrank_jax.optim._projection.lowrank_adam import (
    LowRankStep,
    norm_growth_factor,
    scale_by_projected_method,
)
from lowrank_jax.optim.adam import with_decoupled_weight_decay
from lowrank_jax.optim._checks import check_choice, check_range

PROJECTIONS = {"random": "gaussian", "svd": "svd"}
APOLLO_ARGS = """\
projection: ``"random"`` (Gaussian, regenerated, not stored) or ``"svd"``
  (GaLore's projector, stored; the top singular subspace, computed through the
  Gram matrix's eigendecomposition on CPUs and NVIDIA GPUs).
scale_front: apply ``sqrt(scale)`` before the limiter (reference flag).
gamma: the norm-growth limiter's growth bound; None disables the limiter
  (the reference's ``disable_nl``).
store_projector: keep the random projector in the state, drawn only at its
  refreshes (as the reference), instead of regenerating it every step: faster
  (no per-step draw), ``p x r`` more floats per matrix."""
SCALE_TYPES = ("channel", "tensor")


def scaled_norm(factor: jax.Array, grad: jax.Array, layout: projection.MatrixLayout) -> jax.Array:
  r"""``||s ⊙ G||_F`` per matrix, without forming ``s ⊙ G``.

  The factor ``s`` is constant along the projected axis ``p`` (one ratio per
  kept channel ``k``, or one per matrix), so

  .. math::
    \|s \odot G\|_F^2 = \sum_k s_k^2 \sum_p G_{pk}^2,

  a reduction of ``G`` alone: the limiter then costs one read of the gradient
  instead of writing and reading the rescaled one.
  """
  channel_energy = jnp.sum(jnp.square(grad), axis=layout.projected_axis, keepdims=True)
  return jnp.sqrt(jnp.sum(jnp.square(factor) * channel_energy, axis=layout.matrix_axes))


def apollo_method(scale, scale_type: str, scale_front: bool, gamma):
  """APOLLO's update from a projected step (see the module docstring)."""

  def ratio(step: LowRankStep):
    if scale_type == "channel":
      norm = lambda x: projection.rank_axis_norm(x, step.layout)
    else:
      norm = lambda x: projection.matrix_norm(x, step.layout, keepdims=True)
    return norm(step.direction) / (norm(step.projected) + 1e-8)

  def method(step: LowRankStep):
    grad = step.grad.astype(jnp.float32)
    factor = ratio(step)
    root_scale = jnp.sqrt(jnp.asarray(scale, jnp.float32))
    if scale_front:
      factor = root_scale * factor
    norm = step.norm
    if gamma is not None:
      norm = scaled_norm(factor, grad, step.layout)
      growth = norm_growth_factor(norm, step, gamma)
      factor = factor / jnp.expand_dims(growth, step.layout.matrix_axes)
      norm = norm / growth
    return (factor if scale_front else root_scale * factor) * grad, norm

  return method


@shared_args(apollo_args=APOLLO_ARGS)
def scale_by_apollo(
    rank: int = 256,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    projection_mask=None,
    moment_dtype=None,
    options=None,
    projection: str = "random",
    scale_type: str = "channel",
    scale_front: bool = False,
    gamma: float | None = 1.01,
    store_projector: bool = False,
) -> optax.GradientTransformation:
  """APOLLO's rescaling of the gradients (no learning rate, no weight decay).

  Args:
    {shared_args}
    scale: the update is multiplied by ``sqrt(scale)`` (>= 0).
    scale_type: ``"channel"`` (one ratio per row/column) or ``"tensor"``.
    {apollo_args}

  Returns:
    An ``optax.GradientTransformation`` (state as :func:`scale_by_galore`'s;
    ``projector`` is ``optax.MaskedNode`` for the random projection).
  """
  check_range("scale", scale, 0.0)
  check_choice("projection", projection, PROJECTIONS)
  check_choice("scale_type", scale_type, SCALE_TYPES)
  if gamma is not None:
    check_range("gamma", gamma, 1.0)
  return scale_by_projected_method(
      apollo_method(scale, scale_type, scale_front, gamma),
      rank=rank,
      update_proj_gap=update_proj_gap,
      b1=b1,
      b2=b2,
      eps=eps,
      projection_mask=projection_mask,
      moment_dtype=moment_dtype,
      options=options,
      default_refresh=PROJECTIONS[projection],
      default_moment_policy="keep",
      uses_norm=gamma is not None,
      store_projector=store_projector,
  )


@shared_args(apollo_args=APOLLO_ARGS)
def apollo(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 256,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    mask=None,
    projection_mask=None,
    moment_dtype=None,
    options=None,
    projection: str = "random",
    scale_type: str = "channel",
    scale_front: bool = False,
    gamma: float | None = 1.01,
    store_projector: bool = False,
) -> optax.GradientTransformation:
  """APOLLO-AdamW: ``chain(scale_by_apollo, add_decayed_weights, scale_by_learning_rate)``.

  Args:
    {alias_args}
    {shared_args}
    scale: the update is multiplied by ``sqrt(scale)``.
    scale_type: ``"channel"`` (one ratio per row/column) or ``"tensor"``.
    {apollo_args}

  Returns:
    An ``optax.GradientTransformation``.
  """
  return with_decoupled_weight_decay(
      scale_by_apollo(
          rank,
          update_proj_gap,
          scale,
          b1,
          b2,
          eps,
          projection_mask,
          moment_dtype,
          options,
          projection,
          scale_type,
          scale_front,
          gamma,
          store_projector,
      ),
      learning_rate,
      weight_decay,
      mask,
  )


@shared_args(apollo_args=APOLLO_ARGS)
def scale_by_apollo_mini(
    rank: int = 1,
    update_proj_gap: int = 200,
    scale: float = 128.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    projection_mask=None,
    moment_dtype=None,
    options=None,
    projection: str = "random",
    scale_front: bool = False,
    gamma: float | None = 1.01,
) -> optax.GradientTransformation:
  """APOLLO-Mini: :func:`scale_by_apollo` with rank 1, scale 128, tensor-wise ratio.

  Args:
    {shared_args}
    scale: the update is multiplied by ``sqrt(scale)`` (default 128).
    {apollo_args}

  Returns:
    An ``optax.GradientTransformation``.
  """
  return scale_by_apollo(
      rank,
      update_proj_gap,
      scale,
      b1,
      b2,
      eps,
      projection_mask,
      moment_dtype,
      options,
      projection,
      "tensor",
      scale_front,
      gamma,
  )


@shared_args(apollo_args=APOLLO_ARGS)
def apollo_mini(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 1,
    update_proj_gap: int = 200,
    scale: float = 128.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    mask=None,
    projection_mask=None,
    moment_dtype=None,
    options=None,
    projection: str = "random",
    scale_front: bool = False,
    gamma: float | None = 1.01,
) -> optax.GradientTransformation:
  """APOLLO-Mini-AdamW (rank 1, scale 128, tensor-wise ratio).

  Args:
    {alias_args}
    {shared_args}
    scale: the update is multiplied by ``sqrt(scale)`` (default 128).
    {apollo_args}

  Returns:
    An ``optax.GradientTransformation``.
  """
  return with_decoupled_weight_decay(
      scale_by_apollo_mini(
          rank,
          update_proj_gap,
          scale,
          b1,
          b2,
          eps,
          projection_mask,
          moment_dtype,
          options,
          projection,
          scale_front,
          gamma,
      ),
      learning_rate,
      weight_decay,
      mask,
  )
