"""Test session set-up: eight fake CPU devices so that sharding tests see a mesh.

The flag must be set before JAX is imported anywhere, which is why it lives in the
root conftest (collected before any test module or doctest).
"""

import os

# LLVM's optimisation of the CPU code is most of a small test's compile time and buys little
# at the tests' sizes.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The test session owns its process, as the lowrank-jax command does: LAPACK on one thread.
from lowrank_jax.optim.linalg import single_threaded_lapack  # noqa: E402

single_threaded_lapack()
