"""The training state and its creation, sharded from the start.

:class:`TrainState` holds everything a step changes or a checkpoint keeps. It is created by
a jitted function with ``out_shardings``, so every array is born on its devices and no
host ever holds a full copy (how a 7B state is made on a pod).
"""

from __future__ import annotations

from typing import Any, NamedTuple
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from lowrank_jax.models import Llama, LlamaConfig, abstract_model
from lowrank_jax.models.hf import load_hf_weights
from lowrank_jax.optim import state_shardings as optimizer_state_shardings
from lowrank_jax.train import mesh as mesh_lib


class TrainState(NamedTuple):
  """Everything a training step reads and writes.

  Attributes:
    step: int32 scalar, optimizer steps taken.
    params: the model's trainable variables (``nnx.Param``).
    frozen: the model's other variables (e.g. a frozen LoRA base, a sparse support).
    opt_state: the optax state of ``params``.
  """

  step: jax.Array
  params: nnx.State
  frozen: nnx.State
  opt_state: optax.OptState


def _split(model: Llama):
  return nnx.split(model, nnx.Param, ...)


def model_graphdef(config: LlamaConfig) -> nnx.GraphDef:
  """The static structure that :func:`nnx.merge` needs to rebuild the model from states."""
  return _split(abstract_model(config))[0]


def train_state_shardings(
    config: LlamaConfig, tx: optax.GradientTransformation, mesh: Mesh
) -> TrainState:
  """The ``NamedSharding`` of every leaf of the train state on ``mesh``."""
  _, params, frozen = _split(abstract_model(config))
  param_shardings = mesh_lib.state_shardings(params, mesh)
  return TrainState(
      step=mesh_lib.replicated(mesh),
      params=param_shardings,
      frozen=mesh_lib.state_shardings(frozen, mesh),
      opt_state=optimizer_state_shardings(tx, params, param_shardings, mesh),
  )


def _fresh_state(
    config: LlamaConfig,
    tx: optax.GradientTransformation,
    seed: int,
    pretrained: Mapping[str, Any] | None = None,
) -> TrainState:
  model = Llama(config, rngs=nnx.Rngs(seed))
  if pretrained is not None:
    load_hf_weights(model, pretrained)
  _, params, frozen = _split(model)
  return TrainState(jnp.zeros((), jnp.int32), params, frozen, tx.init(params))


def init_train_state(
    config: LlamaConfig,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    seed: int,
    pretrained: Mapping[str, Any] | None = None,
) -> TrainState:
  """A fresh, sharded train state: the model initialised from ``seed``, then, given
  ``pretrained`` HF tensors (``model.init_from``), loaded from them inside the same jit,
  which shards the result (the tensors are its arguments, not constants in its program)."""
  shardings = train_state_shardings(config, tx, mesh)
  return jax.jit(lambda tensors: _fresh_state(config, tx, seed, tensors), out_shardings=shardings)(
      pretrained
  )


def abstract_train_state(
    config: LlamaConfig, tx: optax.GradientTransformation, mesh: Mesh
) -> TrainState:
  """``ShapeDtypeStruct`` leaves with shardings: the target of a checkpoint restore."""
  shapes = jax.eval_shape(lambda: _fresh_state(config, tx, 0))
  return jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      shapes,
      train_state_shardings(config, tx, mesh),
  )


def tree_bytes(tree: Any) -> int:
  """Total bytes of the arrays (or ShapeDtypeStructs) in ``tree``."""
  return sum(leaf.size * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree))
