"""Memory measured from the program itself, with nothing allocated.

Two measurements, both from shapes only (``jax.eval_shape`` and ahead-of-time compilation):

* **state**: the bytes of the abstract train state (:func:`abstract_train_state`), split into
  weights (trained and frozen), optimizer state and *extras*. An extra is a leaf with at most
  one entry per layer: step counters, per-matrix norms and EMAs, seeds; the paper's count
  (:mod:`lowrank_jax.memory.analytic`) leaves them out, so they are listed on their
  own. Per device, every leaf counts its shard ``sharding.shard_shape(shape)``.
* **step**: XLA's memory analysis of the compiled train step, per device: argument bytes
  (state and batch), output bytes (the new state, aliased to the donated input), and
  temporary bytes (activations, gradients, optimizer workspace).

>>> from lowrank_jax.train.config import load_config
>>> config = load_config(overrides=["model.overrides.num_layers=1", "model.overrides.vocab_size=512",
...                                 "data.vocab_size=512"])
>>> state = measure_state(memory_run(config))
>>> state.optimizer == 2 * state.weights and state.extras > 0
True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from lowrank_jax.train.config import TrainConfig
from lowrank_jax.train.run import Run


def memory_run(config: TrainConfig, devices: Sequence[jax.Device] | None = None) -> Run:
  """The :class:`Run` of ``config`` on ``devices``, without data or tokenizer.

  ``devices`` defaults to the first ones, as many as the config's mesh names (all of them if
  one mesh axis is -1).
  """
  if devices is None:
    sizes = (config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    devices = jax.devices()[: None if -1 in sizes else math.prod(sizes)]
  return Run.without_data(config, devices)


@dataclasses.dataclass(frozen=True)
class StateBytes:
  """Bytes of a train state, in total and on the busiest device.

  Attributes:
    weights: trained and frozen variables (SLTrain's int32 support included).
    optimizer: optimizer state, extras excluded.
    extras: leaves with at most one entry per layer (counters, per-matrix scalars), the
      train state's step included.
    weights_per_device, optimizer_per_device, extras_per_device: the same, per device.
  """

  weights: int
  optimizer: int
  extras: int
  weights_per_device: int
  optimizer_per_device: int
  extras_per_device: int

  @property
  def total(self) -> int:
    return self.weights + self.optimizer + self.extras

  @property
  def total_per_device(self) -> int:
    return self.weights_per_device + self.optimizer_per_device + self.extras_per_device


def _leaf_bytes(leaf: jax.ShapeDtypeStruct, per_device: bool) -> int:
  shape = leaf.sharding.shard_shape(leaf.shape) if per_device else leaf.shape
  return math.prod(shape) * jnp.dtype(leaf.dtype).itemsize


def _split_bytes(tree: Any, is_extra, per_device: bool) -> tuple[int, int]:
  """``(bytes of the leaves that are not extras, bytes of the extras)``."""
  main = extras = 0
  for leaf in jax.tree.leaves(tree):
    if is_extra(leaf):
      extras += _leaf_bytes(leaf, per_device)
    else:
      main += _leaf_bytes(leaf, per_device)
  return main, extras


def measure_state(run: Run) -> StateBytes:
  """The bytes of ``run``'s abstract train state (see the module docstring for *extras*)."""
  state = run.abstract_state()
  layers = run.model_config.num_layers
  is_extra = lambda leaf: math.prod(leaf.shape) <= layers
  values = {}
  for suffix, per_device in (("", False), ("_per_device", True)):
    weights, weight_extras = _split_bytes((state.params, state.frozen), is_extra, per_device)
    optimizer, optimizer_extras = _split_bytes(state.opt_state, is_extra, per_device)
    values["weights" + suffix] = weights
    values["optimizer" + suffix] = optimizer
    values["extras" + suffix] = (
        weight_extras + optimizer_extras + _leaf_bytes(state.step, per_device)
    )
  return StateBytes(**values)


@dataclasses.dataclass(frozen=True)
class StepBytes:
  """XLA's memory analysis of the compiled train step, per device.

  Attributes:
    argument: bytes of the inputs (train state and batch).
    output: bytes of the outputs (new train state and metrics).
    temporary: bytes of the temporaries (activations, gradients, workspaces).
    alias: bytes of outputs that reuse a donated input's buffer.
  """

  argument: int
  output: int
  temporary: int
  alias: int

  @property
  def peak_estimate(self) -> int:
    """Arguments + outputs + temporaries, less what donation aliases."""
    return self.argument + self.output + self.temporary - self.alias


def measure_step(run: Run, rows_per_device: int = 1) -> StepBytes:
  """Lowers and compiles ``run``'s train step on abstract inputs; nothing is allocated.

  Args:
    run: from :func:`memory_run`.
    rows_per_device: sequences per data-parallel device in the batch (a positive int); the
      sequence length is the config's ``data.seq_len``.
  """
  if not isinstance(rows_per_device, int) or rows_per_device < 1:
    raise ValueError(f"rows_per_device={rows_per_device!r} must be a positive integer")
  rows = rows_per_device * run.mesh.shape["data"] * run.mesh.shape["fsdp"]
  tokens = jax.ShapeDtypeStruct(
      (rows, run.config.data.seq_len), jnp.int32, sharding=run.data_sharding
  )
  batch = {"input_ids": tokens, "loss_mask": tokens}
  analysis = run.train_step().lower(run.abstract_state(), batch).compile().memory_analysis()
  return StepBytes(
      analysis.argument_size_in_bytes,
      analysis.output_size_in_bytes,
      analysis.temp_size_in_bytes,
      analysis.alias_size_in_bytes,
  )
