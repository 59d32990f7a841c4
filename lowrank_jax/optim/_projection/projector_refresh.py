"""The projector refresh, behind one ``lax.cond``, and what it does to the moments.

The refresh runs inside ``lax.cond`` on a scalar predicate, outside any
``vmap`` (a batched predicate would become a select and pay the decomposition every
step). Which matrices are due, and their keys, come from
:mod:`~lowrank_jax.optim._projection.refresh_schedule`; their new bases from
:mod:`~lowrank_jax.optim._projection.projector_bases`.

**Moments on a refresh** (``moment_policy``): ``"keep"`` carries them over
unchanged (the references), ``"reset"`` zeroes the refreshed matrix's moments
(the bias-correction step keeps counting), ``"reproject"`` maps the first moment into the new
basis, ``M <- P_new^T P_old M``, and keeps the second. ``"reproject_once"`` (GoLore's reference)
re-projects it for the refresh step's update only: the state keeps the first moment from
before that step, neither re-projected nor updated (:func:`stored_first_moment`).

>>> import jax.numpy as jnp
>>> new, old = jnp.eye(3)[:, :2], jnp.eye(3)[:, 1:]  # the basis moved by one direction
>>> mu, nu = jnp.ones((2, 4)), jnp.ones((2, 4))
>>> carry_moments("reproject", new, old, mu, nu)[0][:, 0]  # only the shared direction stays
Array([0., 1.], dtype=float32)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lowrank_jax.optim._projection import distributed_refresh
from lowrank_jax.optim._projection.matrix_sharding import batch_like, gather_matrices, like_sharding
from lowrank_jax.optim._projection.projection import MatrixLayout, from_matrices, to_matrices
from lowrank_jax.optim._projection.projector_bases import Refresher

MOMENT_POLICIES = ("keep", "reset", "reproject", "reproject_once")
REPROJECTING = ("reproject", "reproject_once")  # the policies that need the old projector


def carry_moments(policy: str, new_basis, old_basis, mu, nu):
  """Applies the moment policy to one matrix's moments ``(r, k)`` on a refresh."""
  if policy == "reset":
    return jnp.zeros_like(mu), jnp.zeros_like(nu)
  if policy in REPROJECTING:
    dot = functools.partial(jnp.matmul, precision=lax.Precision.HIGHEST)
    change = dot(new_basis.T, old_basis.astype(jnp.float32))
    return dot(change, mu.astype(jnp.float32)).astype(mu.dtype), nu
  return mu, nu


class LeafRefresh(NamedTuple):
  """One leaf's refresh plan: its layout, which of its matrices are ``due`` (bool per
  matrix) and their random ``keys`` (None when the refresher ignores them)."""

  layout: MatrixLayout
  due: jax.Array
  keys: jax.Array | None


def stored_first_moment(policy: str, updated, before, plan: LeafRefresh, count: jax.Array):
  """The first moment a step leaves in the state, given the one it ``updated``.

  ``"reproject_once"`` leaves the moment from ``before`` the step on the matrices the step
  refreshed, except at the first step (pkumelon/Golore's ``adamw.py``, where the
  re-projected moment is bound to a local, not to ``state["exp_avg"]``); the other policies
  store ``updated``.
  """
  if policy != "reproject_once":
    return updated
  layout = plan.layout
  refreshed = jnp.expand_dims(plan.due.reshape(layout.batch_shape), layout.matrix_axes)
  return jnp.where(refreshed & (count > 0), before, updated).astype(updated.dtype)


def refresh_projectors(
    grads: list,
    projectors: list,
    mus: list,
    nus: list,
    plans: list[LeafRefresh],
    *,
    count: jax.Array,
    refresher: Refresher,
    moment_policy: str,
    stagger: bool,
    refresh_axes=None,
    refresh_mesh=None,
) -> list[tuple]:
  """Recomputes the projectors of the matrices that are due, in every leaf.

  All leaves refresh under one ``lax.cond`` on whether any matrix is due, so a
  step without a refresh costs one scalar test (on a GPU each ``cond`` waits for
  its predicate to reach the host: one per step, not one per leaf). A leaf's
  matrices refresh together (one batched decomposition) unless ``stagger``, in
  which case each matrix has its own ``lax.cond`` inside a ``lax.map``.
  ``refresh_axes`` and ``refresh_mesh`` (see :class:`ProjectionOptions`)
  spread the matrices over devices.

  Returns:
    ``(projector, mu, nu)`` per leaf, with the input dtypes.
  """

  def refresh_one(matrix, old_basis, m, v, key):
    new_basis = refresher(matrix, key, count)
    m, v = carry_moments(moment_policy, new_basis, old_basis, m, v)
    return new_basis.astype(old_basis.dtype), m, v

  def refresh_batch(matrix_due, g, p, m, v, matrix_keys):
    if stagger:

      def maybe_refresh(args):
        is_due, *rest = args
        return lax.cond(is_due, refresh_one, lambda *a: tuple(a[1:4]), *rest)

      return lax.map(maybe_refresh, (matrix_due, g, p, m, v, matrix_keys))
    return jax.vmap(refresh_one)(g, p, m, v, matrix_keys)

  def refresh_leaf(operands, plan: LeafRefresh):
    g, p, m, v = (to_matrices(x, plan.layout) for x in operands)
    g = g.astype(jnp.float32)
    mesh = distributed_refresh.active_mesh(refresh_mesh, refresh_axes)
    if mesh is None:
      g = gather_matrices(g)
      new = refresh_batch(batch_like(plan.due, g), g, p, m, v, batch_like(plan.keys, g))
    else:
      new = distributed_refresh.spread_over_devices(
          refresh_batch, (plan.due, g, p, m, v, plan.keys), mesh=mesh, axes=refresh_axes
      )
    return tuple(
        like_sharding(from_matrices(x, plan.layout), old) for x, old in zip(new, operands[1:])
    )

  leaves = list(zip(grads, projectors, mus, nus))
  if not leaves:
    return []
  any_due = jnp.any(jnp.stack([jnp.any(plan.due) for plan in plans]))
  return lax.cond(
      any_due,
      lambda operands: [refresh_leaf(x, plan) for x, plan in zip(operands, plans)],
      lambda operands: [tuple(x[1:]) for x in operands],
      leaves,
  )


def regenerate_projector(
    layout: MatrixLayout, keys: jax.Array, refresher: Refresher, dtype
) -> jax.Array:
  """A data-independent projector rebuilt from the keys (never stored)."""
  rows = layout.shape[layout.projected_axis]
  dummy = jnp.zeros((rows, 0), jnp.float32)
  bases = jax.vmap(lambda key: refresher(dummy, key, None))(keys)
  return from_matrices(bases.astype(dtype), layout)
