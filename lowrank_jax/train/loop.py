"""The training loop: one function, :func:`train`, from a config to a finished run.

Data flow per step: the grain iterator yields a global batch sharded over
``(data, fsdp)``; the jitted step (explicit in/out shardings, the state donated) returns
the new state and device-side metrics; metrics are fetched only every
``logging.every`` steps, so the host never stalls the device in between.

A run directory is never overwritten: when it already holds a run of the same config, the
run resumes from its newest readable checkpoint (state, data position, token count and wall
time; one that fails its integrity check is moved aside, see
:mod:`lowrank_jax.train.checkpoint`), and its metrics are cut back to that step so that no
step is logged twice. Another config is refused before any checkpoint is opened, unless it
changes only what may change mid-run and ``accept_changes`` says so (see
:mod:`lowrank_jax.train.run_dir`); a finished run is left as it is. SIGTERM or SIGINT (a
TPU preemption, Ctrl-C) at any point finishes the current step (or evaluation), saves a
checkpoint and returns cleanly.

A non-finite step is skipped inside the jitted step; its flag is fetched one step late (the
device never waits for the host) and after ``faults.max_bad_steps`` in a row the run saves
its last good state and raises ``FloatingPointError``.

A learning-rate sweep (``optimizer.learning_rates``, :mod:`lowrank_jax.train.rate_copies`) runs this
same loop over its stacked copies: each copy logs, evaluates and summarises into its own
directory, the run directory's ``summary.json`` lists them, and a copy whose non-finite streak
reaches the limit is held while the others train on (the run stops when all have).

A multi-host run (see :mod:`lowrank_jax.train.distributed`) runs this same loop in every
process: all of them step, evaluate, save and restore checkpoints together; only process 0
writes ``config.yaml``, metrics, the progress bar, ``summary.json`` and the plot.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import signal
import time

import jax

from lowrank_jax.data import make_train_iterator, make_validation_batches
from lowrank_jax.train import distributed
from lowrank_jax.train.update_records import EVENTS
from lowrank_jax.train import nonfinite, provenance, rate_copies
from lowrank_jax.train.checkpoint import Checkpointer
from lowrank_jax.train.config import TrainConfig
from lowrank_jax.train.evaluation import unigram_perplexity
from lowrank_jax.train.periods import periods_past_the_run
from lowrank_jax.train.metrics import (
    MetricsLogger,
    Progress,
    plot_loss_curve,
    plot_loss_curves,
    read_metrics,
)
from lowrank_jax.train.run import Run
from lowrank_jax.train.run_dir import RunDir, SweepCopy
from lowrank_jax.train.state import TrainState, tree_bytes


class StopRequest:
  """Turns SIGTERM and SIGINT into a flag the loop checks after every step (:meth:`agreed`)."""

  def __init__(self):
    self.signal: int | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def agreed(self, step: int, every: int) -> int | None:
    """The signal to stop on after ``step``, the same in every process.

    One process stops on its own flag. Several compare their flags after every ``every``-th
    step (a small all-gather) and stop together on any one's signal, so that none goes on
    stepping while another saves; a signal so waits up to ``every`` steps.
    """
    if jax.process_count() == 1:
      return self.signal
    if step % every:
      return None
    return distributed.largest(self.signal or 0) or None


@dataclasses.dataclass
class _Copy:
  """One trained model and its records: the run itself, or one rate of a learning-rate
  sweep (``index`` its place on the sweep axis, its records in a subdirectory), with its
  dense leaves' rate (``None``: ``learning_rate``; ``paired``: the sweep pairs each rate with
  its own, which the directory and label name)."""

  index: int | None
  learning_rate: float
  dense_learning_rate: float | None
  paired: bool
  dir: RunDir
  logger: MetricsLogger
  streak: nonfinite.NonFiniteStreak

  def label(self) -> str:
    if self.index is None:
      return ""
    dense = f", dense leaves {self.dense_learning_rate:g}" if self.paired else ""
    return f" (learning rate {self.learning_rate:g}{dense})"

  def identity(self, sweep_run_dir: str) -> dict:
    """What a copy's summary says of it beyond the run's: its rates, and for a copy of a
    sweep its directory and its sweep's."""
    dense = self.dense_learning_rate
    rates = {
        "learning_rate": self.learning_rate,
        "dense_learning_rate": self.learning_rate if dense is None else dense,
    }
    if self.index is None:
      return rates
    return {"run_dir": self.dir.path, "sweep_run_dir": sweep_run_dir, **rates}

  def own(self, tree):
    """This copy's part of a tree of the run (its arrays of a stacked state, or metrics)."""
    return tree if self.index is None else rate_copies.copy_of(tree, self.index)


def _copies(config: TrainConfig, run_dir: RunDir, is_main: bool, first: int) -> list[_Copy]:
  """The copies the run trains, from step ``first`` (their records cut back to it)."""
  swept, paired = bool(config.optimizer.learning_rates), bool(config.optimizer.dense_learning_rates)
  copies = []
  for index, (rate, dense) in enumerate(config.optimizer.copy_rates()):
    name = rate_copies.copy_dir_name(rate, dense if paired else None)
    copy_dir = RunDir(run_dir.file(name)) if swept else run_dir
    if is_main:
      os.makedirs(copy_dir.path, exist_ok=True)
    if is_main:
      copy_dir.cut_metrics(first)
    tensorboard = copy_dir.tensorboard if config.logging.tensorboard else None
    purge = first + 1 if first else None
    logger = MetricsLogger(copy_dir.metrics, tensorboard, is_main, purge_step=purge)
    streak = nonfinite.NonFiniteStreak(config.faults.max_bad_steps)
    place = index if swept else None
    copies.append(_Copy(place, rate, dense, paired, copy_dir, logger, streak))
  return copies


@dataclasses.dataclass
class _Window:
  """Metrics of the steps since the last log line (device arrays until fetched).

  A log line holds the mean loss of the window, the last step's gradient norm and learning
  rates, and how many times each event of the method happened in the window.
  """

  metrics: list = dataclasses.field(default_factory=list)
  started: float = dataclasses.field(default_factory=time.perf_counter)

  def flush(self, copies: list[_Copy]) -> tuple[list[dict[str, float]], float]:
    """Each copy's log line, and the tokens of the window (the same batches for all)."""
    fetched = jax.device_get(self.metrics)
    elapsed = time.perf_counter() - self.started
    records = []
    for copy in copies:
      own = [copy.own(m) for m in fetched]
      tokens = sum(float(m["tokens"]) for m in own)
      records.append(
          {
              "loss": sum(float(m["loss"]) for m in own) / len(own),
              "grad_norm": float(own[-1]["grad_norm"]),
              **{name: float(value) for name, value in own[-1].items() if name.startswith("lr")},
              "tokens_per_s": tokens / max(elapsed, 1e-9),
              "skipped_steps": sum(not m["finite"] for m in own),
              **{name: sum(int(m[name]) for m in own) for name in EVENTS if name in own[-1]},
          }
      )
    self.metrics, self.started = [], time.perf_counter()
    return records, tokens


def train(config: TrainConfig, accept_changes: bool = False) -> dict:
  """Trains (or resumes) the run described by ``config``; returns the final summary.

  Args:
    config: the run.
    accept_changes: continue a run whose config differs from ``config`` in keys that may
      change mid-run (:data:`~lowrank_jax.train.run_dir.AMENDABLE`), recording them.

  Raises:
    ValueError: a bad config or data, or a run directory holding a run that ``config``
      may not continue (nothing written).
    FloatingPointError: ``faults.max_bad_steps`` non-finite steps in a row (checkpoint saved).
    CheckpointSaveError: a checkpoint could not be written (the previous one is intact).
  """
  distributed.initialize(config.distributed)  # before anything touches a device
  with StopRequest() as stop_request:  # from the start: a preemption may come at any time
    return _train(config, accept_changes, stop_request)


def _train(config: TrainConfig, accept_changes: bool, stop_request: StopRequest) -> dict:
  started = time.perf_counter()
  copy = SweepCopy.at(config.run_dir)
  if copy is not None:
    _make_a_run_of(copy, config.run_dir)
  run_dir = RunDir(config.run_dir)
  config = run_dir.keeping_horizon(config)
  changes = run_dir.changes(config, accept_changes)  # reads only
  is_main = jax.process_index() == 0
  finished = run_dir.finished_summary(config.schedule.total_steps)
  if finished is not None:
    if is_main:
      print(f"{config.run_dir} has finished its {finished['steps']} steps; nothing to do")
    return finished
  run = Run.build(config)  # every check before anything is written
  if is_main:
    print(run.banner(), flush=True)
  train_batches = make_train_iterator(config.data, run.tokenizer, sharding=run.data_sharding)
  resumed = run_dir.holds_run()
  distributed.barrier("run_dir checked")  # every process has looked before process 0 writes
  checkpointer = Checkpointer(run_dir.checkpoints, config.checkpoint)
  state, meta = _restore_or_init(config, run, run_dir, checkpointer, train_batches)
  tokens_seen, earlier_wall_time = meta["tokens_seen"], meta["wall_time_s"]
  if is_main:  # the run continues from state.step: its config and records say so
    run_dir.start(config, changes, int(state.step))
  copies = _copies(config, run_dir, is_main, int(state.step))
  step_fn = run.train_step(
      nonfinite.make_injector(config.faults.nan_loss_steps, config.faults.inf_grad_steps)
  )

  first, total = int(state.step), config.schedule.total_steps
  progress = Progress(total, first, enabled=is_main and config.logging.progress)
  note = progress.write if is_main else lambda message: None
  if resumed:
    changed = f" with {', '.join(c.describe() for c in changes)}" if changes else ""
    note(f"resuming {config.run_dir} at step {first}{changed}")
    if config.model.init_from and first:
      note(f"model.init_from={config.model.init_from!r} is not read: the checkpoint wins")
    schedule = run_dir.schedule_note(config, first)
    if schedule and changes:
      note(schedule)
  if first < total:
    for warning in periods_past_the_run(config):
      note(f"warning: {warning}")
    note("compiling the train step (the first step waits for it)")
  window, stop, step = _Window(), None, first
  unchecked = None  # (step, finite flags) of the previous step

  def halted_by(checked) -> bool:
    """Whether every copy has had ``faults.max_bad_steps`` non-finite steps in a row."""
    at_step, flags = checked[0], jax.device_get(checked[1])
    for copy in copies:
      finite = bool(copy.own(flags))
      if not finite:
        note(
            f"step {at_step}{copy.label()}: non-finite loss, gradient or update, update skipped "
            f"({copy.streak.in_a_row + 1} in a row)"
        )
      copy.streak.observe(at_step, finite)
    return all(copy.streak.in_a_row >= copy.streak.max_bad_steps for copy in copies)

  def wall_time() -> float:
    return earlier_wall_time + time.perf_counter() - started

  def save(at_step: int):
    meta = {"tokens_seen": tokens_seen, "wall_time_s": wall_time()}
    checkpointer.save(at_step, state, train_batches, meta)

  for step in range(first + 1, total + 1):
    state, metrics = step_fn(state, next(train_batches))
    window.metrics.append(metrics)
    checkpointer.poll()
    halted = unchecked is not None and halted_by(unchecked)
    unchecked = (step, metrics["finite"])
    if step == total and not halted:
      halted, unchecked = halted_by(unchecked), None
    if step % config.logging.every == 0 or step == total or stop_request.signal or halted:
      records, tokens = window.flush(copies)
      tokens_seen += tokens
      for copy, record in zip(copies, records):
        copy.logger.log(step, {**record, "tokens_seen": tokens_seen})
      best = min(records, key=lambda record: _finite_or_inf(record["loss"]))
      progress.advance_to(step, best["loss"], best["tokens_per_s"])
    if halted:
      stop = "non-finite"
      break
    if config.eval.every and step % config.eval.every == 0 and step != total:
      for copy in copies:
        copy.logger.log(step, run.evaluate(copy.own(state)))
    signalled = stop_request.agreed(step, config.logging.every)  # a log step when agreed
    if signalled:
      stop = signal.Signals(signalled).name
      break
    if config.checkpoint.every and step % config.checkpoint.every == 0:
      save(step)
  progress.close()
  save(int(step))
  checkpointer.wait()

  shared = {
      "run_dir": config.run_dir,
      "method": config.optimizer.method,
      "steps": int(step),
      "total_steps": total,
      "stopped_by": stop,
      "tokens_seen": tokens_seen,
      "wall_time_s": wall_time(),
      "session_wall_time_s": time.perf_counter() - started,
      "platform": provenance.platform(),  # what decides the numbers' last bits
  }
  unigram = None
  if stop is None and jax.process_count() == 1:
    train_sample = itertools.islice(make_train_iterator(config.data, run.tokenizer), 20)
    unigram = unigram_perplexity(
        train_sample,
        make_validation_batches(config.data, run.tokenizer, batch_size=config.eval.batch_size),
    )
  summaries = []
  for copy in copies:
    own = copy.own(state)
    # A copy of a sweep whose streak reached the limit was held from then on: it stopped.
    copy_stop = "non-finite" if copy.streak.tripped else stop
    summary = {
        **shared,
        **copy.identity(config.run_dir),
        "stopped_by": copy_stop,
        # every session's, from the records (cut back to the restored step on resume)
        "skipped_steps": sum(r.get("skipped_steps", 0) for r in read_metrics(copy.dir.metrics)),
        "param_bytes": tree_bytes(own.params) + tree_bytes(own.frozen),
        "opt_state_bytes": tree_bytes(own.opt_state),
    }
    if copy_stop is None:
      final = run.evaluate(own)
      copy.logger.log(int(step), final)
      summary.update(final)
      if unigram is not None:
        summary["unigram_ppl"] = unigram
    copy.logger.close()
    summaries.append(summary)
    if is_main:
      _write_summary(
          copy.dir, summary, f"{config.optimizer.method} on {config.model.preset}{copy.label()}"
      )
  checkpointer.close()
  summary = summaries[0]
  if run.peaks:
    summary = {**shared, "learning_rates": list(run.peaks), "copies": summaries}
    if config.optimizer.dense_learning_rates:
      summary["dense_learning_rates"] = list(config.optimizer.dense_learning_rates)
    if is_main:
      with open(run_dir.summary, "w") as f:
        json.dump(summary, f, indent=2)
      plot_loss_curves(
          {os.path.basename(copy.dir.path): read_metrics(copy.dir.metrics) for copy in copies},
          run_dir.loss_curve,
          title=f"{config.optimizer.method} on {config.model.preset}: learning-rate sweep",
      )
  if stop == "non-finite":
    streaks = "; ".join(f"{copy.streak.message()}{copy.label()}" for copy in copies)
    raise FloatingPointError(f"{streaks}: checkpoint step {step} in {checkpointer.directory}")
  return summary


def _finite_or_inf(value: float) -> float:
  return value if math.isfinite(value) else math.inf


def _write_summary(run_dir: RunDir, summary: dict, title: str) -> None:
  with open(run_dir.summary, "w") as f:
    json.dump(summary, f, indent=2)
  plot_loss_curve(read_metrics(run_dir.metrics), run_dir.loss_curve, title=title)


def _make_a_run_of(copy: SweepCopy, path: str) -> None:
  """Makes the directory ``path`` of a sweep's ``copy`` a run of its own, which continues as
  the run at its rate would: its config and a checkpoint of its state (the data position,
  tokens and wall time the sweep's) at the sweep's newest step; its records are kept."""
  if jax.process_count() > 1:
    raise ValueError(f"run_dir {path!r} is a copy of a sweep: continue it in one process")
  sweep_config = RunDir(copy.sweep_dir).saved_config()
  sweep_run = Run.build(sweep_config)
  batches = make_train_iterator(
      sweep_config.data, sweep_run.tokenizer, sharding=sweep_run.data_sharding
  )
  sweep_dir = RunDir(copy.sweep_dir)
  stored = Checkpointer(sweep_dir.checkpoints, sweep_config.checkpoint, read_only=True)
  restored = stored.restore_newest(
      sweep_run.abstract_state(), batches, sweep_dir.unreadable_checkpoints
  )
  stored.close()
  if restored is None:
    raise ValueError(f"the sweep in {copy.sweep_dir!r} has no checkpoint to continue {path!r}")
  step, state, meta = restored
  own = RunDir(path)
  saver = Checkpointer(own.checkpoints, sweep_config.checkpoint)
  saver.save(step, rate_copies.copy_of(state, copy.position), batches, meta)
  saver.wait()
  saver.close()
  own.start(copy.config(sweep_config), [], step)  # last: config.yaml makes it a run


def _restore_or_init(
    config: TrainConfig, run: Run, run_dir: RunDir, checkpointer: Checkpointer, train_batches
) -> tuple[TrainState, dict]:
  """``(state, meta)`` from the newest readable checkpoint, or a fresh state; ``meta`` holds
  the tokens seen and the wall time spent before it (absent from older checkpoints: 0)."""
  had_checkpoints = bool(checkpointer.steps())
  restored = checkpointer.restore_newest(
      run.abstract_state(), train_batches, run_dir.unreadable_checkpoints
  )
  if restored is not None:
    _, state, meta = restored
    return state, {"tokens_seen": float(meta["tokens_seen"]), "wall_time_s": 0.0} | meta
  if had_checkpoints:
    raise ValueError(
        f"run_dir {config.run_dir!r} has no readable checkpoint (the unreadable "
        f"ones are in {run_dir.unreadable_checkpoints}); choose a new run_dir"
    )
  return run.init_state(), {"tokens_seen": 0.0, "wall_time_s": 0.0}
