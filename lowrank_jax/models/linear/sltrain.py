"""SLTrain: a low-rank product plus a sparse matrix on a fixed random support.

In Flax layout (``y = x W``, ``W`` of shape ``(in, out)``)::

    W = (alpha / r) a b + S,    a ~ U(+-1/sqrt(in)),    b = 0,
    S = scatter(values, support),   values ~ U(+-1/sqrt(in)),

where ``support`` holds ``int(delta * in * out)`` distinct flat indices into the ``(in, out)``
kernel, drawn uniformly once at initialisation (sorted) and never changed; only ``values``
is trained. This is the paper's ``W = (alpha/r) B A + S`` with ``a = A^T``, ``b = B^T``.

The support is a :class:`SparseSupport` variable (int32, not an ``nnx.Param``), drawn from
``rngs.params()``: with stacked layers the rngs are split per layer, so every layer (and
every linear) gets its own support. ``support`` and ``values`` carry the logical axis
``"sparse"``.

The sparse part is added by scattering ``values`` into the materialised low-rank kernel and
running one dense matmul, as the reference does (without its C++ extension). The alternative,
gathering ``x[:, rows] * values`` and segment-summing into the output columns, measured 4 to
23 times slower (forward, and forward plus backward, for 256 to 8192 tokens) on a 512 x 1376
kernel with delta = 0.03 and rank 128 on CPU.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from lowrank_jax.models.linear import LinearConfig, make_linear
>>> config = LinearConfig(kind="sltrain", rank=2, sparsity=0.25)
>>> layer = make_linear(config, 4, 6, ("embed", "mlp"), init_std=0.02, param_dtype=jnp.float32,
...                     compute_dtype=jnp.float32, rngs=nnx.Rngs(0))
>>> layer.support.shape, layer.values.shape  # int(0.25 * 4 * 6) entries
((6,), (6,))
>>> int((layer.dense_kernel() != 0).sum())  # b = 0 at init: only S is nonzero
6

Started from a pretrained kernel ``W`` (``model.init_from``), :meth:`SLTrainLinear.load_dense`
sets the low-rank part as Low-Rank does (the rank-``r`` truncated SVD, ``(alpha / r) a b =
U_r S_r V_r^T``) and the sparse values to the residual ``W - U_r S_r V_r^T`` at the fixed
support: the best the parameterization holds with that support, exact at ``r = min(in, out)``
(the residual is then zero) or at ``delta = 1``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lowrank_jax.models.annotated_param import param
from lowrank_jax.models.linear.config import LinearConfig
from lowrank_jax.models.linear.factors import uniform_init
from lowrank_jax.models.linear.lowrank import LowRankLinear
from lowrank_jax.models.linear.registry import register_linear
from lowrank_jax.models.matmul import matmul


class SparseSupport(nnx.Variable):
  """Fixed flat indices of the nonzero entries of SLTrain's sparse part (never trained)."""


def support_size(config: LinearConfig, in_features: int, out_features: int) -> int:
  """Number of entries of the sparse part: ``int(delta * in * out)``, at least 1."""
  return max(1, int(config.sparsity * in_features * out_features))


def _random_support(size: int):
  """An initialiser of ``shape[0]`` distinct sorted flat indices into ``range(size)``."""

  def init(key, shape, dtype):
    return jnp.sort(jax.random.choice(key, size, shape, replace=False)).astype(dtype)

  return init


class SLTrainLinear(LowRankLinear):
  """``y = x ((alpha / r) a b + S)``: low-rank plus a sparse part on a fixed support.

  Built as :class:`~lowrank_jax.models.linear.factors.FactorizedLinear` says (``b = 0``), then
  the support and the values, both with logical axes ``("sparse",)`` (``init_std`` is unused:
  SLTrain's initialisers are uniform); ``config`` gives ``rank``, ``alpha`` and ``sparsity``.
  """

  zero_b = True

  def build(self, shape, axes, init_std, param_dtype, rngs, config) -> None:
    super().build(shape, axes, init_std, param_dtype, rngs, config)
    in_features, out_features = shape
    size = (support_size(config, in_features, out_features),)
    support_init = _random_support(in_features * out_features)
    self.support = param(rngs, support_init, size, jnp.int32, ("sparse",), SparseSupport)
    values_init = uniform_init(1.0 / math.sqrt(in_features))
    self.values = param(rngs, values_init, size, param_dtype, ("sparse",))

  def load_dense(self, kernel: jax.Array) -> None:
    """Low-rank part from the truncated SVD of ``kernel``, sparse values from the residual
    at the support (batched over stacked layers); see the module docstring."""
    super().load_dense(kernel)
    residual = kernel.astype(jnp.float32) - self.low_rank_kernel()
    flat = residual.reshape(residual.shape[:-2] + (-1,))
    self.values[...] = jnp.take_along_axis(flat, self.support[...], axis=-1).astype(
        self.values[...].dtype
    )

  def _kernel(self, dtype) -> jax.Array:
    """``(alpha / r) a b + S`` computed in ``dtype``; batched over leading (stacked) axes."""
    low_rank = self.low_rank_kernel(dtype)
    support, values = self.support[...], self.values[...].astype(dtype)
    # Flat indices into the whole (possibly stacked) kernel: offset each matrix's support.
    matrix_size = low_rank.shape[-2] * low_rank.shape[-1]
    offsets = jnp.arange(support.size // support.shape[-1]).reshape(support.shape[:-1] + (1,))
    flat = (
        low_rank.reshape(-1)
        .at[(support + offsets * matrix_size).reshape(-1)]
        .add(values.reshape(-1), indices_are_sorted=True, unique_indices=True)
    )
    return flat.reshape(low_rank.shape)

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.compute_dtype
    return matmul(x.astype(dtype), self._kernel(dtype))

  def dense_kernel(self) -> jax.Array:
    """``(alpha / r) a b + S``, computed in float32, in the parameters' dtype."""
    return self._kernel(jnp.float32).astype(self.values[...].dtype)


register_linear("sltrain", SLTrainLinear, needs_rank=True)
