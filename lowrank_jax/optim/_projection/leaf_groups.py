"""Leaves of one layout stacked together: fewer, larger operations per step.

A step of the GaLore family runs a handful of operations per projected leaf (the two
projection products, the moment update, the refresh). On a GPU each is a kernel launch,
and a model that stores one leaf per layer (LLaMA-60M without ``scan_layers``: 56 target
matrices) spends its step launching kernels. Grouping stacks the leaves that share a layout
and dtypes (one copy of the gradients and the state, cheap at a GPU's memory bandwidth, not
at a CPU's), runs the step on the stacks, and slices the results back: the optimizer state
keeps its per-leaf structure, and the update is the same as without grouping. On a GPU it
shortens the step and, most, the refresh (one batched eigensolver call per shape instead of
one per leaf); a model stored stacked (``scan_layers``) needs no grouping
(``experiments/results/bench/README.md``).

Leaf lists hold ``optax.MaskedNode`` where a leaf has no entry (a projector that is not
stored, a norm that is not kept); a group of those stays a ``MaskedNode``.

>>> import jax.numpy as jnp
>>> from lowrank_jax.optim._projection.projection import MatrixLayout
>>> from lowrank_jax.optim._projection.projector_refresh import LeafRefresh
>>> layouts = [MatrixLayout((4, 6), 0, 1, 2), MatrixLayout((6, 4), 1, 0, 2),
...            MatrixLayout((4, 6), 0, 1, 2)]
>>> leaves = [jnp.zeros((4, 6)), jnp.ones((6, 4)), jnp.full((4, 6), 2.0)]
>>> groups = group_by_layout(layouts, leaves)
>>> groups
[[0, 2], [1]]
>>> stacked = stack(leaves, groups)
>>> [x.shape for x in stacked], stacked_layout(layouts[0], 2)
([(2, 4, 6), (6, 4)], MatrixLayout(shape=(2, 4, 6), projected_axis=1, kept_axis=2, rank=2))
>>> [float(x[0, 0]) for x in unstack(stacked, groups)]
[0.0, 1.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from lowrank_jax.optim._projection.projection import MatrixLayout
from lowrank_jax.optim._projection.projector_refresh import LeafRefresh

Groups = list[list[int]]


def _signature(leaf):
  return None if isinstance(leaf, optax.MaskedNode) else jnp.dtype(leaf.dtype)


def group_by_layout(layouts: Sequence[MatrixLayout], *columns: Sequence) -> Groups:
  """Indices of the leaves with equal layout and, in every column, equal dtype; groups
  in order of their first leaf, leaves in order within a group."""
  groups: dict[tuple, list[int]] = {}
  for index, layout in enumerate(layouts):
    key = (layout, *(_signature(column[index]) for column in columns))
    groups.setdefault(key, []).append(index)
  return list(groups.values())


def stacked_layout(layout: MatrixLayout, count: int) -> MatrixLayout:
  """The layout of ``count`` such leaves stacked on a new leading (batch) axis (a lone
  leaf, which :func:`stack` leaves as it is, keeps its layout)."""
  if count == 1:
    return layout
  return MatrixLayout(
      (count, *layout.shape), layout.projected_axis + 1, layout.kept_axis + 1, layout.rank
  )


def stack(leaves: Sequence, groups: Groups) -> list:
  """One entry per group: its leaves stacked on a new leading axis (a lone leaf as it is)."""

  def stack_group(group):
    members = [leaves[i] for i in group]
    if len(group) == 1 or isinstance(members[0], optax.MaskedNode):
      return members[0]
    return jnp.stack(members)

  return [stack_group(group) for group in groups]


def concatenate(vectors: Sequence[jax.Array | None], groups: Groups) -> list:
  """One entry per group: the leaves' per-matrix vectors joined in stacking order."""
  return [
      vectors[group[0]]
      if len(group) == 1 or vectors[group[0]] is None
      else jnp.concatenate([vectors[i] for i in group])
      for group in groups
  ]


def stack_plans(plans: Sequence[LeafRefresh], groups: Groups) -> list[LeafRefresh]:
  """One refresh plan per group: the stacked layout, the members' ``due`` and ``keys``
  joined in stacking order."""
  dues = concatenate([plan.due for plan in plans], groups)
  keys = concatenate([plan.keys for plan in plans], groups)
  return [
      LeafRefresh(stacked_layout(plans[group[0]].layout, len(group)), due, key)
      for group, due, key in zip(groups, dues, keys)
  ]


def unstack(stacked: Sequence, groups: Groups) -> list:
  """Inverse of :func:`stack`: the leaves in their original order."""
  leaves: list = [None] * sum(len(group) for group in groups)
  for value, group in zip(stacked, groups):
    for position, index in enumerate(group):
      single = len(group) == 1 or isinstance(value, optax.MaskedNode)
      leaves[index] = value if single else value[position]
  return leaves
