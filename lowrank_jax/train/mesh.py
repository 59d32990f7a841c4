"""The device mesh and the mapping of logical axis names onto it.

Mesh axes are ``("data", "fsdp", "tensor")``. The model names every parameter dimension
(``vocab``, ``embed``, ``heads``, ``mlp``, ``norm``, ``layers``, ``rank``); the rules below
send each name to a mesh axis (or none). A dimension that its mesh axes do not divide is
replicated instead of failing, and a mesh axis is used at most once per array.

>>> import jax
>>> from jax.sharding import PartitionSpec as P
>>> mesh = make_mesh(MeshSection(data=2, fsdp=2, tensor=2))
>>> dict(mesh.shape)
{'data': 2, 'fsdp': 2, 'tensor': 2}
>>> logical_to_mesh(("embed", "mlp"), (512, 1376), mesh)
P('fsdp', 'tensor')
>>> logical_to_mesh(("embed", "mlp"), (512, 5461), mesh)  # 5461 is odd: replicated
P('fsdp', None)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from lowrank_jax.train.config import MeshSection

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axes (None: replicated). FSDP shards the model width, tensor
# parallelism the heads, the MLP width and the vocabulary (Megatron layout).
LOGICAL_RULES: dict[str, str | tuple[str, ...] | None] = {
    "embed": "fsdp",
    "heads": "tensor",
    "mlp": "tensor",
    "vocab": "tensor",
    "norm": None,
    "layers": None,
    "rank": None,
    "sparse": None,
}


def make_mesh(section: MeshSection, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ``(data, fsdp, tensor)`` mesh of Auto axes over ``devices`` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = section.shape(len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_to_mesh(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: dict[str, Any] = LOGICAL_RULES) -> PartitionSpec:
  """The mesh ``PartitionSpec`` of an array with logical axis ``names`` and ``shape``."""
  used: set[str] = set()
  spec = []
  for name, size in zip(names, shape):
    axes = rules.get(name) if name is not None else None
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    axes = tuple(a for a in axes if a not in used and mesh.shape[a] > 1)
    if axes and size % math.prod(mesh.shape[a] for a in axes) == 0:
      used.update(axes)
      spec.append(axes[0] if len(axes) == 1 else axes)
    else:
      spec.append(None)
  return PartitionSpec(*spec)


def state_shardings(abstract_state: nnx.State, mesh: Mesh) -> nnx.State:
  """``NamedSharding`` of every variable of an abstract model state, from its logical axes."""
  def sharding(variable):
    names = variable.get_metadata().get("out_sharding") or ()
    shape = variable.get_value().shape
    return variable.replace(NamedSharding(mesh, logical_to_mesh(names, shape, mesh)))

  return jax.tree.map(sharding, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches are split over the data-parallel axes, the sequence axis is whole."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())
