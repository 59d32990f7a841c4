"""Shardings of the refresh's batch of matrices ``(B, a, b)`` under an explicit mesh.

A decomposition needs whole matrices; with ``Explicit`` mesh axes JAX refuses to decompose a
sharded one and does not reshard by itself, so the refresh gathers the two matrix axes
(keeping the batch axis sharded) and puts its results back in the state's sharding. Under
``Auto`` axes, or without a mesh, every function here returns its input and XLA decides.

>>> import jax.numpy as jnp
>>> x = jnp.ones((2, 4, 3))
>>> gather_matrices(x) is x and like_sharding(x, x) is x  # no mesh: nothing to do
True
"""

from __future__ import annotations

import jax


def gather_matrices(x: jax.Array) -> jax.Array:
  """Replicates the two matrix axes of ``x`` (B, a, b) under an explicit mesh.

  An SVD needs whole matrices: with ``Explicit`` mesh axes JAX refuses a
  sharded input, so the matrices are gathered (the batch axis stays sharded).
  Under ``Auto`` axes (or no mesh) this is a no-op and XLA decides.
  """
  spec = getattr(jax.typeof(x).sharding, "spec", None)
  if spec is None or all(axes is None for axes in tuple(spec)[-2:]):
    return x
  return jax.sharding.reshard(x, jax.sharding.PartitionSpec(*tuple(spec)[:-2], None, None))


def like_sharding(x: jax.Array, like: jax.Array) -> jax.Array:
  """``x`` resharded as ``like`` under an explicit mesh (a no-op otherwise)."""
  spec = getattr(jax.typeof(like).sharding, "spec", None)
  if spec is None or getattr(jax.typeof(x).sharding, "spec", None) == spec:
    return x
  return jax.sharding.reshard(x, spec)


def batch_like(x, matrices: jax.Array):
  """``x`` (one entry per matrix) sharded like the batch axis of ``matrices``."""
  spec = getattr(jax.typeof(matrices).sharding, "spec", None)
  if x is None or spec is None or not tuple(spec) or tuple(spec)[0] is None:
    return x
  return jax.sharding.reshard(x, jax.sharding.PartitionSpec(tuple(spec)[0]))
