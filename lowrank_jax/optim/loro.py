r"""LoRO: AdamW on the factors, and every K steps an exact step on the rank-r manifold.

LoRO (low-rank Riemannian optimizer; arXiv 2505.22922, methods survey) trains a weight given as a
product of factors, :math:`M = a b` with :math:`a` of shape :math:`(p, r)` and :math:`b` of
shape :math:`(r, q)` (a scale such as :math:`\alpha / r` stays outside, as in
:mod:`~lowrank_jax.optim.refactorize`), with ordinary AdamW steps on :math:`a` and :math:`b`,
and every :math:`K` steps replaces the factors' Adam step by an exact Riemannian gradient step
on the manifold of rank-:math:`r` matrices, after which the Adam state (moments and count)
restarts.

**The exact step from the factor gradients alone.** Let :math:`G` be the gradient of the loss
with respect to the product :math:`M` (never formed: it is :math:`p \times q`). The factor
gradients are its projections :math:`g_a = G b^\top` and :math:`g_b = a^\top G`. With reduced
QRs :math:`a = Q_a R_a` and :math:`b^\top = Q_b R_b` (:math:`R_a, R_b` invertible when the
factors have full rank),

.. math::

  G Q_b = g_a R_b^{-1}, \qquad Q_a^\top G = R_a^{-\top} g_b,

two triangular solves. The projection of :math:`G` on the tangent space of the manifold at
:math:`M`,

.. math::

  P_T(G) = Q_a Q_a^\top G + G Q_b Q_b^\top - Q_a Q_a^\top G Q_b Q_b^\top
         = Q_a (Q_a^\top G) + (I - Q_a Q_a^\top)(G Q_b)\, Q_b^\top,

needs only those two. With :math:`X = (I - Q_a Q_a^\top) G Q_b` and
:math:`M = Q_a (R_a b)`, the step lands on a matrix of rank at most :math:`2r`,

.. math::

  M - \eta P_T(G) = [\,Q_a \;\; X\,]
  \begin{bmatrix} R_a b - \eta\, Q_a^\top G \\ -\eta\, Q_b^\top \end{bmatrix},

whose balanced factors come from QRs of the two :math:`2r`-wide factors and an SVD of the
:math:`2r \times 2r` core (:func:`~lowrank_jax.optim.refactorize.balanced_factors`). Keeping
the top :math:`r` singular triplets :math:`U_r \Sigma_r V_r^\top` (the retraction onto the
manifold: the best rank-:math:`r` approximation) gives the new, balanced factors
:math:`a \leftarrow U_r \Sigma_r^{1/2}`, :math:`b \leftarrow \Sigma_r^{1/2} V_r^\top`. All of
it runs in float32, batched over leading (stacked-layer) axes.

**The optimizer, as LoRO's own code runs it** (mzf666/LORO-main, ``loro_torch/loro_optim.py``,
``LOROAdamW`` with ``loro_type="loro"``). Every parameter keeps Adam moments :math:`m, v`
(eps added to :math:`\sqrt v` before the bias correction, which sits in the step size):

.. math::

  u = \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t} \, \frac{m}{\sqrt{v} + \epsilon}.

* other parameters (embeddings, norms, ...): :math:`p \leftarrow p - \eta u`, every update;
* factors, updates :math:`n \not\equiv 0 \pmod K` (the *lazy* steps):
  :math:`p \leftarrow p - \eta s u` with the scale :math:`s` (``lazy_scale``; :math:`r / d` in
  LoRO's scripts, :math:`d` the hidden size);
* factors, updates :math:`K, 2K, \dots` (the *exact* steps): the manifold step above taken
  along the Adam directions instead of the gradients (:math:`g_a \to u_a`, :math:`g_b \to u_b`,
  i.e. the Adam-normalised momenta :math:`m / (\sqrt v + \epsilon)` with the step size
  :math:`\eta \sqrt{1 - \beta_2^t} / (1 - \beta_1^t)`), without the scale :math:`s` and
  without weight decay;
* right after each exact step the whole Adam state (moments and count) restarts
  (:func:`~lowrank_jax.optim.momentum_reset.momentum_reset`; the reference's
  ``--loro_refresh all`` with ``--loro_refresh_freq`` :math:`= K`), and the learning rate
  re-warms linearly from 0 over ``restart_warmup_steps`` updates
  (:func:`~lowrank_jax.optim.relora.relora_schedule`; the reference's ``cosine_restart``
  scheduler, ``--cosine_restart_warmup`` 5).

Deliberate departures (``lowrank_jax/optim/README.md``): weight decay is optax's
(:math:`p \leftarrow p - \eta (u + \lambda p)`, the factors' with the lazy scale on
:math:`u` only), where the reference decays after the step with the bias-corrected rate on the
factors (its scripts use :math:`\lambda = 0`); by default the re-warmup climbs to the base
schedule's value at its end after every exact step; ``loro_main`` follows LORO-main's own
curve (:mod:`~lowrank_jax.optim.loro_schedule`).

>>> import jax
>>> import jax.numpy as jnp
>>> import optax
>>> key_a, key_b, key_g = jax.random.split(jax.random.key(0), 3)
>>> params = {"q_proj": {"a": jax.random.normal(key_a, (6, 2)),
...                      "b": jax.random.normal(key_b, (2, 5))}}
>>> optimizer = loro(0.1, every=2, restart_warmup_steps=1)
>>> state = optimizer.init(params)
>>> grads = jax.tree.map(lambda p: jax.random.normal(key_g, p.shape), params)
>>> for _ in range(2):  # an AdamW step, then a manifold step
...     updates, state = optimizer.update(grads, state, params)
...     params = optax.apply_updates(params, updates)
>>> a, b = params["q_proj"]["a"], params["q_proj"]["b"]
>>> bool(jnp.allclose(a.T @ a, b @ b.T, atol=1e-5))  # lands on balanced factors
True
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lowrank_jax.optim import linalg
from lowrank_jax.optim.adam import scale_by_folded_adam
from lowrank_jax.optim.momentum_reset import momentum_reset
from lowrank_jax.optim.periodic import every_nth_update
from lowrank_jax.optim.refactorize import (
    Labels,
    PairLabels,
    _pair_indices,
    _unsharded_matrix,
    balanced_factors,
    sibling_factors,
    steps_to_factor_targets,
)
from lowrank_jax.optim.loro_schedule import loro_main_schedule
from lowrank_jax.optim.relora import relora_schedule
from lowrank_jax.optim._checks import check_positive_int, check_range

_HIGHEST = jax.lax.Precision.HIGHEST


def _t(x: jax.Array) -> jax.Array:
  return jnp.swapaxes(x, -1, -2)


def _matmul(x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.matmul(x, y, precision=_HIGHEST)


class TangentCoordinates(NamedTuple):
  """The point and a tangent vector in one spanning set: ``a b = basis @ point`` and
  ``P_T(G) = basis @ direction``.

  Attributes:
    basis: ``(..., p, 2r)``, the columns :math:`[Q_a, (I - Q_a Q_a^T) G Q_b]`.
    point: ``(..., 2r, q)``, :math:`[R_a b; 0]`.
    direction: ``(..., 2r, q)``, :math:`[Q_a^T G; Q_b^T]`.
  """

  basis: jax.Array
  point: jax.Array
  direction: jax.Array


def tangent_coordinates(
    a: jax.Array, b: jax.Array, grad_a: jax.Array, grad_b: jax.Array
) -> TangentCoordinates:
  r"""The tangent-space projection :math:`P_T(G)` at :math:`a b`, from the factor gradients.

  Args:
    a: ``(..., p, r)`` left factor of full rank ``r``.
    b: ``(..., r, q)`` right factor of full rank ``r``.
    grad_a: :math:`G b^\top`, the gradient of the loss with respect to ``a`` when ``G`` is
      the one with respect to ``a @ b``.
    grad_b: :math:`a^\top G`.

  Returns:
    :class:`TangentCoordinates` (float32).
  """
  a, b, grad_a, grad_b = (_unsharded_matrix(x.astype(jnp.float32)) for x in (a, b, grad_a, grad_b))
  q_a, r_a = linalg.qr(a)
  q_b, r_b = linalg.qr(_t(b))
  row_part = linalg.solve_upper_transposed(r_a, grad_b)  # Q_a^T G
  column_part = _t(linalg.solve_upper_transposed(r_b, _t(grad_a)))  # G Q_b
  column_part = column_part - _matmul(q_a, _matmul(_t(q_a), column_part))
  return TangentCoordinates(
      basis=jnp.concatenate([q_a, column_part], axis=-1),
      point=jnp.concatenate([_matmul(r_a, b), jnp.zeros_like(row_part)], axis=-2),
      direction=jnp.concatenate([row_part, _t(q_b)], axis=-2),
  )


def manifold_step(
    a: jax.Array,
    b: jax.Array,
    grad_a: jax.Array,
    grad_b: jax.Array,
    learning_rate: jax.Array | float,
) -> tuple[jax.Array, jax.Array]:
  r"""The balanced rank-``r`` factors of :math:`a b - \eta P_T(G)`, truncated to rank ``r``.

  Args:
    a, b, grad_a, grad_b: as in :func:`tangent_coordinates`.
    learning_rate: the step size :math:`\eta`.

  Returns:
    ``(new_a, new_b)`` (float32, shapes of ``a`` and ``b``) with ``new_a @ new_b`` the best
    rank-``r`` approximation of the step's result and ``new_a^T new_a = new_b new_b^T``.
  """
  rank = a.shape[-1]
  coordinates = tangent_coordinates(a, b, grad_a, grad_b)
  left, right = balanced_factors(
      coordinates.basis, coordinates.point - learning_rate * coordinates.direction
  )
  return left[..., :rank], right[..., :rank, :]


def _side_by_side(
    first: optax.GradientTransformation, second: optax.GradientTransformation
) -> optax.GradientTransformation:
  """Runs two transforms on the same updates; updates and state are pairs."""

  def init_fn(params):
    return first.init(params), second.init(params)

  def update_fn(updates, state, params=None):
    first_updates, first_state = first.update(updates, state[0], params)
    second_updates, second_state = second.update(updates, state[1], params)
    return (first_updates, second_updates), (first_state, second_state)

  return optax.GradientTransformation(init_fn, update_fn)


def _scaled_factors(
    updates: optax.Updates, pairs: PairLabels | Labels, params: optax.Params, scale: float
) -> optax.Updates:
  """``updates`` with every factor's entry multiplied by ``scale``."""
  leaves, treedef = jax.tree.flatten(updates)
  factors = {index for pair in _pair_indices(params, pairs) for index in pair}
  return treedef.unflatten(
      [(x * scale).astype(x.dtype) if i in factors else x for i, x in enumerate(leaves)]
  )


class LoroMainSchedule(NamedTuple):
  """The run's lengths that LORO-main's own rate curve needs (:mod:`~lowrank_jax.optim.loro_schedule`).

  Attributes:
    total_steps: the base schedule's length.
    warmup_steps: the base schedule's warmup.
    lr_adjust_steps: LORO-main's ``--lr_adjust_steps`` (its scripts: ``-warmup``; 350m -6000).
  """

  total_steps: int
  warmup_steps: int
  lr_adjust_steps: int


def loro_learning_rate(
    learning_rate: optax.ScalarOrSchedule,
    every: int,
    restart_warmup_steps: int,
    loro_main: LoroMainSchedule | None = None,
) -> optax.Schedule:
  """The rate :func:`loro` applies: ``learning_rate`` re-warmed linearly from 0 after every
  exact step (:func:`~lowrank_jax.optim.relora.relora_schedule`), or with ``loro_main``
  LORO-main's own curve (:func:`~lowrank_jax.optim.loro_schedule.loro_main_schedule`, of a
  warmup-cosine ``learning_rate``).

  >>> float(loro_learning_rate(1.0, every=4, restart_warmup_steps=2)(4))
  0.0
  """
  if loro_main is None:
    return relora_schedule(learning_rate, every, restart_warmup_steps)
  if not callable(learning_rate):
    raise ValueError(f"loro_main needs a warmup-cosine schedule, got {learning_rate!r}")
  return loro_main_schedule(
      learning_rate, every=every, restart_warmup_steps=restart_warmup_steps, **loro_main._asdict()
  )


def loro(
    learning_rate: optax.ScalarOrSchedule,
    every: int,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    lazy_scale: float = 1.0,
    restart_warmup_steps: int = 5,
    pairs: PairLabels | Labels = sibling_factors(),
    loro_main: LoroMainSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""LoRO: lazy Adam steps on the factors, an exact manifold step and an Adam restart every ``every``.

  Args:
    learning_rate: a float or an optax schedule :math:`\eta`, before the re-warmups.
    every: the period :math:`K` (Python int >= 1): updates ``K, 2K, ...`` are exact steps
      for the factor pairs, and the Adam state restarts right after them.
    b1: Adam's first-moment decay, in [0, 1).
    b2: Adam's second-moment decay, in [0, 1).
    eps: added to ``sqrt(v)`` before the bias correction, >= 0 (``LOROAdamW``'s 1e-6).
    weight_decay: decoupled weight decay of the lazy and ordinary steps, >= 0.
    lazy_scale: :math:`s`, multiplies the factors' learning rate on lazy steps (> 0), the
      reference's ``--loro_lr_scaler`` (default 1); its scripts pass ``-1``, which means
      :math:`r / d` with :math:`d` the model's hidden size: pass that value (a factor's
      shape does not tell the hidden size).
    restart_warmup_steps: :math:`W`, the length of the linear re-warmup of the learning
      rate after each exact step (Python int, 1 <= W <= every).
    pairs: which leaves are factors, as in :func:`~lowrank_jax.optim.refactorize.refactorize`
      (default: ``a @ b`` in each module). Both factors must have full rank ``r`` on an
      exact step (the step solves with their QR's triangular parts); ``b``'s zero
      initialisation of LoRA-style adapters is therefore excluded.
    loro_main: follow LORO-main's own rate curve instead of the linear re-warm from 0 (see
      :func:`loro_learning_rate`).

  Returns:
    A transform whose ``update`` requires ``params``; its state is a
    :class:`~lowrank_jax.optim.periodic.PeriodicState` around the Adam state and the
    schedule's counts. Pairs are checked in ``init``.
  """
  every = check_positive_int("every", every)
  check_range("b1", b1, 0.0, 1.0)
  check_range("b2", b2, 0.0, 1.0)
  check_range("eps", eps, 0.0)
  check_range("weight_decay", weight_decay, 0.0)
  if not lazy_scale > 0:
    raise ValueError(f"lazy_scale must be > 0, got {lazy_scale!r}.")
  if not (isinstance(restart_warmup_steps, int) and 1 <= restart_warmup_steps <= every):
    raise ValueError(
        f"restart_warmup_steps must be in [1, every={every}], got {restart_warmup_steps!r}."
    )
  if not callable(learning_rate):
    check_range("learning_rate", learning_rate, 0.0)
  learning_rate = loro_learning_rate(learning_rate, every, restart_warmup_steps, loro_main)
  # Both branches see the same Adam direction u: the first makes the AdamW update
  # -lr (u + wd p), the second the descent -lr u that the exact step and the lazy
  # scale act on.
  inner = optax.chain(
      momentum_reset(scale_by_folded_adam(b1, b2, eps), every),
      _side_by_side(
          optax.chain(
              optax.add_decayed_weights(weight_decay), optax.scale_by_learning_rate(learning_rate)
          ),
          optax.scale_by_learning_rate(learning_rate),
      ),
  )

  def lazy_or_exact(due, updates, inner_state, params):
    adamw_updates, descent = updates
    scaled_descent = _scaled_factors(descent, pairs, params, lazy_scale)
    lazy = jax.tree.map(lambda full, d, s: full - d + s, adamw_updates, descent, scaled_descent)
    return (
        steps_to_factor_targets(
            due,
            pairs,
            params,
            lazy,
            descent,
            lambda a, b, step_a, step_b: manifold_step(a, b, -step_a, -step_b, 1.0),
        ),
        inner_state,
    )

  return every_nth_update(
      inner, every, "loro", lazy_or_exact, check_params=lambda params: _pair_indices(params, pairs)
  )
