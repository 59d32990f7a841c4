"""The jitted training and evaluation steps.

The loss of a step is the mean next-token cross-entropy over every non-pad target of the
global batch. With gradient accumulation the batch is cut into ``A`` micro-batches and each
contributes ``sum of its token losses / (non-pad targets of the whole batch)``, so the
accumulated gradient is exactly the gradient of the full-batch mean whatever ``A`` is.
Micro-batch ``i`` takes rows ``i, i + A, i + 2A, ...``: every device keeps working on rows
it already holds.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lowrank_jax.models import next_token_loss
from lowrank_jax.train.state import TrainState

Batch = dict[str, jax.Array]


def _target_count(batch: Batch) -> jax.Array:
  return batch["loss_mask"][:, 1:].astype(jnp.float32).sum()


def make_loss(graphdef: nnx.GraphDef) -> Callable:
  """``loss(params, frozen, batch, denominator) -> (sum of target losses / denominator, count)``."""
  def loss(params, frozen, batch, denominator):
    model = nnx.merge(graphdef, params, frozen)
    mean, count = next_token_loss(model(batch["input_ids"]), batch["input_ids"],
                                  batch["loss_mask"])
    return mean * count / denominator, count

  return loss


def _micro_batches(batch: Batch, accum: int) -> Batch:
  """``(B, ...) -> (accum, B / accum, ...)``, micro-batch ``i`` holding rows ``i::accum``."""
  return jax.tree.map(lambda x: x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1),
                      batch)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, grad_accum: int = 1) -> Callable:
  """``step(state, batch) -> (state, metrics)``; jit it with shardings and donation."""
  grad_fn = jax.value_and_grad(make_loss(graphdef), has_aux=True)

  def step(state: TrainState, batch: Batch):
    denominator = jnp.maximum(_target_count(batch), 1.0)
    if grad_accum == 1:
      (loss, count), grads = grad_fn(state.params, state.frozen, batch, denominator)
    else:
      def accumulate(carry, micro):
        (loss, count), grads = grad_fn(state.params, state.frozen, micro, denominator)
        grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
        return jax.tree.map(jnp.add, carry, (loss, count, grads)), None

      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
      (loss, count, grads), _ = jax.lax.scan(accumulate, (0.0, 0.0, zeros),
                                             _micro_batches(batch, grad_accum))
      grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "lr": jnp.asarray(schedule(state.step), jnp.float32), "tokens": count}
    return TrainState(state.step + 1, params, state.frozen, opt_state), metrics

  return step


def make_eval_step(graphdef: nnx.GraphDef) -> Callable:
  """``eval_step(params, frozen, batch) -> (mean target loss, non-pad target count)``."""
  loss = make_loss(graphdef)

  def eval_step(params, frozen, batch):
    return loss(params, frozen, batch, jnp.maximum(_target_count(batch), 1.0))

  return eval_step
