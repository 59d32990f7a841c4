"""The linear layer as a swappable parameterization.

Each of the seven target linears of a block (q, k, v, o, gate, up, down) is built by
:func:`make_linear` from the model's :class:`LinearConfig`. A parameterization is an
``nnx.Module`` with the :class:`Linear` interface:

* ``__call__(x)``: ``x @ W`` with ``W`` the effective ``(in, out)`` kernel;
* ``dense_kernel()``: that effective kernel, materialised (for export and inspection);
* ``load_dense(kernel)``: start from a pretrained ``(in, out)`` kernel (``model.init_from``):
  dense copies it, each factorized kind sets its factors as its file's docstring says.

Built-in kinds, one module each: ``dense`` (one trainable ``(in, out)`` kernel) and the
factorized ``lowrank``, ``lora``, ``sltrain`` and ``cola`` (they need ``LinearConfig.rank``;
their shared factors are built in :mod:`~lowrank_jax.models.linear.factors`). Each kind module
registers its class with :func:`register_linear` when imported, and this package imports them
all; other kinds register themselves the same way (:mod:`~lowrank_jax.models.linear.registry`).

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> layer = make_linear(LinearConfig(), 4, 3, ("embed", "mlp"), init_std=0.02,
...                     param_dtype=jnp.float32, compute_dtype=jnp.float32, rngs=nnx.Rngs(0))
>>> layer(jnp.ones((2, 4))).shape, layer.dense_kernel().shape
((2, 3), (4, 3))
"""

from __future__ import annotations

from lowrank_jax.models.linear.cola import CoLALinear
from lowrank_jax.models.linear.config import LinearConfig
from lowrank_jax.models.linear.dense import DenseLinear
from lowrank_jax.models.linear.lora import LoRALinear, merge_lora_adapters
from lowrank_jax.models.linear.lowrank import LowRankLinear
from lowrank_jax.models.linear.registry import Linear, linear_factory, register_linear
from lowrank_jax.models.linear.sltrain import SLTrainLinear

__all__ = [
    "CoLALinear",
    "DenseLinear",
    "Linear",
    "LinearConfig",
    "LoRALinear",
    "LowRankLinear",
    "SLTrainLinear",
    "make_linear",
    "merge_lora_adapters",
    "register_linear",
]


def make_linear(
    config: LinearConfig, in_features: int, out_features: int, axes: tuple[str, str], **layer
) -> Linear:
  """Builds one target linear of the parameterization ``config.kind``.

  ``layer`` is the keywords every kind takes, ``init_std``, ``param_dtype``, ``compute_dtype``
  and ``rngs`` (:class:`~lowrank_jax.models.linear.target.TargetLinear`).
  """
  return linear_factory(config.kind)(in_features, out_features, axes, config=config, **layer)
