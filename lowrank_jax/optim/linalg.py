"""Matrix decompositions that are safe on every backend: QR, thin SVD, symmetric eigh and a
triangular solve.

On GPU and TPU these are JAX's own. On CPU a batch of matrices (leading axes, or a
``vmap``) is decomposed one matrix per LAPACK call inside a ``lax.map``. jaxlib's batched
CPU kernels spread a batch over the intra-op thread pool and block until it is done; when
two such kernels run at once (two factors' QRs, or several host devices of a sharded step)
every pool thread can end up waiting and the program deadlocks. One matrix per call never
waits on the pool.

jaxlib's CPU LAPACK is SciPy's OpenBLAS, called from XLA's own intra-op threads. A
multithreaded OpenBLAS there oversubscribes the cores, and its spinning threads collapse
when other work shares them; on one thread LAPACK's divide-and-conquer SVD is also the
faster one. The thread count is process-wide, so this library never sets it: a program that
owns its process calls :func:`single_threaded_lapack` once (the ``lowrank-jax`` command, the
benchmarks of ``experiments/bench`` and the test session do), and ``OPENBLAS_NUM_THREADS``,
when set, wins. NumPy's own OpenBLAS (a separate library) is left alone.

>>> import jax.numpy as jnp
>>> x = jnp.arange(24.0).reshape(2, 4, 3) ** 0.5
>>> q, r = qr(x)
>>> bool(jnp.allclose(q @ r, x, atol=1e-5)), q.shape, r.shape
(True, (2, 4, 3), (2, 3, 3))
>>> u, s, vt = svd(x)
>>> bool(jnp.allclose((u * s[..., None, :]) @ vt, x, atol=1e-4))
True
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax


def _scipy_openblas() -> list[ctypes.CDLL]:
  """SciPy's OpenBLAS libraries (jaxlib's CPU LAPACK), loaded; none when SciPy is missing or
  its LAPACK is not OpenBLAS."""
  try:
    import scipy.linalg.cython_lapack  # noqa: F401  (loads the library jaxlib calls)
  except ImportError:
    return []
  libs = os.path.join(os.path.dirname(os.path.dirname(scipy.linalg.__file__)), "..", "scipy.libs")
  return [
      ctypes.CDLL(path) for path in sorted(glob.glob(os.path.join(libs, "libscipy_openblas*.so*")))
  ]


@functools.cache
def single_threaded_lapack() -> bool:
  """Sets SciPy's OpenBLAS (jaxlib's CPU LAPACK) to one thread, for the whole process; True
  if it did.

  An explicit choice of the program that owns the process (see the module docstring); a
  no-op (False) when ``OPENBLAS_NUM_THREADS`` is set or SciPy's LAPACK is not OpenBLAS.
  """
  if "OPENBLAS_NUM_THREADS" in os.environ:
    return False
  done = False
  for library in _scipy_openblas():
    setter = getattr(library, "scipy_openblas_set_num_threads", None)
    if setter is not None:
      setter(1)
      done = True
  return done


def lapack_kernel() -> str | None:
  """The kernels SciPy's OpenBLAS chose for this CPU when it loaded (e.g. ``SkylakeX`` on an
  AVX-512 machine, ``Haswell`` on an AVX2 one); ``None`` without OpenBLAS.

  They decide the last bits of every CPU SVD and QR, so a method that decomposes (GaLore,
  Fira, LoRO, the refactorizations) gives bitwise the same run on two machines only with
  the same kernels; ``OPENBLAS_CORETYPE`` forces a set.

  >>> kernel = lapack_kernel()
  >>> kernel is None or (isinstance(kernel, str) and kernel != "")
  True
  """
  for library in _scipy_openblas():
    getter = getattr(library, "scipy_openblas_get_corename", None)
    if getter is not None:
      getter.restype = ctypes.c_char_p
      return getter().decode().strip()
  return None


def _leading_replicated(x: jax.Array) -> jax.Array:
  """``x`` with its leading axis unsharded (``lax.map`` needs that under Explicit mesh axes)."""
  spec = getattr(jax.typeof(x).sharding, "spec", None)
  if spec is None or not tuple(spec) or tuple(spec)[0] is None:
    return x
  return jax.sharding.reshard(x, jax.sharding.PartitionSpec(None, *tuple(spec)[1:]))


def _one_matrix_per_call(decompose: Callable) -> Callable:
  """``decompose`` of one matrix, extended to leading axes and vmap by a ``lax.map``."""

  @jax.custom_batching.custom_vmap
  def single(matrix):
    return decompose(matrix)

  @single.def_vmap
  def batched(axis_size, in_batched, matrices):
    del axis_size, in_batched
    out = lax.map(single, _leading_replicated(matrices))
    return out, jax.tree.map(lambda _: True, out)

  def apply(matrix):
    if matrix.ndim == 2:
      return single(matrix)
    leading = matrix.shape[:-2]
    out = lax.map(single, _leading_replicated(matrix.reshape(-1, *matrix.shape[-2:])))
    return jax.tree.map(lambda x: x.reshape(*leading, *x.shape[1:]), out)

  return apply


def _platform_safe(cpu: Callable, default: Callable) -> Callable:
  cpu = _one_matrix_per_call(cpu)
  return lambda matrix: lax.platform_dependent(matrix, cpu=cpu, default=default)


qr = _platform_safe(
    lambda m: lax.linalg.qr(m, full_matrices=False), lambda m: lax.linalg.qr(m, full_matrices=False)
)
qr.__doc__ = "Reduced QR ``(q, r)`` of ``(..., m, n)`` matrices."


def _thin_svd(
    matrix: jax.Array, algorithm: lax.linalg.SvdAlgorithm | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
  return lax.linalg.svd(matrix, full_matrices=False, algorithm=algorithm)


def _converged_thin_svd(matrix: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The thin SVD by LAPACK's divide and conquer (``gesdd``), or, where that did not
  converge, by QR iteration (``gesvd``).

  ``gesdd`` can fail to converge on a matrix whose small singular values cluster near zero
  (seen on the rank-deficient ``2r x 2r`` core of a LoRO manifold step, singular values from
  1.1 down to 8e-8), and jaxlib then returns NaN factors. QR iteration is slower and does
  not fail there; it runs only for a matrix whose first result is not finite, so every
  other matrix gets exactly the divide-and-conquer result.
  """
  u, s, vt = factors = _thin_svd(matrix)
  converged = jnp.isfinite(u).all() & jnp.isfinite(s).all() & jnp.isfinite(vt).all()
  return lax.cond(converged, lambda: factors, lambda: _thin_svd(matrix, lax.linalg.SvdAlgorithm.QR))


svd = _platform_safe(_converged_thin_svd, _thin_svd)
svd.__doc__ = """Thin SVD ``(u, s, vt)`` of ``(..., m, n)`` matrices, singular values descending.

On CPU a matrix on which LAPACK's divide-and-conquer SVD does not converge is decomposed
again by QR iteration (:func:`_converged_thin_svd`) instead of coming back as NaN."""

eigh = _platform_safe(lambda m: lax.linalg.eigh(m)[::-1], lambda m: lax.linalg.eigh(m)[::-1])
eigh.__doc__ = "``(eigenvalues ascending, eigenvectors as columns)`` of symmetric matrices."


def gram_eigenvectors(matrix: jax.Array) -> jax.Array:
  r"""Eigenvectors of the Gram matrix ``A A^T`` of ``(..., p, k)`` matrices, as the columns
  of a ``(..., p, p)`` array in descending order of eigenvalue.

  They are the left singular vectors of ``A`` (eigenvalues :math:`\sigma_i^2`), found by a
  symmetric eigensolver; squaring the singular values costs accuracy in the vectors of the
  small ones (an eigenvector's error grows like :math:`\sigma_1^2 / (\sigma_i^2 -
  \sigma_{i+1}^2)` instead of :math:`\sigma_1 / (\sigma_i - \sigma_{i+1})`).
  The product runs at full float32 precision (no TF32 on GPUs).

  >>> import jax.numpy as jnp
  >>> a = jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
  >>> jnp.abs(gram_eigenvectors(a)[:, 0]).tolist()
  [1.0, 0.0, 0.0]
  """
  gram = jax.numpy.matmul(
      matrix, jax.numpy.swapaxes(matrix, -1, -2), precision=lax.Precision.HIGHEST
  )
  return eigh(gram)[1][..., ::-1]


def _thin_left_singular_vectors(matrix: jax.Array) -> jax.Array:
  return svd(matrix)[0]


def _gram_thin_left_singular_vectors(matrix: jax.Array) -> jax.Array:
  return gram_eigenvectors(matrix)[..., : min(matrix.shape[-2:])]


def left_singular_vectors(matrix: jax.Array) -> jax.Array:
  """``U`` of the thin SVD of ``(..., p, k)`` matrices, columns by descending singular value.

  On CPUs and NVIDIA GPUs ``U`` comes from :func:`gram_eigenvectors`, with the same top
  subspace as the SVD's to four digits of captured gradient energy and several times faster
  there (cuSOLVER's SVD is slow; ``experiments/results/bench/README.md`` has the factors).
  Elsewhere (TPUs) from the SVD.

  >>> import jax.numpy as jnp
  >>> u = left_singular_vectors(jnp.array([[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]]))
  >>> u.shape, jnp.abs(u[:, 0]).tolist()
  ((3, 2), [1.0, 0.0, 0.0])
  """
  return lax.platform_dependent(
      matrix,
      cpu=_gram_thin_left_singular_vectors,
      cuda=_gram_thin_left_singular_vectors,
      default=_thin_left_singular_vectors,
  )


def _solve_packed(packed):
  """``x`` with ``r^T x = b`` from ``packed = [r | b]``, ``r`` upper-triangular and square
  (one array, so that the CPU path can map over single matrices like the others)."""
  size = packed.shape[-2]
  return lax.linalg.triangular_solve(
      packed[..., :size], packed[..., size:], left_side=True, lower=False, transpose_a=True
  )


_solve_transposed = _platform_safe(_solve_packed, _solve_packed)


def solve_upper_transposed(r: jax.Array, b: jax.Array) -> jax.Array:
  """``x = r^{-T} b`` for upper-triangular ``(..., n, n)`` ``r`` (e.g. from :func:`qr`) and
  ``(..., n, k)`` ``b``, by a triangular solve; ``r`` must be invertible."""
  return _solve_transposed(jax.numpy.concatenate([r, b], axis=-1))
