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

import functools

import jax
import jax.numpy as jnp
import optax

from lowrank_jax.optim._projection import projection
from lowrank_jax.optim._projection.lowrank_adam import (
    LowRankStep,
    norm_growth_factor,
    scale_by_projected_method,
)
from lowrank_jax.optim.adam import with_decoupled_weight_decay
from lowrank_jax.optim._checks import check_choice, check_range

PROJECTIONS = {"random": "gaussian", "svd": "svd"}
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


def scale_by_apollo(
    rank: int = 256,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    *,
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
  r"""APOLLO's rescaling of the gradients (no learning rate, no weight decay).

  The raw gradient scaled by how much a low-rank Adam rescales its projection
  ``R = P^T G`` (``N = M / (sqrt(V) + eps)``), per channel or per matrix:

  .. math::
    s = \frac{\|N\|}{\|R\| + 10^{-8}}, \qquad
    u = \frac{\sqrt{1 - b_2^t}}{1 - b_1^t}\, \sqrt{\mathrm{scale}}\;
      \mathrm{limit}_\gamma(s \odot G).

  Args:
    rank: projection rank ``r`` (a Python int), at most the smaller side of every projected
      matrix (checked at init); list it in ``static_args`` of ``optax.inject_hyperparams``.
    update_proj_gap: redraw (or refresh) the projectors every this many steps (int >= 1).
    scale: the update is multiplied by ``sqrt(scale)`` (>= 0).
    b1: Adam's first-moment decay, in [0, 1).
    b2: Adam's second-moment decay, in [0, 1).
    eps: added to ``sqrt(V)`` (the references' placement), >= 0.
    projection_mask: which leaves are projected: None (every leaf with ndim >= 2), a pytree of
      bools, or a callable on the params; the others get the references' Adam.
    moment_dtype: storage dtype of all Adam moments; None keeps each parameter's dtype.
    options: :class:`~lowrank_jax.optim.ProjectionOptions`; None: the ``projection``'s
      refresh and ``moment_policy="keep"``.
    projection: ``"random"`` (Gaussian, regenerated from its key, not stored) or ``"svd"``
      (GaLore's projector, stored).
    scale_type: ``"channel"`` (one ratio per row/column) or ``"tensor"`` (one per matrix).
    scale_front: apply ``sqrt(scale)`` before the limiter (the reference's flag).
    gamma: the norm-growth limiter's growth bound (>= 1); None disables the limiter (the
      reference's ``disable_nl``).
    store_projector: keep the random projector in the state, drawn only at its refreshes (as
      the reference): no per-step draw, ``p x r`` more floats per matrix.

  Returns:
    An ``optax.GradientTransformation`` (state as :func:`scale_by_galore`'s; ``projector`` is
    ``optax.MaskedNode`` for the regenerated random projection).

  >>> import jax.numpy as jnp
  >>> state = scale_by_apollo(rank=2).init({"w": jnp.ones((8, 16))})
  >>> state.inner_states["projected"].inner_state.mu["w"].shape
  (2, 16)
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


def apollo(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 256,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    *,
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
  r"""APOLLO-AdamW: ``chain(scale_by_apollo, add_decayed_weights, scale_by_learning_rate)``.

  The parameter moves by ``-learning_rate * (u + weight_decay * p)`` with ``u`` the update of
  :func:`scale_by_apollo`:

  .. math::
    u = \frac{\sqrt{1 - b_2^t}}{1 - b_1^t}\, \sqrt{\mathrm{scale}}\;
      \mathrm{limit}_\gamma\left(\frac{\|N\|}{\|R\| + 10^{-8}} \odot G\right).

  Args:
    learning_rate: a float or an optax schedule.
    rank: projection rank ``r`` (a Python int), at most the smaller side of every projected
      matrix.
    update_proj_gap: redraw (or refresh) the projectors every this many steps (int >= 1).
    scale: the update is multiplied by ``sqrt(scale)`` (>= 0).
    b1: Adam's first-moment decay, in [0, 1).
    b2: Adam's second-moment decay, in [0, 1).
    eps: added to ``sqrt(V)`` (the references' placement), >= 0.
    weight_decay: decoupled weight decay (``p -= lr * wd * p``), >= 0.
    mask: the leaves weight decay applies to, as optax's ``mask``; None decays every leaf.
    projection_mask: which leaves are projected (None: every leaf with ndim >= 2).
    moment_dtype: storage dtype of all Adam moments; None keeps each parameter's dtype.
    options: :class:`~lowrank_jax.optim.ProjectionOptions`; None: APOLLO's defaults.
    projection: ``"random"`` (Gaussian, regenerated) or ``"svd"`` (GaLore's projector).
    scale_type: ``"channel"`` (one ratio per row/column) or ``"tensor"`` (one per matrix).
    scale_front: apply ``sqrt(scale)`` before the limiter (the reference's flag).
    gamma: the norm-growth limiter's growth bound (>= 1); None disables the limiter.
    store_projector: keep the random projector in the state, drawn only at its refreshes.

  Returns:
    An ``optax.GradientTransformation``.
  """
  return with_decoupled_weight_decay(
      scale_by_apollo(
          rank,
          update_proj_gap,
          scale,
          b1=b1,
          b2=b2,
          eps=eps,
          projection_mask=projection_mask,
          moment_dtype=moment_dtype,
          options=options,
          projection=projection,
          scale_type=scale_type,
          scale_front=scale_front,
          gamma=gamma,
          store_projector=store_projector,
      ),
      learning_rate,
      weight_decay,
      mask,
  )


# APOLLO-Mini is APOLLO with these settings (rank 1, scale 128, one ratio per matrix).
APOLLO_MINI_SETTINGS = {"rank": 1, "scale": 128.0, "scale_type": "tensor"}

scale_by_apollo_mini = functools.partial(scale_by_apollo, **APOLLO_MINI_SETTINGS)
scale_by_apollo_mini.__doc__ = r"""APOLLO-Mini's rescaling: :func:`scale_by_apollo` with rank 1,
  scale 128 and the tensor-wise ratio ``s = ||N||_F / (||R||_F + 1e-8)``, one per matrix.

  Its arguments are :func:`scale_by_apollo`'s, all passed by keyword (``rank``, ``scale``
  and ``scale_type`` are set by keyword, so a positional one would collide). State: two
  ``max(m, n) x 1`` moments and one norm per ``m x n`` matrix.
  """

apollo_mini = functools.partial(apollo, **APOLLO_MINI_SETTINGS)
apollo_mini.__doc__ = r"""APOLLO-Mini-AdamW: :func:`apollo` at rank 1, scale 128, tensor-wise ratio.

  .. math::
    u = \frac{\sqrt{1 - b_2^t}}{1 - b_1^t}\, \sqrt{128}\;
      \mathrm{limit}_\gamma\left(\frac{\|N\|_F}{\|R\|_F + 10^{-8}}\, G\right),

  the moments of a rank-1 random projection as its whole state (SGD-like memory). Its
  arguments are :func:`apollo`'s; past ``learning_rate`` all are passed by keyword (``rank``,
  ``scale`` and ``scale_type`` are set by keyword, so a positional one would collide), e.g.
  ``apollo_mini(lr, scale=192.0)``, the 130M setting of APOLLO's scripts.
  """
