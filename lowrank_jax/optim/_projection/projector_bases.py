r"""Projector bases: each maps a matrix ``G`` (``p x k``, float32) to a ``p x r`` basis.

A refresh computes a new projector from the current gradient, in float32, by one of

* ``"svd"``: the top-``r`` left singular vectors of ``G`` (as the references). On CPUs and
  NVIDIA GPUs they are computed as ``"eigh"``'s Gram-matrix eigenvectors, the same subspace
  at a fraction of the cost there (:func:`lowrank_jax.optim.linalg.left_singular_vectors`);
* ``"eigh"``: the top-``r`` eigenvectors of the ``p x p`` Gram matrix
  ``G G^T``: the same subspace as the SVD's (up to the precision lost by
  squaring the singular values), through a symmetric eigensolver, usually
  much cheaper than an SVD on accelerators;
* ``"randomized"``: a randomized range finder (Halko et al. 2011):
  ``Y = (G G^T)^q G Omega`` with ``r + oversample`` Gaussian columns,
  re-orthonormalised after each power iteration, then an SVD of the small
  ``Q^T G``;
* ``"gaussian"``: i.i.d. ``N(0, 1/r)`` entries (APOLLO), drawn from a
  per-matrix key (:func:`~lowrank_jax.optim._projection.threefry_normal.standard_normal`),
  so the projector need not be stored;
* ``"orthonormal"``: a uniformly random orthonormal basis (GoLore), the Q of
  the QR of a Gaussian matrix.

Singular vectors are only defined up to sign; each column of an SVD-based
projector is flipped so that its largest-magnitude entry is positive. That
makes the optimizer reproducible across backends (and comparable with the
references, whose moments survive a refresh).

>>> import jax, jax.numpy as jnp
>>> refresh = make_refresher("eigh", rank=2)
>>> basis = refresh(jnp.diag(jnp.array([1.0, 3.0, 2.0])), jax.random.key(0), 0)
>>> basis.T  # the two directions of largest singular value, signs made positive
Array([[0., 1., 0.],
       [0., 0., 1.]], dtype=float32)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from lowrank_jax.optim import linalg
from lowrank_jax.optim._projection.threefry_normal import standard_normal

REFRESHES = ("svd", "eigh", "randomized", "gaussian", "orthonormal")

Refresher = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def canonical_signs(basis: jax.Array) -> jax.Array:
  """Flips each column of ``basis`` so that its largest-magnitude entry is positive."""
  largest = jnp.take_along_axis(basis, jnp.argmax(jnp.abs(basis), axis=0)[None], axis=0)
  return basis * jnp.where(largest < 0, -1.0, 1.0).astype(basis.dtype)


def svd_basis(matrix: jax.Array, rank: int) -> jax.Array:
  """Top-``rank`` left singular vectors of ``matrix``, sign-canonicalised."""
  return canonical_signs(linalg.left_singular_vectors(matrix)[:, :rank])


def eigh_basis(matrix: jax.Array, rank: int) -> jax.Array:
  """Top-``rank`` eigenvectors of ``matrix @ matrix.T``, sign-canonicalised."""
  return canonical_signs(linalg.gram_eigenvectors(matrix)[:, :rank])


def randomized_basis(
    matrix: jax.Array, key: jax.Array, rank: int, oversample: int, power_iterations: int
) -> jax.Array:
  """Approximate top-``rank`` left singular vectors by a randomized range finder.

  The products run at full float32 precision (no TF32 on GPUs).
  """
  rows, cols = matrix.shape
  width = min(rank + oversample, rows, cols)
  dot = functools.partial(jnp.matmul, precision=lax.Precision.HIGHEST)
  sketch = standard_normal(key, (cols, width)).astype(matrix.dtype)
  basis, _ = linalg.qr(dot(matrix, sketch))
  for _ in range(power_iterations):
    basis, _ = linalg.qr(dot(matrix, dot(matrix.T, basis)))
  small_u = linalg.left_singular_vectors(dot(basis.T, matrix))
  return canonical_signs(dot(basis, small_u[:, :rank]))


def gaussian_basis(rows: int, key: jax.Array, rank: int) -> jax.Array:
  """A ``rows x rank`` matrix of i.i.d. ``N(0, 1/rank)`` entries (APOLLO).

  Drawn as its ``rank x rows`` transpose, the operand :func:`project` multiplies
  on CPUs for a matrix projected on its rows: there the transposes cancel, and
  the draw is written row by row.
  """
  return (standard_normal(key, (rank, rows)) / math.sqrt(rank)).T


def orthonormal_basis(rows: int, key: jax.Array, rank: int) -> jax.Array:
  """A uniformly random ``rows x rank`` matrix with orthonormal columns (GoLore)."""
  q, r = linalg.qr(standard_normal(key, (rows, rank)))
  return q * jnp.sign(jnp.diagonal(r))


def make_refresher(
    kind: str,
    rank: int,
    oversample: int = 8,
    power_iterations: int = 1,
    random_from_step: int | None = None,
) -> Refresher:
  """The refresh function ``(matrix, key, count) -> projector`` of ``kind``.

  With ``random_from_step``, refreshes at steps ``>= random_from_step`` draw
  a random orthonormal basis instead (GoLore); the switch is a ``lax.cond``
  on the scalar step count.
  """
  basis_fns = {
      "svd": lambda matrix, key: svd_basis(matrix, rank),
      "eigh": lambda matrix, key: eigh_basis(matrix, rank),
      "randomized": lambda matrix, key: randomized_basis(
          matrix, key, rank, oversample, power_iterations
      ),
      "gaussian": lambda matrix, key: gaussian_basis(matrix.shape[0], key, rank),
      "orthonormal": lambda matrix, key: orthonormal_basis(matrix.shape[0], key, rank),
  }
  basis = basis_fns[kind]
  if random_from_step is None:
    return lambda matrix, key, count: basis(matrix, key)
  return lambda matrix, key, count: lax.cond(
      count >= random_from_step, basis_fns["orthonormal"], basis, matrix, key
  )
