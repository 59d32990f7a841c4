"""Model parameters annotated with logical axis names, the trainer's handle for sharding them.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> kernel = param(nnx.Rngs(0), nnx.initializers.zeros, (4, 3), jnp.float32, ("embed", "mlp"))
>>> kernel.out_sharding
('embed', 'mlp')
"""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx


def param(
    rngs: nnx.Rngs,
    init: Callable,
    shape: tuple[int, ...],
    dtype,
    axes: tuple[str | None, ...],
    variable: type[nnx.Variable] = nnx.Param,
) -> nnx.Variable:
  """A parameter annotated with logical axis names (one per dimension) for sharding.

  The names are stored as the ``out_sharding`` metadata that ``nnx.get_partition_spec``
  reads; the trainer maps them onto mesh axes with its logical-axis rules. ``variable``
  is the variable type: ``nnx.Param`` (trained) or a non-trainable ``nnx.Variable`` subclass.
  """
  if len(axes) != len(shape):
    raise ValueError(f"axes {axes} do not name every dimension of shape {shape}")
  return variable(init(rngs.params(), shape, dtype), out_sharding=axes, eager_sharding=False)
