"""Shardings of optimizer states, computed from the parameters' shardings.

An optimizer state is not a copy of the parameters: a low-rank moment of a
``(d, f)`` kernel sharded ``(fsdp, tensor)`` is ``(r, f)`` or ``(d, r)``. This
module derives a spec for every state leaf of *any* optax transform (the GaLore
family, SPAM, plain ``optax.adam``, chains, partitions, ``inject_hyperparams``,
``MultiSteps``) from the state's abstract shapes:

1. each state leaf is matched to the parameter whose tree path is the longest
   suffix of the leaf's path (``mu['layer']['kernel']`` belongs to
   ``params['layer']['kernel']``); a leaf that matches no parameter (counts,
   hyperparameters) is replicated;
2. a leaf with the parameter's number of axes keeps the mesh axes of every axis
   whose size is the parameter's; an axis that changed size (the rank axis of a
   moment or projector) frees its mesh axes, which move to the last axis that
   has none and that they divide (so a ``(r, f)`` moment of a ``(d, f)`` kernel
   sharded ``(fsdp, None)`` becomes ``(None, fsdp)``, not replicated). Only
   ``Auto`` mesh axes move: under ``Explicit`` axes shardings are types, and a
   moved axis would make the update's matmuls produce illegal shardings;
3. a leaf whose shape is the parameter's with some axes reduced away (per-matrix
   norms of a layer stack, Adafactor's row and column second moments) keeps the
   mesh axes of the axes it keeps, and the reduced axes' mesh axes move as in 2;
   other shapes are replicated;
4. any axis whose size the mesh axes do not divide is replicated instead of
   failing.

>>> import jax, jax.numpy as jnp
>>> from jax.sharding import PartitionSpec as P
>>> import lowrank_jax.optim as lro
>>> mesh = jax.make_mesh((2, 4), ("fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
>>> params = {"kernel": jax.ShapeDtypeStruct((16, 8), jnp.float32)}
>>> specs = state_partition_specs(lro.galore(0.01, rank=2), params, {"kernel": P("fsdp", "tensor")}, mesh)
>>> lowrank = specs[0].inner_states["projected"].inner_state
>>> lowrank.projector["kernel"], lowrank.mu["kernel"], lowrank.count  # projector (2, 8), mu (16, 2)
(P('fsdp', 'tensor'), P('fsdp', None), P())
"""

from __future__ import annotations

import math
from typing import Any

import jax
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec


def _is_spec(x) -> bool:
  return isinstance(x, (PartitionSpec, NamedSharding))


def _param_specs(params: Any, param_shardings: Any) -> dict[tuple, tuple[tuple, tuple]]:
  """Maps each parameter's key path to (shape, spec padded to its ndim)."""
  shardings = jax.tree.structure(params).flatten_up_to(param_shardings)
  table = {}
  for (path, leaf), sharding in zip(jax.tree.leaves_with_path(params), shardings):
    spec = sharding.spec if isinstance(sharding, NamedSharding) else (sharding or PartitionSpec())
    spec = tuple(spec) + (None,) * (len(leaf.shape) - len(spec))
    table[tuple(path)] = (tuple(leaf.shape), spec)
  return table


def _owner(path: tuple, table: dict) -> tuple[tuple, tuple] | None:
  """The parameter whose path is the longest suffix of ``path``."""
  for start in range(len(path) + 1):
    if path[start:] in table:
      return table[path[start:]]
  return None


def _fits(size: int, axes, mesh: Mesh) -> bool:
  names = axes if isinstance(axes, tuple) else (axes,)
  return size % math.prod(mesh.shape[name] for name in names) == 0


def _auto(axes, mesh: Mesh) -> bool:
  names = axes if isinstance(axes, tuple) else (axes,)
  types = dict(zip(mesh.axis_names, mesh.axis_types))
  return all(types[name] == AxisType.Auto for name in names)


def _kept_axes(shape: tuple, param_shape: tuple) -> list[int] | None:
  """The axes of ``param_shape`` that ``shape`` keeps when it is ``param_shape`` with some
  axes reduced away (matched from the left), or ``None`` when it is not."""
  kept, axis = [], 0
  for size in shape:
    while axis < len(param_shape) and param_shape[axis] != size:
      axis += 1
    if axis == len(param_shape):
      return None
    kept.append(axis)
    axis += 1
  return kept


def leaf_spec(shape: tuple, owner: tuple[tuple, tuple] | None, mesh: Mesh) -> PartitionSpec:
  """The spec of one state leaf of ``shape`` given its owner's (shape, spec)."""
  if owner is None or not shape:
    return PartitionSpec()
  param_shape, param_spec = owner
  freed = []
  if len(shape) == len(param_shape):
    spec = [
        axes if size == param_size else None
        for size, param_size, axes in zip(shape, param_shape, param_spec)
    ]
    freed = [
        axes
        for size, param_size, axes in zip(shape, param_shape, param_spec)
        if size != param_size and axes is not None and _auto(axes, mesh)
    ]
  elif (kept := _kept_axes(shape, param_shape)) is not None:
    spec = [param_spec[axis] for axis in kept]
    freed = [
        axes
        for axis, axes in enumerate(param_spec)
        if axis not in kept and axes is not None and _auto(axes, mesh)
    ]
  else:
    return PartitionSpec()
  spec = [
      axes if axes is not None and _fits(size, axes, mesh) else None
      for size, axes in zip(shape, spec)
  ]
  for axes in freed:
    free = [dim for dim in range(len(shape)) if spec[dim] is None and _fits(shape[dim], axes, mesh)]
    if free:
      spec[free[-1]] = axes
  return PartitionSpec(*spec)


def state_partition_specs(
    optimizer: optax.GradientTransformation, params: Any, param_shardings: Any, mesh: Mesh
) -> Any:
  """``PartitionSpec`` of every leaf of ``optimizer.init(params)``.

  Args:
    optimizer: any optax ``GradientTransformation``.
    params: the parameters, or ``jax.ShapeDtypeStruct`` with their shapes.
    param_shardings: a pytree (the params' structure) of ``NamedSharding``
      or ``PartitionSpec`` (None means replicated).
    mesh: the device mesh the specs refer to.

  Returns:
    A pytree with the state's structure whose leaves are ``PartitionSpec``.
  """
  table = _param_specs(params, param_shardings)
  abstract_state = jax.eval_shape(optimizer.init, params)
  return jax.tree.map_with_path(
      lambda path, leaf: leaf_spec(tuple(leaf.shape), _owner(tuple(path), table), mesh),
      abstract_state,
  )


def state_shardings(
    optimizer: optax.GradientTransformation,
    params: Any,
    param_shardings: Any,
    mesh: Mesh | None = None,
) -> Any:
  """``NamedSharding`` of every leaf of ``optimizer.init(params)``.

  Args:
    optimizer: any optax ``GradientTransformation``.
    params: the parameters, or ``jax.ShapeDtypeStruct`` with their shapes.
    param_shardings: ``NamedSharding`` pytree, or ``PartitionSpec`` pytree
      together with ``mesh``.
    mesh: required when ``param_shardings`` holds ``PartitionSpec``;
      otherwise taken from the first ``NamedSharding``.

  Returns:
    A pytree with the state's structure whose leaves are ``NamedSharding``;
    use it as ``jax.jit(optimizer.init, out_shardings=...)``.
  """
  if mesh is None:
    named = [
        s
        for s in jax.tree.leaves(param_shardings, is_leaf=_is_spec)
        if isinstance(s, NamedSharding)
    ]
    if not named:
      raise ValueError("state_shardings needs mesh= when param_shardings are PartitionSpecs.")
    mesh = named[0].mesh
  specs = state_partition_specs(optimizer, params, param_shardings, mesh)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=_is_spec)
