"""Low-Rank: the kernel is the scaled product of two trainable factors, never stored dense.

In Flax layout (``y = x W``, ``W`` of shape ``(in, out)``)::

    W = (alpha / r) a b,    a: (in, r) ~ U(+-1/sqrt(in)),    b: (r, out) ~ U(+-1/sqrt(r))

which is the paper's ``W = (alpha/r) B A`` (PyTorch layout ``out x in``) with ``a = A^T`` and
``b = B^T``; both bounds are PyTorch's Kaiming-uniform ``1/sqrt(fan_in)`` of the factor seen
as a linear layer. ``x a`` is computed first, so a call costs ``(in + out) r`` per token.

The factors' names and logical axes are every factorized kind's
(:mod:`lowrank_jax.models.linear.factors`).

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from lowrank_jax.models.linear import LinearConfig, make_linear
>>> layer = make_linear(LinearConfig(kind="lowrank", rank=2, alpha=4.0), 6, 5,
...                     ("embed", "mlp"), init_std=0.02, param_dtype=jnp.float32,
...                     compute_dtype=jnp.float32, rngs=nnx.Rngs(0))
>>> layer.a.shape, layer.b.shape, layer.scale
((6, 2), (2, 5), 2.0)
>>> x = jnp.ones((3, 6))
>>> bool(jnp.allclose(layer(x), x @ layer.dense_kernel(), atol=1e-6))
True

Started from a pretrained kernel ``W`` (``model.init_from``), :meth:`LowRankLinear.load_dense`
sets the factors from its truncated SVD ``W ~ U_r S_r V_r^T``, balanced and divided by the
scale: ``a = U_r sqrt(S_r / s)``, ``b = sqrt(S_r / s) V_r^T`` with ``s = alpha / r``, so that
``s a b = U_r S_r V_r^T``, the best rank-``r`` approximation of ``W`` (Eckart-Young); exact at
``r = min(in, out)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lowrank_jax.models.linear.factors import FactorizedLinear, kaiming_uniform, svd_factors
from lowrank_jax.models.linear.registry import register_linear
from lowrank_jax.models.matmul import matmul


class LowRankLinear(FactorizedLinear):
  """``y = (alpha / r) (x a) b``: the paper's Low-Rank parameterization.

  Built as :class:`~lowrank_jax.models.linear.factors.FactorizedLinear` says (``init_std`` is
  unused: the factors are Kaiming-uniform); ``config`` gives ``rank`` and ``alpha``.
  """

  zero_b = False
  """``b`` starts at zero (LoRA and SLTrain, whose product then starts at zero) instead of
  Kaiming-uniform."""

  def factor_initializers(self, in_features, out_features, rank):
    b_init = nnx.initializers.zeros if self.zero_b else kaiming_uniform(rank)
    return kaiming_uniform(in_features), b_init

  def build(self, shape, axes, init_std, param_dtype, rngs, config) -> None:
    super().build(shape, axes, init_std, param_dtype, rngs, config)
    self.scale = config.alpha / config.rank

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.compute_dtype
    hidden = matmul(x.astype(dtype), self.a[...].astype(dtype)) * jnp.asarray(self.scale, dtype)
    return matmul(hidden, self.b[...].astype(dtype))

  def load_dense(self, kernel: jax.Array) -> None:
    """Sets ``a`` and ``b`` so that ``(alpha / r) a b`` is the rank-``r`` truncated SVD of
    ``kernel`` (``(in, out)``, batched over stacked layers); see the module docstring."""
    left, right = svd_factors(kernel, self.a[...].shape[-1])
    unscale = 1.0 / jnp.sqrt(jnp.float32(self.scale))
    self.a[...] = (left * unscale).astype(self.a[...].dtype)
    self.b[...] = (right * unscale).astype(self.b[...].dtype)

  def low_rank_kernel(self, dtype=jnp.float32) -> jax.Array:
    """``(alpha / r) a b`` computed in ``dtype`` (float32 by default); batched over any
    leading (stacked-layer) axes."""
    a, b = self.a[...].astype(dtype), self.b[...].astype(dtype)
    return jnp.asarray(self.scale, dtype) * jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)

  def dense_kernel(self) -> jax.Array:
    """The effective ``(in, out)`` kernel, computed in float32, in the parameters' dtype."""
    return self.low_rank_kernel().astype(self.a[...].dtype)


register_linear("lowrank", LowRankLinear, needs_rank=True)
