"""The jitted step: accumulation exactness, sharding on an 8-device fsdp x tensor mesh, the
adapter dropout's keys."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding

from lowrank_jax.models import Llama, LlamaConfig, LinearConfig
from lowrank_jax.models.linear.lora import LoRALinear
from lowrank_jax.train import mesh as mesh_lib
from lowrank_jax.train.config import MeshSection
from lowrank_jax.train.methods import target_mask
from lowrank_jax.train.state import (
    TrainState,
    init_train_state,
    model_graphdef,
    train_state_shardings,
)
from lowrank_jax.train.step import dropout_key, make_eval_step, make_loss, make_train_step
from lowrank_jax import optim

CONFIG = LlamaConfig.preset(
    "nano",
    num_layers=2,
    hidden_size=32,
    intermediate_size=64,
    num_heads=4,
    vocab_size=64,
    scan_layers=True,
)


def batch(rows=8, seq=12, seed=0):
  ids = jax.random.randint(jax.random.key(seed), (rows, seq), 2, 64)
  lengths = jnp.arange(rows) % seq + 2
  mask = (jnp.arange(seq)[None] < lengths[:, None]).astype(jnp.int32)
  return {"input_ids": ids * mask, "loss_mask": mask}


def run_steps(tx, mesh, accum, steps=3, same_batch=False):
  shardings = train_state_shardings(CONFIG, tx, mesh)
  step = jax.jit(
      make_train_step(model_graphdef(CONFIG), tx, accum),
      in_shardings=(shardings, mesh_lib.batch_sharding(mesh)),
      out_shardings=(shardings, mesh_lib.replicated(mesh)),
      donate_argnums=0,
  )
  state = init_train_state(CONFIG, tx, mesh, seed=0)
  losses = []
  for i in range(steps):
    state, metrics = step(state, batch(seed=0 if same_batch else i))
    losses.append(float(metrics["loss"]))
  return state, losses, shardings


def test_accumulation_gives_the_full_batch_gradient():
  mesh = mesh_lib.make_mesh(MeshSection(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  tx = optax.sgd(1e-2)
  whole, losses_whole, _ = run_steps(tx, mesh, accum=1)
  split, losses_split, _ = run_steps(tx, mesh, accum=4)
  np.testing.assert_allclose(losses_split, losses_whole, rtol=1e-5)
  chex.assert_trees_all_close(split.params, whole.params, rtol=1e-5, atol=1e-6)


def test_sharded_step_places_every_leaf_as_computed_and_matches_one_device():
  mesh = mesh_lib.make_mesh(MeshSection(data=2, fsdp=2, tensor=2))
  tx = optim.galore(1e-2, rank=4, update_proj_gap=2, projection_mask=target_mask)
  state, losses, shardings = run_steps(tx, mesh, accum=2, same_batch=True)
  assert np.all(np.diff(losses) < -0.1), losses  # one batch, memorised: 4.21, 3.81, 3.49
  for leaf, expected in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
    assert leaf.sharding.is_equivalent_to(expected, leaf.ndim), (leaf.shape, expected)
  specs = {s.spec for s in jax.tree.leaves(shardings.params) if isinstance(s, NamedSharding)}
  assert any("fsdp" in str(s) for s in specs) and any("tensor" in str(s) for s in specs)
  one = mesh_lib.make_mesh(MeshSection(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  _, single_losses, _ = run_steps(tx, one, accum=2, same_batch=True)
  np.testing.assert_allclose(losses, single_losses, rtol=2e-4)


def test_adapter_dropout_masks_follow_the_step_and_evaluation_drops_none():
  """The update of step ``s`` drops with ``dropout_key(seed, s)`` (its loss is the forward
  under that key), a new mask each step; evaluation is the undropped forward, to the bit."""
  lora = dataclasses.replace(CONFIG, linear=LinearConfig(kind="lora", rank=4, dropout=0.3))
  model = Llama(lora, rngs=nnx.Rngs(0))
  for layer in [node for _, node in nnx.iter_graph(model) if isinstance(node, LoRALinear)]:
    layer.b[...] = jax.random.normal(jax.random.key(1), layer.b[...].shape)  # b = 0 at init
  graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
  tx = optax.sgd(0.0)  # the parameters stay: the steps differ by their masks alone
  step = jax.jit(make_train_step(graphdef, tx, seed=5))
  state, data = TrainState(jnp.zeros((), jnp.int32), params, frozen, tx.init(params)), batch()
  denominator = jnp.maximum(data["loss_mask"][:, 1:].sum(), 1).astype(jnp.float32)
  loss = jax.jit(make_loss(graphdef))
  train_losses = []
  for s in range(2):
    state, metrics = step(state, data)
    by_hand = [loss(params, frozen, data, denominator, dropout_key(5, t))[0] for t in (s, 1 - s)]
    np.testing.assert_allclose(metrics["loss"], by_hand[0], rtol=1e-6)  # jitted apart: 1 ulp
    assert not np.isclose(metrics["loss"], by_hand[1], rtol=1e-4)  # the other step's masks
    train_losses.append(metrics["loss"])
  accumulated = jax.jit(make_train_step(graphdef, tx, grad_accum=2, seed=5))
  micro = lambda i: jax.tree.map(lambda x: x[i::2], data)  # micro-batch i: rows i, i + 2, ...
  micro_losses = [
      loss(params, frozen, micro(i), denominator, jax.random.fold_in(dropout_key(5, 0), i))[0]
      for i in range(2)
  ]
  _, metrics = accumulated(
      TrainState(jnp.zeros((), jnp.int32), params, frozen, tx.init(params)), data
  )
  np.testing.assert_allclose(metrics["loss"], sum(micro_losses), rtol=1e-6)

  evaluate = jax.jit(make_eval_step(graphdef))
  undropped = nnx.split(
      Llama(dataclasses.replace(lora, linear=LinearConfig(kind="lora", rank=4)), rngs=nnx.Rngs(0))
  )[0]
  without_option, _ = jax.jit(make_eval_step(undropped))(params, frozen, data)
  assert evaluate(params, frozen, data)[0] == without_option
  assert evaluate(params, frozen, data)[0] == evaluate(params, frozen, data)[0]
  assert not np.isclose(train_losses, without_option, rtol=1e-4).any()
