"""The factors every factorized kind holds, built in one place.

A factorized linear of shape ``(in, out)`` holds ``a: (in, r)`` and ``b: (r, out)``, named
``a`` and ``b`` in every kind: the pairing convention of
:func:`lowrank_jax.optim.refactorize` (product ``a @ b``). Their logical axes are
``(in_axis, "rank")`` and ``("rank", out_axis)``. :class:`FactorizedLinear` checks the rank
against the shape and draws ``a`` then ``b`` from ``rngs.params()`` with the initialisers its
kind chooses (:meth:`FactorizedLinear.factor_initializers`); a kind that holds more builds it
after them, so the random numbers come in the same order in every kind: ``a``, ``b``, then
the kind's own.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from lowrank_jax.models.linear import LinearConfig
>>> class Product(FactorizedLinear):
...   def factor_initializers(self, in_features, out_features, rank):
...     return kaiming_uniform(in_features), kaiming_uniform(rank)
>>> layer = Product(6, 5, ("embed", "mlp"), init_std=0.02, param_dtype=jnp.float32,
...                 compute_dtype=jnp.float32, rngs=nnx.Rngs(0),
...                 config=LinearConfig(kind="lowrank", rank=2))
>>> layer.a.shape, layer.a.out_sharding, layer.b.shape, layer.b.out_sharding
((6, 2), ('embed', 'rank'), (2, 5), ('rank', 'mlp'))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from lowrank_jax.models.annotated_param import param
from lowrank_jax.models.linear.config import LinearConfig
from lowrank_jax.models.linear.target import TargetLinear


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


class FactorizedLinear(TargetLinear):
  """The factors ``a: (in, r)`` and ``b: (r, out)`` of a factorized kind.

  Constructed as :class:`~lowrank_jax.models.linear.target.TargetLinear`; ``config.rank`` is
  checked against the shape, ``a`` then ``b`` are drawn with the kind's
  :meth:`factor_initializers` and the axes ``(axes[0], "rank")``, ``("rank", axes[1])``. A kind
  that holds more overrides :meth:`build`, calling this one first.
  """

  def build(self, shape, axes, init_std, param_dtype, rngs, config) -> None:
    in_features, out_features = shape
    rank = checked_rank(config, in_features, out_features)
    a_init, b_init = self.factor_initializers(in_features, out_features, rank)
    self.a = param(rngs, a_init, (in_features, rank), param_dtype, (axes[0], "rank"))
    self.b = param(rngs, b_init, (rank, out_features), param_dtype, ("rank", axes[1]))

  def factor_initializers(
      self, in_features: int, out_features: int, rank: int
  ) -> tuple[Callable, Callable]:
    """The initialisers ``(key, shape, dtype) -> array`` of ``a`` and ``b``."""
    raise NotImplementedError
