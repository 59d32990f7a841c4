"""Everything a config determines before training starts, built once and shared.

:class:`Run` is used by the training loop and by ``lowrank-jax eval`` / ``export``: the
tokenizer, the mesh, the schedule and optimizer, the model structure, the shardings of the
train state and of batches, and the jitted evaluation. A learning-rate sweep
(``optimizer.learning_rates``) steps and saves its copies stacked
(:mod:`lowrank_jax.train.rate_copies`); ``schedule``, ``tx`` and ``shardings`` then describe one copy.
A dense rate (``optimizer.dense_learning_rate``, :mod:`lowrank_jax.train.dense_rate`) scales
the dense leaves' updates of every copy by its dense rate over its peak.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence

import jax
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from lowrank_jax.data import Tokenizer, check_vocab_fits, load_tokenizer, make_validation_batches
from lowrank_jax.models import Llama, LlamaConfig, count_params
from lowrank_jax.models.hf_checkpoint import read_hf_tensors
from lowrank_jax.train import mesh as mesh_lib
from lowrank_jax.train import dense_rate, nonfinite, rate_copies
from lowrank_jax.train.checkpoint import Checkpointer, UnreadableCheckpoint
from lowrank_jax.train.config import TrainConfig, load_config, to_dict
from lowrank_jax.train.evaluation import evaluate
from lowrank_jax.train.methods import build_optimizer, get_method
from lowrank_jax.train.schedule import make_schedule
from lowrank_jax.train.run_dir import RunDir, SweepCopy
from lowrank_jax.train.state import (
    TrainState,
    abstract_train_state,
    init_train_state,
    model_graphdef,
    train_state_shardings,
)
from lowrank_jax.train.step import make_eval_step, make_lora_merge, make_train_step


@dataclasses.dataclass
class Run:
  """The derived objects of a :class:`TrainConfig`; see :meth:`build`."""

  config: TrainConfig
  model_config: LlamaConfig
  tokenizer: Tokenizer
  mesh: Mesh
  schedule: optax.Schedule
  tx: optax.GradientTransformation
  graphdef: nnx.GraphDef
  shardings: TrainState
  data_sharding: NamedSharding

  @classmethod
  def build(cls, config: TrainConfig) -> Run:
    """Checks what only a live setup can check (vocab, device counts) and builds the run."""
    tokenizer = load_tokenizer(config.data)
    check_vocab_fits(tokenizer, config.model_config().vocab_size)
    run = cls.without_data(config, tokenizer=tokenizer)
    batch_axes = run.data_sharding.spec[0]
    batch_axes = (batch_axes,) if isinstance(batch_axes, str) else tuple(batch_axes)
    data_parallel = math.prod(run.mesh.shape[axis] for axis in batch_axes)
    for name, batch in (
        ("data.global_batch_size", config.data.global_batch_size),
        ("eval.batch_size", config.eval.batch_size),
    ):
      if batch % data_parallel:
        raise ValueError(
            f"{name}={batch} is not divisible by the {data_parallel} "
            f"data-parallel devices (mesh {' x '.join(batch_axes)})"
        )
    if run.sweep_axis is not None:
      groups = run.mesh.shape[run.sweep_axis]
      if len(run.peaks) % groups:
        raise ValueError(
            f"mesh.sweep=data splits the {len(run.peaks)} copies of optimizer.learning_rates "
            f"over the {groups} devices of the data axis; give a multiple of {groups} rates"
        )
      if jax.process_count() > 1:
        raise ValueError(
            "mesh.sweep=data runs in one process; with several, use mesh.sweep=replicated"
        )
    return run

  @classmethod
  def without_data(cls, config: TrainConfig, devices=None, tokenizer=None) -> Run:
    """The model, mesh (over ``devices``, default all), schedule, optimizer and shardings
    alone: what shape and memory questions need, no data or tokenizer required."""
    model_config = config.model_config()
    mesh = mesh_lib.make_mesh(config.mesh, devices)
    schedule = make_schedule(config.optimizer.learning_rate, config.schedule)
    tx = _optimizer(config, schedule, _dense_scale(config), mesh)
    split = config.optimizer.learning_rates and config.mesh.sweep == "data"
    return cls(
        config,
        model_config,
        tokenizer,
        mesh,
        schedule,
        tx,
        model_graphdef(model_config),
        train_state_shardings(model_config, tx, mesh),
        # copies split over data train on the whole batch: it splits over fsdp alone
        mesh_lib.batch_sharding(mesh, ("fsdp",) if split else mesh_lib.BATCH_AXES),
    )

  def banner(self) -> str:
    """One line saying what trains, on what and where, for the start of a run."""
    config, devices = self.config, self.mesh.devices.flat
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return (
        f"lowrank-jax train: {config.optimizer.method} on {self.model_name} "
        f"({count_params(self.model_config):,} parameters, {config.model.dtype}), "
        f"{self.mesh.size} {devices[0].platform} device{'s' * (self.mesh.size > 1)}{processes} "
        f"(mesh {' x '.join(f'{axis} {size}' for axis, size in self.mesh.shape.items())}), "
        f"run dir {config.run_dir}"
    )

  @property
  def model_name(self) -> str:
    """The preset, or ``the model of <dir>`` for one started from an HF checkpoint."""
    init_from = self.config.model.init_from
    return f"the model of {init_from}" if init_from else self.config.model.preset

  def after_update(self):
    """The model-side work of the method after an update (ReLoRA's merge), or ``None``."""
    if not get_method(self.config.optimizer.method).merge_lora:
      return None
    return make_lora_merge(
        self.graphdef, self.config.optimizer_section().reset_every, self.config.seed
    )

  @property
  def peaks(self) -> tuple[float, ...]:
    """The peak rates of a learning-rate sweep's copies; empty for one run."""
    return self.config.optimizer.learning_rates

  @property
  def sweep_axis(self) -> str | None:
    """The mesh axis a sweep's copies are split over (``mesh.sweep``), else ``None``."""
    return "data" if self.peaks and self.config.mesh.sweep == "data" else None

  def abstract_state(self) -> TrainState:
    """The state as the train step takes it and a checkpoint holds it (the copies stacked
    for a sweep): ``ShapeDtypeStruct`` leaves with shardings."""
    one = abstract_train_state(self.model_config, self.tx, self.mesh)
    if not self.peaks:
      return one
    return rate_copies.stacked_abstract(one, len(self.peaks), self.sweep_axis)

  def init_state(self) -> TrainState:
    """A fresh state initialised from ``seed`` (and from ``model.init_from``'s weights if
    given), every copy of a sweep the same."""
    init_from = self.config.model.init_from
    pretrained = read_hf_tensors(init_from) if init_from else None
    one = init_train_state(self.model_config, self.tx, self.mesh, self.config.seed, pretrained)
    if not self.peaks:
      return one
    shardings = jax.tree.map(lambda leaf: leaf.sharding, self.abstract_state())
    return jax.jit(
        lambda state: rate_copies.stack(state, len(self.peaks)), out_shardings=shardings
    )(one)

  def _step(self, schedule: optax.Schedule, scale: dense_rate.Scale, tx, inject, keep):
    """The step of ``tx``, the transform at ``schedule`` whose dense leaves' updates are
    scaled by ``scale``."""
    section = self.config.optimizer_section()
    record = get_method(section.method).record(schedule, section)
    return make_train_step(
        self.graphdef,
        tx,
        self.config.schedule.grad_accum,
        inject,
        self.after_update(),
        self.mesh,
        dense_rate.with_dense_rate(record, scale),
        keep,
        seed=self.config.seed,
    )

  def train_step(self, inject=None):
    """The jitted train step over the run's mesh: explicit shardings, the state donated.

    ``inject``: testing only (:func:`~lowrank_jax.train.nonfinite.make_injector`).
    """
    if self.peaks:
      unit = make_schedule(1.0, self.config.schedule)  # the paper's schedule is linear in its peak

      def step_at(peak, dense_peak):
        scale = dense_rate.dense_scale(dense_peak, peak)
        schedule = lambda count: peak * unit(count)  # noqa: E731
        tx = _optimizer(self.config, schedule, scale, self.mesh)  # each copy's own rates
        return self._step(schedule, scale, tx, inject, rate_copies.keep_if_finite)

      one = abstract_train_state(self.model_config, self.tx, self.mesh)
      step = rate_copies.make_sweep_step(step_at, self.config.optimizer.copy_rates(), one)
    else:
      scale = _dense_scale(self.config)  # the run's transform, built once with the run
      step = self._step(self.schedule, scale, self.tx, inject, nonfinite.keep_if_finite)
    shardings = jax.tree.map(lambda leaf: leaf.sharding, self.abstract_state())
    return jax.jit(
        step,
        in_shardings=(shardings, self.data_sharding),
        out_shardings=(shardings, mesh_lib.replicated(self.mesh)),
        donate_argnums=0,
    )

  @functools.cached_property
  def _eval_step(self):
    return jax.jit(
        make_eval_step(self.graphdef, self.mesh),
        in_shardings=(self.shardings.params, self.shardings.frozen, self.data_sharding),
    )

  def evaluate(self, state: TrainState) -> dict[str, float]:
    """Validation loss and perplexity of ``state`` within the validation token budget."""
    batches = make_validation_batches(
        self.config.data,
        self.tokenizer,
        sharding=self.data_sharding,
        batch_size=self.config.eval.batch_size,
    )
    params, frozen = jax.device_put(  # a sweep's copy comes from its devices' part
        (state.params, state.frozen), (self.shardings.params, self.shardings.frozen)
    )
    eval_config = self.config.eval
    return evaluate(
        self._eval_step,
        params,
        frozen,
        batches,
        eval_config.mean,
        eval_config.references_divisor,
    )

  def model(self, state: TrainState) -> Llama:
    return nnx.merge(self.graphdef, state.params, state.frozen)


def _dense_scale(config: TrainConfig) -> dense_rate.Scale:
  """The dense leaves' scale of one run (of a sweep: at ``learning_rate``, for the shapes)."""
  return dense_rate.dense_scale(
      config.optimizer.dense_learning_rate, config.optimizer.learning_rate
  )


def _optimizer(
    config: TrainConfig, schedule: optax.Schedule, scale: dense_rate.Scale, mesh: Mesh
) -> optax.GradientTransformation:
  """The method's transform at ``schedule``, its dense leaves' updates scaled by ``scale``."""
  tx = build_optimizer(config.optimizer_section(), schedule, mesh)
  return dense_rate.scale_dense_updates(tx, scale)


# The keys ``lowrank-jax eval`` may change: which data it scores and how it batches them.
EVAL_OVERRIDES = ("data.", "eval.")


def load_checkpoint(
    run_dir: str, step: int | None = None, overrides: Sequence[str] = ()
) -> tuple[Run, TrainState, int]:
  """``(run, state, step)`` of the newest (or the given) checkpoint of ``run_dir``: a run
  directory, or a copy of a learning-rate sweep (``SWEEP_DIR/lr<rate>``, its state taken from
  the sweep's checkpoint). ``overrides`` (``data.*`` and ``eval.*`` keys) change the data the
  run evaluates, e.g. another split or files.

  Reads only. An unreadable checkpoint raises
  :class:`~lowrank_jax.train.checkpoint.UnreadableCheckpoint` naming it and the newest
  readable older step.
  """
  for override in overrides:
    if not override.startswith(EVAL_OVERRIDES):
      raise ValueError(
          f"{override!r} would change the checkpoint's run; eval takes only data.* and eval.* "
          "keys (another split, files or shards, another batch size)"
      )
  copy = SweepCopy.at(run_dir)
  holder = copy.sweep_dir if copy else run_dir  # a sweep's checkpoint holds its copies
  saved = RunDir(holder).saved_config()
  if saved.optimizer.learning_rates and not copy:
    rates = saved.optimizer.learning_rates
    raise ValueError(
        f"{run_dir!r} holds a learning-rate sweep of {len(rates)} copies "
        f"(optimizer.learning_rates={list(rates)}); name one copy's directory, e.g. "
        f"{os.path.join(run_dir, rate_copies.copy_dir_name(rates[0], *saved.optimizer.dense_learning_rates[:1]))}"
    )
  config = load_config(overrides=overrides, base=to_dict(copy.config(saved) if copy else saved))
  run = Run.build(config)
  stored = Run.without_data(saved) if copy else run
  state, step = _restore(stored, holder, step)
  if copy:
    state = rate_copies.copy_of(state, copy.position)
  return run, state, step


def _restore(run: Run, run_dir: str, step: int | None) -> tuple[TrainState, int]:
  """The state of ``run`` at checkpoint ``step`` (default: the newest) of ``run_dir``."""
  checkpointer = Checkpointer(RunDir(run_dir).checkpoints, run.config.checkpoint, read_only=True)
  steps = checkpointer.steps()
  if not steps:
    raise ValueError(f"run directory {run_dir!r} has no checkpoint")
  step = steps[0] if step is None else step
  if step not in steps:
    raise ValueError(f"step {step} has no checkpoint in {run_dir!r}; saved steps: {sorted(steps)}")
  try:
    state, _ = checkpointer.restore(step, run.abstract_state())
  except UnreadableCheckpoint as error:
    older = checkpointer.newest_readable_before(step)
    offer = (
        f"pass --step {older} for the newest readable older one"
        if older is not None
        else "no older checkpoint is readable"
    )
    raise UnreadableCheckpoint(step, error.path, f"{error.reason}; {offer}") from None
  checkpointer.close()
  return state, step
