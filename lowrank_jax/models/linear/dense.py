"""Dense: the model's linear as it is, one trainable ``(in, out)`` kernel ``W ~ N(0, init_std)``.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> layer = DenseLinear(4, 3, ("embed", "mlp"), init_std=0.02, param_dtype=jnp.float32,
...                     compute_dtype=jnp.float32, rngs=nnx.Rngs(0))
>>> layer.kernel.shape, layer.kernel.out_sharding
((4, 3), ('embed', 'mlp'))
"""

from __future__ import annotations

import jax
from flax import nnx

from lowrank_jax.models.annotated_param import param
from lowrank_jax.models.linear.registry import register_linear
from lowrank_jax.models.linear.target import TargetLinear
from lowrank_jax.models.matmul import matmul


class DenseLinear(TargetLinear):
  """``y = x W`` with one trainable kernel ``W`` of shape ``(in, out)``, N(0, init_std)."""

  def build(self, shape, axes, init_std, param_dtype, rngs, config) -> None:
    self.kernel = param(rngs, nnx.initializers.normal(init_std), shape, param_dtype, axes)

  def __call__(self, x: jax.Array) -> jax.Array:
    return matmul(x.astype(self.compute_dtype), self.kernel[...].astype(self.compute_dtype))

  def dense_kernel(self) -> jax.Array:
    return self.kernel[...]

  def load_dense(self, kernel: jax.Array) -> None:
    """Copies the pretrained ``(in, out)`` kernel (batched over stacked layers)."""
    self.kernel[...] = kernel.astype(self.kernel[...].dtype)


register_linear("dense", DenseLinear)
