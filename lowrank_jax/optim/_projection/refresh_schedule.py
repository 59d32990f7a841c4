"""When each projected matrix refreshes, and the random key of each refresh.

Every ``update_proj_gap`` steps (step 0 included) a matrix's projector is recomputed. With
``stagger=True`` the matrices (all leaves, each layer of a stack) get offsets spread over the
gap, so that no single step pays every decomposition; step 0 still refreshes all of them.
A random basis draws from a key that depends only on the seed, the leaf's key path, the
matrix's index and its refresh number, so it can be regenerated instead of stored.

>>> offsets = stagger_offsets(4, start=0, total=4, gap=200, stagger=True)
>>> offsets.tolist(), refresh_due(50, 200, offsets).tolist()
([0, 50, 100, 150], [False, True, False, False])
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np


def stagger_offsets(
    num_matrices: int, start: int, total: int, gap: int, stagger: bool
) -> np.ndarray:
  """Refresh offsets (in ``[0, gap)``) of matrices ``start .. start + num_matrices``.

  Without staggering every offset is 0; with it, matrix ``j`` of ``total``
  refreshes at the steps ``t`` with ``t % gap == (j * gap) // total``.
  """
  indices = np.arange(start, start + num_matrices)
  return (indices * gap) // max(total, 1) if stagger else np.zeros_like(indices)


def refresh_due(count: jax.Array, gap: int, offsets: np.ndarray) -> jax.Array:
  """Bool vector: which matrices refresh at step ``count`` (all of them at step 0)."""
  return (count % gap == jnp.asarray(offsets, jnp.int32)) | (count == 0)


def leaf_id(path) -> int:
  """A stable 31-bit id of a leaf's key path (independent of the other leaves)."""
  return zlib.crc32(jax.tree_util.keystr(tuple(path)).encode()) & 0x7FFFFFFF


def refresh_keys(
    seed: int, leaf: int, count: jax.Array, gap: int, offsets: np.ndarray
) -> jax.Array:
  """One key per matrix of a leaf, fixed between two of that matrix's refreshes.

  The key folds the seed with the leaf's id (:func:`leaf_id`, so masking or
  adding other parameters does not change it), the matrix's index in the leaf
  and its refresh number ``(count + gap - offset) // gap``, which increases
  exactly at its refreshes.
  """
  base = jax.random.fold_in(jax.random.key(seed), leaf)
  refresh_number = (count + gap - jnp.asarray(offsets, jnp.int32)) // gap
  return jax.vmap(lambda i, n: jax.random.fold_in(jax.random.fold_in(base, i), n))(
      jnp.arange(len(offsets)), refresh_number
  )
