r"""A learning-rate sweep as one program: ``K`` copies of the model, one jitted step.

``optimizer.learning_rates = [eta_1, ..., eta_K]`` trains ``K`` copies of the run, copy ``k``
at peak rate :math:`\eta_k`, all from the same initialisation and on the same batches;
``optimizer.dense_learning_rates`` pairs each with its own peak rate of the dense leaves
(:mod:`lowrank_jax.train.dense_rate`), and ``optimizer.dense_learning_rate`` gives all copies
one. The paper's schedule is linear in its peak (warmup from 0 to :math:`\eta`, cosine down to
a fraction of :math:`\eta`; arXiv 2505.22922, experimental protocol), so copy ``k`` applies
:math:`\eta_k\,u(t)` at update :math:`t`, with :math:`u` the schedule at peak 1, and the
sweep's step is ``jax.vmap`` of the ordinary step over the copies and their peaks.

What every copy shares stays unbatched: the step counter and each integer scalar of the
optimizer state (the update counts of its transforms). The periodic events inside a step
(GaLore's projector refresh, the momentum resets, ReLoRA's merge) are ``lax.cond``\ s on those
counts, and an unbatched predicate keeps them conds; a batched one would turn each into a
select that runs both branches at every step. So a non-finite step of one copy keeps that
copy's arrays (parameters, moments, projectors) while the shared counts advance: the one way
a copy can part from the run it stands for, and only after a non-finite step of its own.

The leaves with a sweep axis carry it first, replicated over the mesh (each device holds every
copy of its shard) or split over its data axis (``mesh.sweep=data``: each group of devices
trains its own copies on the whole batch); each copy's records go to its own directory
(:func:`copy_dir_name`).

>>> import jax.numpy as jnp
>>> tree = {"count": jnp.zeros((), jnp.int32), "mu": jnp.ones(3)}
>>> sweep_axes(tree)
{'count': None, 'mu': 0}
>>> stacked = stack(tree, 2)
>>> stacked["count"].shape, stacked["mu"].shape
((), (2, 3))
>>> copy_of(stacked, 1)["mu"].shape
(3,)
>>> copy_dir_name(0.002), copy_dir_name(0.002, 0.01)
('lr0.002', 'lr0.002_dense0.01')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec


def is_shared(leaf) -> bool:
  """An integer scalar: a step or update count, the same for every copy."""
  return leaf.ndim == 0 and jnp.issubdtype(leaf.dtype, jnp.integer)


def sweep_axes(tree: Any) -> Any:
  """``None`` for the shared leaves of ``tree``, ``0`` (the sweep axis) for the others: the
  ``in_axes`` and ``out_axes`` of the sweep's ``vmap``."""
  return jax.tree.map(lambda leaf: None if is_shared(leaf) else 0, tree)


def stack(tree: Any, copies: int) -> Any:
  """``copies`` identical copies of ``tree`` on a leading axis, its shared leaves left as
  they are."""
  return jax.tree.map(
      lambda leaf: leaf if is_shared(leaf) else jnp.broadcast_to(leaf, (copies, *leaf.shape)),
      tree,
  )


def copy_of(tree: Any, k: int) -> Any:
  """Copy ``k`` of a stacked ``tree``: what the run at the ``k``-th rate would hold."""
  return jax.tree.map(lambda leaf: leaf if is_shared(leaf) else leaf[k], tree)


def stacked_abstract(abstract: Any, copies: int, axis: str | None = None) -> Any:
  """The ``ShapeDtypeStruct``\\ s of :func:`stack` of ``abstract`` (leaves with shardings
  over a mesh), the sweep axis split over the mesh axis ``axis`` (``None``: replicated)."""

  def widen(leaf):
    if is_shared(leaf):
      return leaf
    spec = PartitionSpec(axis, *leaf.sharding.spec)
    sharding = NamedSharding(leaf.sharding.mesh, spec)
    return jax.ShapeDtypeStruct((copies, *leaf.shape), leaf.dtype, sharding=sharding)

  return jax.tree.map(widen, abstract)


def keep_if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
  """:func:`~lowrank_jax.train.nonfinite.keep_if_finite` of one copy inside the sweep: its
  arrays keep their old values after a non-finite step, its shared counts advance."""
  return jax.tree.map(
      lambda n, o: n if is_shared(o) else jnp.where(finite, n, o),
      new,
      old,
  )


def make_sweep_step(
    step_at: Callable, rates: Sequence[tuple[float, float | None]], abstract_state: Any
) -> Callable:
  """``step(state, batch) -> (state, metrics)`` for the stacked ``state``.

  Args:
    step_at: ``step_at(peak, dense_peak) -> step(state, batch) -> (state, metrics)``, the
      ordinary step at peak rate ``peak`` and dense leaves' peak ``dense_peak`` (traced
      scalars, or ``None`` for the dense leaves at ``peak``) that keeps a copy's arrays with
      :func:`keep_if_finite`.
    rates: each copy's ``(peak, dense_peak)``
      (:meth:`~lowrank_jax.train.config.OptimizerSection.copy_rates`).
    abstract_state: one copy's state (arrays or ``ShapeDtypeStruct``\\ s), for the axes.

  Every metric comes back with the sweep axis first.
  """
  axes = sweep_axes(abstract_state)
  peaks, dense_peaks = zip(*rates)
  peaks = jnp.asarray(peaks, jnp.float32)
  dense_peaks = None if None in dense_peaks else jnp.asarray(dense_peaks, jnp.float32)

  def step(state, batch):
    per_copy = jax.vmap(
        lambda s, peak, dense_peak: step_at(peak, dense_peak)(s, batch),
        in_axes=(axes, 0, 0),
        out_axes=(axes, 0),
    )
    return per_copy(state, peaks, dense_peaks)

  return step


def copy_dir_name(learning_rate: float, dense_learning_rate: float | None = None) -> str:
  """The subdirectory of the run directory holding the records of the copy at this rate (and
  this dense leaves' rate, when the copies pair each rate with its own)."""
  dense = "" if dense_learning_rate is None else f"_dense{dense_learning_rate:g}"
  return f"lr{learning_rate:g}{dense}"
