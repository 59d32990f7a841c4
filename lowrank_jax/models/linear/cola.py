"""CoLA: a low-rank bottleneck with a nonlinearity between the factors.

For a target linear of shape ``(in, out)`` = ``(n, m)``::

    y = silu(x a) b,    a: (n, r),  b: (r, m),  both ~ N(0, 1) * r^(-1/4) * (m + n)^(-1/4)

(the reference's initialisation makes ``a b`` have the entry scale of ``(m + n)^(-1/2)``).
Because of the SiLU the layer is not linear: it has no dense kernel, so
:meth:`CoLALinear.dense_kernel` raises, and so does the HF export, which needs one. The
factors are still named ``a`` and ``b`` with axes ``(in_axis, "rank")`` and
``("rank", out_axis)``; do not refactorize them (a product-preserving change of the factors
does not preserve ``silu(x a) b``).

>>> import jax
>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from lowrank_jax.models.linear import LinearConfig, make_linear
>>> config = LinearConfig(kind="cola", rank=2)
>>> layer = make_linear(config, 6, 5, ("embed", "mlp"), init_std=0.02, param_dtype=jnp.float32,
...                     compute_dtype=jnp.float32, rngs=nnx.Rngs(0))
>>> x = jnp.ones((3, 6))
>>> bool(jnp.allclose(layer(x), jax.nn.silu(x @ layer.a[...]) @ layer.b[...]))
True

Started from a pretrained kernel ``W`` (``model.init_from``), CoLA cannot compute ``x W``
exactly: ``silu(x a) b`` is not linear in ``x`` at any rank. :meth:`CoLALinear.load_dense`
takes the balanced truncated SVD factors ``a = U_r sqrt(S_r)``, ``b = 2 sqrt(S_r) V_r^T``,
the 2 undoing silu's slope 1/2 at 0: the layer's first-order term at ``x = 0`` is then
``x U_r S_r V_r^T``, and what remains is silu's curvature, ``(x a)^2 / 4`` to second
order, which is not small for ordinary activations. A CoLA model started from a dense
checkpoint therefore begins near, not at, the checkpoint's loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lowrank_jax.models.linear.factors import FactorizedLinear, svd_factors
from lowrank_jax.models.linear.registry import register_linear
from lowrank_jax.models.matmul import matmul


def cola_init_std(in_features: int, out_features: int, rank: int) -> float:
  """``r^(-1/4) (m + n)^(-1/4)``, the standard deviation of both CoLA factors."""
  return rank**-0.25 * (in_features + out_features) ** -0.25


def _scaled_normal(std: float):
  """An initialiser drawing N(0, std^2) in float32, cast to the dtype."""

  def init(key, shape, dtype):
    return (std * jax.random.normal(key, shape, jnp.float32)).astype(dtype)

  return init


class CoLALinear(FactorizedLinear):
  """``y = silu(x a) b``, CoLA's replacement of a linear.

  Built as :class:`~lowrank_jax.models.linear.factors.FactorizedLinear` says (``init_std`` is
  unused: CoLA's initialiser depends on the shape); ``config`` gives ``rank`` (``alpha`` is
  unused).
  """

  def factor_initializers(self, in_features, out_features, rank):
    init = _scaled_normal(cola_init_std(in_features, out_features, rank))
    return init, init

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.compute_dtype
    hidden = jax.nn.silu(matmul(x.astype(dtype), self.a[...].astype(dtype)))
    return matmul(hidden, self.b[...].astype(dtype))

  def load_dense(self, kernel: jax.Array) -> None:
    """The SVD factors of ``kernel``, ``b`` doubled for silu's slope at 0 (an approximation,
    see the module docstring); batched over stacked layers."""
    left, right = svd_factors(kernel, self.a[...].shape[-1])
    self.a[...] = left.astype(self.a[...].dtype)
    self.b[...] = (2.0 * right).astype(self.b[...].dtype)

  def dense_kernel(self) -> jax.Array:
    """Raises: ``silu(x a) b`` is nonlinear in ``x``, so CoLA has no dense kernel."""
    raise NotImplementedError(
        "CoLA computes silu(x a) b, which is not linear in x: it has no dense (in, out) kernel, "
        "so a CoLA model cannot be exported as a dense LlamaForCausalLM"
    )


register_linear("cola", CoLALinear, needs_rank=True)
