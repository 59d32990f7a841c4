"""The constructor every built-in linear kind shares, the one :func:`make_linear` calls.

``make_linear`` calls a kind as ``kind(in_features, out_features, axes, *, init_std,
param_dtype, compute_dtype, rngs, config)``. :class:`TargetLinear` takes those arguments once,
keeps the compute dtype, and hands the rest to the kind's :meth:`TargetLinear.build`, which
creates its parameters in the order they draw from ``rngs.params()``.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> class Bias(TargetLinear):
...   def build(self, shape, axes, init_std, param_dtype, rngs, config):
...     self.bias = nnx.Param(jnp.zeros(shape[1:], param_dtype))
>>> layer = Bias(4, 3, ("embed", "mlp"), init_std=0.02, param_dtype=jnp.float32,
...              compute_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
>>> layer.bias.shape, layer.compute_dtype.__name__
((3,), 'bfloat16')
"""

from __future__ import annotations

from flax import nnx

from lowrank_jax.models.linear.config import LinearConfig


class TargetLinear(nnx.Module):
  """One target linear of shape ``(in, out)``; its kind's :meth:`build` makes its parameters.

  Args:
    in_features, out_features: the (replaced) kernel's shape ``(in, out)``.
    axes: logical axis names of that kernel, one per dimension, for sharding.
    init_std: the dense model's normal standard deviation (for the kinds that draw a dense
      kernel: ``dense``, LoRA's frozen ``W0``).
    param_dtype: storage dtype of the parameters.
    compute_dtype: dtype of the matrix products.
    rngs: draws the parameters from ``rngs.params()``.
    config: the :class:`LinearConfig`; ``None`` is ``LinearConfig()``, ``dense``'s.
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
      config: LinearConfig | None = None,
  ):
    self.compute_dtype = compute_dtype
    config = LinearConfig() if config is None else config
    self.build((in_features, out_features), axes, init_std, param_dtype, rngs, config)

  def build(self, shape, axes, init_std, param_dtype, rngs, config) -> None:
    """Creates the kind's parameters for a kernel of ``shape`` ``(in, out)``."""
    raise NotImplementedError
