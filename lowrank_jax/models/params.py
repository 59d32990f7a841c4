"""Model shapes without allocation: abstract init and parameter counts.

>>> from lowrank_jax.models import LlamaConfig, count_params
>>> round(count_params(LlamaConfig.preset("60m")) / 1e6, 1)
58.1
"""

from __future__ import annotations

import math

import jax
from flax import nnx

from lowrank_jax.models.config import LlamaConfig
from lowrank_jax.models.llama import Llama


def abstract_model(config: LlamaConfig, seed: int = 0) -> Llama:
  """The model with ``jax.ShapeDtypeStruct`` leaves in place of arrays (nothing allocated)."""
  return nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(seed)))


def count_params(config: LlamaConfig) -> int:
  """Number of trainable parameter entries, counted on the abstract model."""
  leaves = jax.tree.leaves(nnx.state(abstract_model(config), nnx.Param))
  return sum(math.prod(leaf.shape) for leaf in leaves)
