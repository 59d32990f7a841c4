"""The device mesh and the mapping of logical axis names onto it.

Mesh axes are ``("data", "fsdp", "tensor")``. The model names every parameter dimension
(``vocab``, ``embed``, ``heads``, ``mlp``, ``norm``, ``layers``, ``rank``, ``sparse``).
:data:`LOGICAL_RULES` is an ordered list of ``(logical name, mesh axes)`` pairs, as in
MaxText and ``flax.linen``'s ``logical_axis_rules``: a name may appear several times, and
the rules are tried in order. A rule gives its mesh axes to the array's dimensions of that
name that have none yet, if no other dimension of the array uses them already and their
size divides the dimension's (mesh axes of size 1 are dropped). A dimension no rule fits is
replicated, never an error.

The first rules are the Megatron layout (``tensor`` on heads, MLP width and vocabulary, FSDP
on the model width); the later ones are fallbacks so that FSDP reaches arrays without an
``embed`` axis: the factors ``(rank, heads)`` and ``(mlp, rank)`` of low-rank methods (their
``heads``, ``mlp`` or ``rank`` axis), norms, SLTrain's flat sparse values (their ``sparse``
axis, else the layer stack when the count of nonzeros is indivisible).

>>> import jax
>>> from jax.sharding import PartitionSpec as P
>>> mesh = make_mesh(MeshSection(data=2, fsdp=2, tensor=2))
>>> dict(mesh.shape)
{'data': 2, 'fsdp': 2, 'tensor': 2}
>>> logical_to_mesh(("embed", "mlp"), (512, 1376), mesh)
P('fsdp', 'tensor')
>>> logical_to_mesh(("embed", "mlp"), (512, 5461), mesh)  # 5461 is odd: replicated
P('fsdp', None)
>>> logical_to_mesh(("rank", "mlp"), (64, 1376), mesh)  # no embed axis: rank takes fsdp
P('fsdp', 'tensor')
>>> fsdp_only = make_mesh(MeshSection(data=1, fsdp=8, tensor=1))
>>> logical_to_mesh(("rank", "heads"), (64, 512), fsdp_only)  # heads falls back to fsdp
P(None, 'fsdp')
>>> logical_to_mesh(("layers", "sparse"), (24, 4915), fsdp_only)  # odd count: the stack
P('fsdp', None)
"""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from lowrank_jax.train.config import MeshSection

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# (logical name, mesh axes), tried in order; see the module docstring.
Rule = tuple[str, str | tuple[str, ...]]
LOGICAL_RULES: tuple[Rule, ...] = (
    # Megatron layout: FSDP shards the model width, tensor parallelism the heads, the MLP
    # width and the vocabulary; the flat sparse values split over both.
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("sparse", ("fsdp", "tensor")),
    # Fallbacks for arrays that have no embed axis (or an indivisible one).
    ("heads", "fsdp"),
    ("mlp", "fsdp"),
    ("rank", "fsdp"),
    ("norm", "fsdp"),
    ("sparse", "fsdp"),
    ("sparse", "tensor"),
    ("layers", "fsdp"),
)


def make_mesh(section: MeshSection, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ``(data, fsdp, tensor)`` mesh of Auto axes over ``devices`` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = section.shape(len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_to_mesh(
    names: Sequence[str | None],
    shape: Sequence[int],
    mesh: Mesh,
    rules: Sequence[Rule] = LOGICAL_RULES,
) -> PartitionSpec:
  """The mesh ``PartitionSpec`` of an array with logical axis ``names`` and ``shape``."""
  spec: list[str | tuple[str, ...] | None] = [None] * len(names)
  used: set[str] = set()
  for name, mesh_axes in rules:
    axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
    axes = tuple(a for a in axes if mesh.shape[a] > 1)
    if not axes or used.intersection(axes):
      continue
    for dim, (dim_name, size) in enumerate(zip(names, shape)):
      if (
          dim_name == name
          and spec[dim] is None
          and size % math.prod(mesh.shape[a] for a in axes) == 0
      ):
        spec[dim] = axes[0] if len(axes) == 1 else axes
        used.update(axes)
        break
  return PartitionSpec(*spec)


def state_shardings(abstract_state: nnx.State, mesh: Mesh) -> nnx.State:
  """``NamedSharding`` of every variable of an abstract model state, from its logical axes."""

  def sharding(variable):
    names = variable.get_metadata().get("out_sharding") or ()
    shape = variable.get_value().shape
    return variable.replace(NamedSharding(mesh, logical_to_mesh(names, shape, mesh)))

  return jax.tree.map(sharding, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, axes: tuple[str, ...] = BATCH_AXES) -> NamedSharding:
  """Batches are split over the data-parallel ``axes``, the sequence axis is whole."""
  return NamedSharding(mesh, PartitionSpec(axes))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def unsharded_large_arrays(
    shardings: Any, abstract_state: Any, threshold_bytes: int
) -> list[tuple[str, tuple[int, ...], int]]:
  """The arrays of more than ``threshold_bytes`` that every device holds whole.

  Args:
    shardings: a pytree of ``NamedSharding`` (e.g. :func:`state_shardings` of the state).
    abstract_state: the same structure with arrays or ``jax.ShapeDtypeStruct`` leaves.
    threshold_bytes: arrays of at most this many bytes are not reported.

  Returns:
    ``(key path, shape, bytes)`` of each fully replicated array above the threshold, on a
    mesh of more than one device (on one device nothing counts as replicated).

  >>> import jax.numpy as jnp
  >>> mesh = make_mesh(MeshSection(data=1, fsdp=8, tensor=1))
  >>> shapes = {"w": jax.ShapeDtypeStruct((64, 8), jnp.float32), "b": jax.ShapeDtypeStruct((8,), jnp.float32)}
  >>> unsharded_large_arrays({"w": replicated(mesh), "b": replicated(mesh)}, shapes, 1024)
  [("['w']", (64, 8), 2048)]
  """
  found = []
  leaves = jax.tree.leaves_with_path(abstract_state)
  for (path, leaf), sharding in zip(
      leaves, jax.tree.structure(abstract_state).flatten_up_to(shardings)
  ):
    size = math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize
    if size > threshold_bytes and sharding.num_devices > 1 and sharding.is_fully_replicated:
      found.append((jax.tree_util.keystr(path), tuple(leaf.shape), size))
  return found
