"""The jitted training and evaluation steps.

The loss of a step is the mean next-token cross-entropy over every non-pad target of the
global batch. With gradient accumulation the batch is cut into ``A`` micro-batches and each
contributes ``sum of its token losses / (non-pad targets of the whole batch)``, so the
accumulated gradient is exactly the gradient of the full-batch mean whatever ``A`` is.
Micro-batch ``i`` takes rows ``i, i + A, i + 2A, ...``: every device keeps working on rows
it already holds.

A step whose loss, gradient norm or update norm is not finite is skipped inside the jit: the
parameters, frozen variables and optimizer state keep their values, only ``step`` advances,
and the metrics carry ``finite`` (see :mod:`lowrank_jax.train.nonfinite`).

LoRA's adapter dropout (``model.linear.dropout``) draws the masks of the update of 0-based step
``s`` from :func:`dropout_key` ``(seed, s)``, micro-batch ``i`` from its ``fold_in`` with ``i``:
a pure function of the step, so a resumed run draws the masks of the uninterrupted one and
every copy of a learning-rate sweep those of the run it stands for. Evaluation drops nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from lowrank_jax.models import next_token_loss
from lowrank_jax.models.linear.lora import merge_lora_adapters
from lowrank_jax.train import nonfinite
from lowrank_jax.train.state import TrainState

Batch = dict[str, jax.Array]


def _target_count(batch: Batch) -> jax.Array:
  return batch["loss_mask"][:, 1:].astype(jnp.float32).sum()


_DROPOUT_STREAM = 0x44524F50  # "DROP": keeps the masks' keys apart from the merges' (same seed)


def dropout_key(seed: int, step: jax.Array) -> jax.Array:
  """The key of the adapter dropout masks of the update of 0-based ``step``.

  >>> a, b = dropout_key(0, 3), dropout_key(0, 3)
  >>> bool((jax.random.key_data(a) == jax.random.key_data(b)).all())
  True
  """
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _DROPOUT_STREAM), step)


def make_loss(graphdef: nnx.GraphDef, mesh: Mesh | None = None) -> Callable:
  """``loss(params, frozen, batch, denominator, dropout_key=None) -> (sum of target losses /
  denominator, count)``.

  With ``mesh`` the model runs under it as the ambient mesh, which lays out its activations
  (:func:`~lowrank_jax.models.llama.shard_activation_batch`). ``dropout_key``: training's,
  for the LoRA adapters' input dropout; ``None`` (evaluation) drops nothing.
  """

  def loss(params, frozen, batch, denominator, dropout_key=None):
    model = nnx.merge(graphdef, params, frozen)
    with (
        contextlib.nullcontext()
        if mesh is None
        else jax.sharding.use_abstract_mesh(mesh.abstract_mesh)
    ):
      logits = model(batch["input_ids"], dropout_key=dropout_key)
    mean, count = next_token_loss(logits, batch["input_ids"], batch["loss_mask"])
    return mean * count / denominator, count

  return loss


def _micro_batches(batch: Batch, accum: int) -> Batch:
  """``(B, ...) -> (accum, B / accum, ...)``, micro-batch ``i`` holding rows ``i::accum``."""
  return jax.tree.map(
      lambda x: x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1), batch
  )


def make_lora_merge(graphdef: nnx.GraphDef, every: int, seed: int) -> Callable:
  """ReLoRA's restart as an ``after_update(step, params, frozen) -> (params, frozen)``.

  After updates ``every + 1, 2 every + 1, ...`` (Guitaricet/relora's ``(update_step - start) %
  relora == 1``: the update its jagged rate zeroes comes first, and the optimizer prunes the
  adapters' moments after the same updates) the LoRA adapters are folded into the frozen
  weights and re-initialised (:func:`~lowrank_jax.models.linear.lora.merge_lora_adapters`); a no-op
  between.
  """

  def merge(params, frozen, key):
    model = nnx.merge(graphdef, params, frozen)
    merge_lora_adapters(model, key)
    _, params, frozen = nnx.split(model, nnx.Param, ...)
    return params, frozen

  def after_update(step, params, frozen):
    key = jax.random.fold_in(jax.random.key(seed), step)
    due = ((step - 1) % every == 0) & (step > 1)
    return jax.lax.cond(due, merge, lambda p, f, k: (p, f), params, frozen, key)

  return after_update


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    grad_accum: int = 1,
    inject: Callable | None = None,
    after_update: Callable | None = None,
    mesh: Mesh | None = None,
    record: Callable | None = None,
    keep: Callable = nonfinite.keep_if_finite,
    seed: int = 0,
) -> Callable:
  """``step(state, batch) -> (state, metrics)``; jit it with shardings and donation.

  Args:
    graphdef: the model structure (:func:`~lowrank_jax.train.state.model_graphdef`).
    tx: the optimizer.
    grad_accum: micro-batches per step.
    inject: testing only, ``inject(step, loss, grads) -> (loss, grads)`` applied before the
      finiteness check (:func:`~lowrank_jax.train.nonfinite.make_injector`).
    after_update: ``after_update(step, params, frozen) -> (params, frozen)`` run after the
      update of 1-based step ``step`` (e.g. :func:`make_lora_merge`).
    mesh: the mesh the step is jitted over (lays out the activations, see :func:`make_loss`).
    record: ``record(count) -> {"lr": ..., event: 0 or 1, ...}``, what the update of 0-based
      ``count`` applies, added to its metrics (:mod:`lowrank_jax.train.update_records`).
    keep: ``keep(finite, new, old)``, what a step keeps of the old state when it is not finite
      (:func:`~lowrank_jax.train.rate_copies.keep_if_finite` for one copy of a sweep).
    seed: the seed of the adapter dropout masks (:func:`dropout_key`).
  """
  grad_fn = jax.value_and_grad(make_loss(graphdef, mesh), has_aux=True)

  def step(state: TrainState, batch: Batch):
    denominator = jnp.maximum(_target_count(batch), 1.0)
    key = dropout_key(seed, state.step)
    if grad_accum == 1:
      (loss, count), grads = grad_fn(state.params, state.frozen, batch, denominator, key)
    else:

      def accumulate(carry, micro_and_index):
        micro, index = micro_and_index
        (loss, count), grads = grad_fn(
            state.params, state.frozen, micro, denominator, jax.random.fold_in(key, index)
        )
        grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
        return jax.tree.map(jnp.add, carry, (loss, count, grads)), None

      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
      (loss, count, grads), _ = jax.lax.scan(
          accumulate,
          (0.0, 0.0, zeros),
          (_micro_batches(batch, grad_accum), jnp.arange(grad_accum)),
      )
      grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
    if inject is not None:
      loss, grads = inject(state.step + 1, loss, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = nonfinite.is_finite(loss, grad_norm, optax.tree.norm(updates))
    frozen = state.frozen
    if after_update is not None:
      params, frozen = after_update(state.step + 1, params, frozen)
    params, frozen, opt_state = keep(
        finite, (params, frozen, opt_state), (state.params, state.frozen, state.opt_state)
    )
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "finite": finite,
        "tokens": count,
        **(record(state.step) if record is not None else {}),
    }
    return TrainState(state.step + 1, params, frozen, opt_state), metrics

  return step


def make_eval_step(graphdef: nnx.GraphDef, mesh: Mesh | None = None) -> Callable:
  """``eval_step(params, frozen, batch) -> (mean target loss, non-pad target count)``."""
  loss = make_loss(graphdef, mesh)

  def eval_step(params, frozen, batch):
    return loss(params, frozen, batch, jnp.maximum(_target_count(batch), 1.0))

  return eval_step
