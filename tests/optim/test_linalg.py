"""The CPU decompositions: an SVD that LAPACK's divide and conquer does not converge on.

The matrices are from a LoRO run that went NaN (the micro protocol, lr 7.5e-4, step 900):
layer 2's ``down_proj`` manifold step, whose ``2r x 2r`` core has singular values from 1.1
down to 8e-8. On jaxlib's CPU LAPACK ``gesdd`` returns NaN for that core.
"""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lowrank_jax.optim import linalg
from lowrank_jax.optim.refactorize import balanced_factors

CASE = np.load(pathlib.Path(__file__).parent / "data" / "gesdd_nonconvergent.npz")


def _assert_thin_svd_of(matrix, u, s, vt):
  assert all(np.isfinite(x).all() for x in (u, s, vt))
  assert np.all(np.diff(s, axis=-1) <= 0)  # descending
  np.testing.assert_allclose((u * s[..., None, :]) @ vt, matrix, atol=1e-5)
  eye = np.eye(matrix.shape[-1])
  np.testing.assert_allclose(np.swapaxes(u, -1, -2) @ u, np.broadcast_to(eye, u.shape), atol=1e-5)


def test_svd_decomposes_a_matrix_divide_and_conquer_fails_on():
  core = jnp.asarray(CASE["core"])
  _assert_thin_svd_of(CASE["core"], *map(np.asarray, linalg.svd(core)))


def test_only_the_failing_matrix_of_a_batch_is_decomposed_again():
  good = jax.random.normal(jax.random.key(0), CASE["core"].shape)
  batch = jnp.stack([good, jnp.asarray(CASE["core"])])
  u, s, vt = map(np.asarray, linalg.svd(batch))
  _assert_thin_svd_of(np.asarray(batch), u, s, vt)
  for got, want in zip((u[0], s[0], vt[0]), jax.lax.linalg.svd(good, full_matrices=False)):
    np.testing.assert_array_equal(got, want)  # exactly divide and conquer's result
  under_vmap = jax.vmap(linalg.svd)(batch)
  for got, want in zip(under_vmap, (u, s, vt)):
    np.testing.assert_array_equal(np.asarray(got), want)


def test_the_balanced_factors_of_the_diverged_loro_step_are_finite():
  left, right = balanced_factors(jnp.asarray(CASE["left"]), jnp.asarray(CASE["right"]))
  assert np.isfinite(left).all() and np.isfinite(right).all()
  np.testing.assert_allclose(left @ right, CASE["left"] @ CASE["right"], atol=1e-5)
  np.testing.assert_allclose(left.T @ left, right @ right.T, atol=1e-5)


@pytest.mark.parametrize("kernel", ["Haswell", "Sandybridge"])
def test_lapack_kernel_names_the_kernels_openblas_was_told_to_load(kernel):
  shown = subprocess.run(
      [sys.executable, "-c", "from lowrank_jax.optim import linalg; print(linalg.lapack_kernel())"],
      env={**os.environ, "OPENBLAS_CORETYPE": kernel},
      capture_output=True,
      text=True,
      check=True,
  )
  assert shown.stdout.strip() == kernel
