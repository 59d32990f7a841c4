"""One target linear built as the model builds its own (``make_linear`` with the model's axes
and init), shared by the tests of the linear kinds (``tests`` is on pytest's ``pythonpath``)."""

import jax.numpy as jnp
from flax import nnx

from lowrank_jax.models import LinearConfig, make_linear


def linear_layer(
    config: LinearConfig,
    in_features: int = 12,
    out_features: int = 10,
    *,
    seed=0,
    dtype=jnp.float32,
):
  """The ``in_features -> out_features`` linear of ``config``'s kind, an MLP's up projection
  (axes ``embed, mlp``), its parameters and computation in ``dtype``, drawn from ``seed``."""
  return make_linear(
      config,
      in_features,
      out_features,
      ("embed", "mlp"),
      init_std=0.02,
      param_dtype=dtype,
      compute_dtype=dtype,
      rngs=nnx.Rngs(seed),
  )
