"""Low-Rank: the kernel is the scaled product of two trainable factors, never stored dense.

In Flax layout (``y = x W``, ``W`` of shape ``(in, out)``)::

    W = (alpha / r) a b,    a: (in, r) ~ U(+-1/sqrt(in)),    b: (r, out) ~ U(+-1/sqrt(r))

which is the paper's ``W = (alpha/r) B A`` (PyTorch layout ``out x in``) with ``a = A^T`` and
``b = B^T``; both bounds are PyTorch's Kaiming-uniform ``1/sqrt(fan_in)`` of the factor seen
as a linear layer. ``x a`` is computed first, so a call costs ``(in + out) r`` per token.

The factors are named ``a`` and ``b`` in every factorized kind; that is the pairing
convention of :func:`lowrank_jax.optim.refactorize` (product ``a @ b``). Their logical axes
are ``(in_axis, "rank")`` and ``("rank", out_axis)``.

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

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import nnx

from lowrank_jax.models.annotated_param import param
from lowrank_jax.models.matmul import matmul

if TYPE_CHECKING:  # the config is read, never built, here; linear.py imports this file
  from lowrank_jax.models.linear import LinearConfig


def uniform_init(bound: float):
  """An initialiser drawing U(-bound, bound), sampled in float32 then cast to the dtype."""

  def init(key, shape, dtype):
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)

  return init


def kaiming_uniform(fan_in: int):
  """PyTorch's ``nn.Linear`` default, ``kaiming_uniform_(a=sqrt(5))``: U(+-1/sqrt(fan_in))."""
  return uniform_init(1.0 / math.sqrt(fan_in))


def checked_rank(config: LinearConfig, in_features: int, out_features: int) -> int:
  """``config.rank``, checked against the layer's shape (a rank above ``min(in, out)`` only
  adds parameters, and makes the factors' QR in the refactorization rank-deficient)."""
  if config.rank is None or config.rank > min(in_features, out_features):
    raise ValueError(
        f"linear kind {config.kind!r} needs 1 <= rank <= min(in, out) = "
        f"{min(in_features, out_features)} for a {in_features} x {out_features} "
        f"linear; got rank={config.rank!r}"
    )
  return config.rank


def svd_factors(kernel: jax.Array, rank: int) -> tuple[jax.Array, jax.Array]:
  """``(U_r sqrt(S_r), sqrt(S_r) V_r^T)`` of the truncated SVD of ``kernel``, in float32.

  Their product is the best rank-``r`` approximation of ``kernel`` (Eckart-Young), and the
  two factors have equal singular values (balanced). Batched over leading axes.

  >>> import jax.numpy as jnp
  >>> w = jnp.arange(12.0).reshape(3, 4)  # rank 2
  >>> left, right = svd_factors(w, 2)
  >>> left.shape, right.shape, bool(jnp.allclose(left @ right, w, atol=1e-4))
  ((3, 2), (2, 4), True)
  """
  u, s, vt = jnp.linalg.svd(kernel.astype(jnp.float32), full_matrices=False)
  root = jnp.sqrt(s[..., :rank])
  return u[..., :, :rank] * root[..., None, :], root[..., :, None] * vt[..., :rank, :]


class LowRankLinear(nnx.Module):
  """``y = (alpha / r) (x a) b``: the paper's Low-Rank parameterization.

  Args:
    in_features, out_features: the kernel's shape ``(in, out)``.
    axes: logical axis names of the ``(in, out)`` kernel; the factors get
      ``(axes[0], "rank")`` and ``("rank", axes[1])``.
    init_std: unused (the factors use Kaiming-uniform); part of the factory signature.
    param_dtype: storage dtype of the factors.
    compute_dtype: dtype of the matrix products.
    rngs: draws the factors from ``rngs.params()``.
    config: the :class:`LinearConfig` (``rank``, ``alpha``).
    zero_b: initialise ``b`` to zero (LoRA and SLTrain) instead of Kaiming-uniform.
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      axes: tuple[str, str],
      *,
      init_std: float,
      param_dtype,
      compute_dtype,
      rngs: nnx.Rngs,
      config: LinearConfig,
      zero_b: bool = False,
  ):
    del init_std
    rank = checked_rank(config, in_features, out_features)
    self.a = param(
        rngs, kaiming_uniform(in_features), (in_features, rank), param_dtype, (axes[0], "rank")
    )
    b_init = nnx.initializers.zeros if zero_b else kaiming_uniform(rank)
    self.b = param(rngs, b_init, (rank, out_features), param_dtype, ("rank", axes[1]))
    self.scale = config.alpha / rank
    self.compute_dtype = compute_dtype

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
