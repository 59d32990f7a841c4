r"""The projection refresh spread over devices: each device decomposes whole matrices.

A refresh decomposes every matrix of a batch ``G`` of shape ``(B, m, n)`` (a
layer stack, or any leaf in the layout of
:func:`lowrank_jax.optim._projection.projection.to_matrices`). Left to XLA, a decomposition
of sharded matrices is computed on every device after an all-gather: each of the
``D`` devices gathers all ``B m n`` floats (at once for a batched decomposition,
one matrix per step of the CPU loop of :mod:`lowrank_jax.optim.linalg`) and does
all ``B`` decompositions.
Spread over the ``D = prod(mesh.shape[a] for a in axes)`` devices of the mesh
``axes``, device ``d`` instead decomposes only whole matrices of its slice:

.. math::
  B' = D \lceil B / D \rceil, \qquad
  G_d = G'[d B'/D : (d + 1) B'/D] \quad \text{(the batch padded to } B'
  \text{ with copies of its first matrices)},

holding ``B' m n / D`` floats and doing ``B' / D`` decompositions. The batch is
moved to that layout one mesh axis at a time (for ``axes = (a_1, ..., a_k)``
the batch axis is sharded over ``(a_1, ..., a_i)`` after step ``i``, the matrix
axes left to XLA): each step moves a single mesh axis, which XLA does with one
all-to-all (or a local slice, where the batch was replicated over that axis),
whereas moving several axes at once makes it gather the whole batch first. The
decomposition runs under :func:`jax.shard_map` on each device's block; the
results (the projectors, ``r / n`` of the batch's size) come back sharded over
the batch axis, and XLA (or, under ``Explicit`` mesh axes, the caller) reshards
them to the state's sharding.

The optimizers use it through
``ProjectionOptions(refresh_axes=("data", "fsdp", "tensor"))`` (with
``refresh_mesh=mesh``, or the mesh of ``jax.set_mesh``); without a mesh, or on
one device, the refresh is the undistributed one.

>>> import jax, jax.numpy as jnp
>>> mesh = jax.make_mesh((jax.device_count(),), ("x",))
>>> matrices = jnp.arange(3 * 4 * 2.0).reshape(3, 4, 2)
>>> double = lambda batch: (2 * batch,)  # any map over the leading axis
>>> (out,) = jax.jit(lambda g: spread_over_devices(double, (g,), mesh=mesh, axes=("x",)))(matrices)
>>> out.shape, bool((out == 2 * matrices).all())
((3, 4, 2), True)
"""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec


def check_placement(axes, mesh) -> None:
  """Validates ``refresh_axes`` and ``refresh_mesh``; raises a one-line ``ValueError``."""
  if axes is not None and (
      not isinstance(axes, tuple)
      or not axes
      or not all(isinstance(a, str) for a in axes)
      or len(set(axes)) < len(axes)
  ):
    raise ValueError(
        f"refresh_axes must be None or a non-empty tuple of distinct mesh axis "
        f"names, got {axes!r}."
    )
  if mesh is not None and not isinstance(mesh, (jax.sharding.Mesh, jax.sharding.AbstractMesh)):
    raise ValueError(
        f"refresh_mesh must be None or a jax.sharding.Mesh, got " f"{type(mesh).__name__}."
    )
  if mesh is not None and axes is not None:
    active_mesh(mesh, axes)


def active_mesh(mesh, axes: Sequence[str] | None):
  """The mesh to spread a refresh over, or None for the undistributed refresh.

  ``mesh`` None takes the ambient mesh (``jax.set_mesh``); None is returned
  when ``axes`` is None, no mesh is set, or ``axes`` span a single device.
  Raises ``ValueError`` if an axis is not in the mesh.
  """
  if axes is None:
    return None
  mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
  if mesh is None or mesh.empty:
    return None
  missing = [a for a in axes if a not in mesh.axis_names]
  if missing:
    raise ValueError(
        f"refresh_axes {tuple(axes)} name axes {missing} that the mesh "
        f"{tuple(mesh.axis_names)} lacks."
    )
  return mesh if math.prod(mesh.shape[a] for a in axes) > 1 else None


def _pad_batch(x: jax.Array, padded: int) -> jax.Array:
  """``x`` with its leading axis extended to ``padded`` by repeating it (wrap)."""
  copies = -(-padded // x.shape[0])
  return x if copies == 1 else jnp.concatenate([x] * copies)[:padded]


def _move_batch(x: jax.Array, mesh, axes: tuple[str, ...]) -> jax.Array:
  """``x`` with its leading axis sharded over ``axes``, one mesh axis per step."""
  for i in range(1, len(axes) + 1):
    if _explicit(mesh, axes):
      spec = tuple(jax.typeof(x).sharding.spec) + (None,) * x.ndim
      rest = [_without(entry, axes[:i]) for entry in spec[1 : x.ndim]]
      x = jax.sharding.reshard(x, NamedSharding(mesh, PartitionSpec(axes[:i], *rest)))
    else:
      rest = (PartitionSpec.UNCONSTRAINED,) * (x.ndim - 1)
      x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(axes[:i], *rest)))
  return x


def _explicit(mesh, axes: tuple[str, ...]) -> bool:
  return any(mesh.axis_types[mesh.axis_names.index(a)] == AxisType.Explicit for a in axes)


def _unpad(x: jax.Array, batch: int, mesh, axes: tuple[str, ...]) -> jax.Array:
  """The first ``batch`` entries of ``x`` (replicated first if ``Explicit`` axes split them)."""
  if x.shape[0] == batch:
    return x
  if _explicit(mesh, axes):
    x = jax.sharding.reshard(x, NamedSharding(mesh, PartitionSpec()))
  return x[:batch]


def _without(entry, axes: tuple[str, ...]):
  """A spec entry with ``axes`` removed (None if none is left)."""
  names = (entry,) if isinstance(entry, str) else tuple(entry or ())
  kept = tuple(a for a in names if a not in axes)
  return kept[0] if len(kept) == 1 else (kept or None)


def spread_over_devices(
    fn: Callable[..., Any], operands: tuple, *, mesh, axes: Sequence[str]
) -> Any:
  """Runs ``fn`` on each device's slice of the batch, whole matrices per device.

  Args:
    fn: maps arrays with a leading batch axis to a pytree of arrays with the
      same leading axis (e.g. a ``vmap`` of one matrix's refresh); it may
      close over scalars (the step count), which every device sees.
    operands: a tuple of pytrees (None allowed) of arrays of leading size ``B``.
    mesh: a ``Mesh`` or ``AbstractMesh`` holding ``axes``.
    axes: the mesh axes the batch is split over.

  Returns:
    ``fn``'s result for the whole batch (length ``B``: the padding is
    dropped), sharded over ``axes`` on its leading axis when no padding was
    needed; XLA places the sliced result otherwise.
  """
  axes = tuple(axes)
  devices = math.prod(mesh.shape[a] for a in axes)
  batch = jax.tree.leaves(operands)[0].shape[0]
  padded = devices * -(-batch // devices)
  operands = jax.tree.map(lambda x: _move_batch(_pad_batch(x, padded), mesh, axes), operands)
  spec = PartitionSpec(axes)
  out = jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec, axis_names=set(axes))(*operands)
  return jax.tree.map(lambda x: _unpad(x, batch, mesh, axes), out)
