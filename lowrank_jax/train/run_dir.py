"""A run directory: its layout, and what may change when a run continues.

Every command that reads or writes a run (``train``, ``eval``, ``export``, the benchmark)
names its files through :class:`RunDir`::

    RUN_DIR/
      config.yaml             the config the run continues with
      config_history.jsonl    each accepted change on resume: step, key, old and new value
      checkpoints/STEP/       orbax checkpoints: train state, data position, tokens, wall time
      unreadable_checkpoints/STEP/   checkpoints that failed their integrity check (kept)
      lr<rate>/               a learning-rate sweep's copy: its records (:class:`SweepCopy`)
      metrics.jsonl           one line per logged step and per validation
      summary.json            the run so far: wall time and tokens summed over its sessions
      loss_curve.png, tensorboard/
      train.log, failed       the benchmark runner's log of the run, and its failure marker

A run continues only with the config it started with. Before any checkpoint is opened,
:meth:`RunDir.changes` compares the requested config with ``config.yaml`` (the method's
options complete with their defaults on both sides): a key that
shapes the trained state or the numbers (the model, the method and its options, the
learning rate, the data, the seed) is refused, and so, unless asked for, is a key that may
legitimately change mid-run (:data:`AMENDABLE`: more steps, another eval or checkpoint
cadence, another mesh). Keys of the session alone (:data:`SESSION_KEYS`: the run
directory's spelling, the progress bar, the processes) are never compared.

>>> flat({"optimizer": {"method": "galore", "options": {"rank": 8}}, "seed": 0})
{'optimizer.method': 'galore', 'optimizer.options.rank': 8, 'seed': 0}
>>> [c.describe() for c in differences({"schedule": {"total_steps": 3}},
...                                    {"schedule": {"total_steps": 6}})]
['schedule.total_steps (3 -> 6)']
>>> Change("optimizer.options.rank", MISSING, 32).amendable
False
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import yaml

from lowrank_jax.train.config import (
    TrainConfig,
    load_config,
    merged_values,
    resolved_dict,
    to_dict,
)
from lowrank_jax.train.schedule import make_schedule
from lowrank_jax.train.rate_copies import copy_dir_name

# Keys (or sections, ending in ".") a continued run may take new values of when asked to:
# they change how long the run goes and what it records, not what a step computes.
AMENDABLE = (
    "schedule.total_steps",
    "schedule.decay_steps",
    "eval.",
    "logging.",
    "checkpoint.",
    "faults.",
    "mesh.",
    "data.num_workers",
    "data.read_threads",
    "data.validation_tokens",
)
# Keys of one session, never compared: where the directory is named from, the progress
# bar, and the processes (a coordinator's address differs at every launch).
SESSION_KEYS = ("run_dir", "logging.progress", "distributed.")
MISSING = "unset"


def requested_config(paths: Sequence[str] = (), overrides: Sequence[str] = ()) -> TrainConfig:
  """The config ``lowrank-jax train`` asks for: the YAML ``paths`` and ``key=value``
  ``overrides`` laid over the config of the run their ``run_dir`` holds (its session keys
  back at their defaults; a sweep's copy: the run at its rate), or over the defaults when it
  holds none. So ``train run_dir=X``
  continues X as it was, and each key given is a change to it, checked by
  :meth:`RunDir.changes`."""
  path = str(merged_values(paths, overrides).get("run_dir"))
  copy = SweepCopy.at(path)
  if copy is not None:
    saved = copy.config(RunDir(copy.sweep_dir).saved_config())
  elif RunDir(path).holds_run():
    saved = RunDir(path).saved_config()
  else:
    return load_config(paths, overrides)
  values, defaults = to_dict(saved), to_dict(TrainConfig())
  for key in SESSION_KEYS:
    *sections, name = key.rstrip(".").split(".")
    inner, default = values, defaults
    for section in sections:
      inner, default = inner[section], default[section]
    inner[name] = default[name]
  return load_config(paths, overrides, base=values)


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
  return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def flat(values: dict, prefix: str = "") -> dict[str, Any]:
  """A nested config dict as ``{dotted key: leaf value}`` (mappings are descended, so an
  empty one has no key)."""
  flattened = {}
  for key, value in values.items():
    if isinstance(value, dict):
      flattened.update(flat(value, f"{prefix}{key}."))
    else:
      flattened[prefix + key] = value
  return flattened


@dataclasses.dataclass(frozen=True)
class Change:
  """One key whose requested value differs from the saved one (:data:`MISSING` if absent)."""

  key: str
  old: Any
  new: Any

  @property
  def amendable(self) -> bool:
    return _matches(self.key, AMENDABLE)

  def describe(self) -> str:
    return f"{self.key} ({self.old} -> {self.new})"


def differences(saved: dict, requested: dict) -> list[Change]:
  """The keys of two config dicts whose values differ, session keys left out."""
  old, new = flat(saved), flat(requested)
  return [
      Change(key, old.get(key, MISSING), new.get(key, MISSING))
      for key in sorted(set(old) | set(new))
      if old.get(key, MISSING) != new.get(key, MISSING) and not _matches(key, SESSION_KEYS)
  ]


@dataclasses.dataclass(frozen=True)
class RunDir:
  """The files of the run directory at ``path``."""

  path: str

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  @property
  def config(self) -> str:
    return self.file("config.yaml")

  @property
  def config_history(self) -> str:
    return self.file("config_history.jsonl")

  @property
  def checkpoints(self) -> str:
    return self.file("checkpoints")

  @property
  def unreadable_checkpoints(self) -> str:
    return self.file("unreadable_checkpoints")

  @property
  def metrics(self) -> str:
    return self.file("metrics.jsonl")

  @property
  def summary(self) -> str:
    return self.file("summary.json")

  @property
  def loss_curve(self) -> str:
    return self.file("loss_curve.png")

  @property
  def tensorboard(self) -> str:
    return self.file("tensorboard")

  @property
  def train_log(self) -> str:
    return self.file("train.log")

  @property
  def failed_marker(self) -> str:
    return self.file("failed")

  def holds_run(self) -> bool:
    return os.path.exists(self.config)

  def saved_config(self) -> TrainConfig:
    """The config the run continues with.

    Raises:
      ValueError: the directory holds no run.
    """
    if not self.holds_run():
      raise ValueError(
          f"{self.path!r} is not a run directory: it has no config.yaml (a copy of a "
          "learning-rate sweep is named RUN_DIR/lr<rate>)"
      )
    with open(self.config) as f:
      saved = yaml.safe_load(f)
    try:
      return load_config(base=saved)
    except ValueError as error:
      raise ValueError(f"{self.config} no longer loads: {error}") from None

  def read_summary(self) -> dict | None:
    if not os.path.exists(self.summary):
      return None
    with open(self.summary) as f:
      return json.load(f)

  def finished_summary(self, total_steps: int) -> dict | None:
    """The summary of a run that completed ``total_steps`` steps and holds their checkpoint
    (a copy of a learning-rate sweep: its sweep's run directory holds it), else ``None``."""
    summary = self.read_summary()
    holder = RunDir(summary.get("sweep_run_dir", self.path)) if summary else self
    complete = (
        summary
        and summary.get("stopped_by") is None
        and summary["steps"] == total_steps == holder.newest_checkpoint_step()
    )
    return summary if complete else None

  def newest_checkpoint_step(self) -> int | None:
    """The newest committed checkpoint step on disk (by name; nothing is opened)."""
    if not os.path.isdir(self.checkpoints):
      return None
    steps = [int(name) for name in os.listdir(self.checkpoints) if name.isdigit()]
    return max(steps, default=None)

  def keeping_horizon(self, config: TrainConfig) -> TrainConfig:
    """``config`` with the horizon of the schedule of the run held here, when ``config``
    names none (``schedule.decay_steps`` unset) and would move it by changing
    ``schedule.total_steps``.

    The cosine then ends where it did, and steps past it run at the final rate: an extended
    run's rate goes on continuously instead of jumping to a re-stretched cosine's.
    """
    if config.schedule.decay_steps is not None or not self.holds_run():
      return config
    saved = self.saved_config().schedule
    horizon = saved.decay_steps
    if horizon is None and saved.total_steps != config.schedule.total_steps:
      horizon = saved.total_steps
    if horizon is None:
      return config
    return dataclasses.replace(
        config, schedule=dataclasses.replace(config.schedule, decay_steps=horizon)
    )

  def changes(self, config: TrainConfig, accept_changes: bool = False) -> list[Change]:
    """What ``config`` changes of the run held here (``[]`` for a new run); reads only.

    Raises:
      ValueError: the directory is a file; a change that no run may make; an amendable
        change not accepted; fewer steps than the run has taken.
    """
    if os.path.exists(self.path) and not os.path.isdir(self.path):
      raise ValueError(f"run_dir {self.path!r} is a file, not a directory")
    if not self.holds_run():
      return []
    changes = differences(resolved_dict(self.saved_config()), resolved_dict(config))
    refused = [c for c in changes if not c.amendable]
    if any(c.key == "model.init_from" for c in refused):
      raise ValueError(
          f"model.init_from starts a new run only: run_dir {self.path!r} holds a run, which "
          "continues from its own checkpoint (the checkpoint wins); choose a new run_dir"
      )
    if refused:
      raise ValueError(
          f"run_dir {self.path!r} holds a run that cannot continue with another "
          f"{', '.join(c.describe() for c in refused)}; choose a new run_dir"
      )
    if changes and not accept_changes:
      raise ValueError(
          f"run_dir {self.path!r} holds a run started with other "
          f"{', '.join(c.describe() for c in changes)}; pass --accept-changes to continue "
          f"it with them (recorded in {os.path.basename(self.config_history)})"
      )
    taken = self.newest_checkpoint_step()
    if taken is not None and config.schedule.total_steps < taken:
      raise ValueError(
          f"schedule.total_steps={config.schedule.total_steps} is below the {taken} steps "
          f"the run in {self.path!r} has taken"
      )
    return changes

  def schedule_note(self, config: TrainConfig, step: int) -> str | None:
    """What the schedule does past ``step`` when the run held here takes more steps than it
    had horizon (``None`` otherwise): the note printed on resuming."""
    section = config.schedule
    horizon = section.decay_steps or section.total_steps
    if section.kind == "constant" or horizon >= section.total_steps:
      return None
    rate = make_schedule(1.0, section)
    stretched = make_schedule(1.0, dataclasses.replace(section, decay_steps=None))
    return (
        f"the schedule keeps its horizon of {horizon} steps (schedule.decay_steps): the rate "
        f"goes on from {rate(step):.3g} x peak at step {step}, and steps "
        f"{max(horizon, step) + 1} to {section.total_steps} run at its final rate, "
        f"{rate(horizon):.3g} x peak; schedule.decay_steps={section.total_steps} would stretch "
        f"the cosine instead, the rate jumping to {stretched(step):.3g} x peak"
    )

  def start(self, config: TrainConfig, changes: list[Change], step: int) -> None:
    """Writes ``config.yaml`` of a new run, or records the accepted ``changes`` of a
    continued one (restored at ``step``) and makes ``config.yaml`` the new config."""
    os.makedirs(self.path, exist_ok=True)
    if self.holds_run() and not changes:
      return
    if changes:
      record = {
          "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
          "step": step,
          "changes": {c.key: [c.old, c.new] for c in changes},
      }
      with open(self.config_history, "a") as f:
        f.write(json.dumps(record) + "\n")
    partial = self.config + ".tmp"
    with open(partial, "w") as f:
      yaml.safe_dump(to_dict(config), f, sort_keys=False)
    os.replace(partial, self.config)

  def cut_metrics(self, step: int) -> None:
    """Drops the metrics lines logged after ``step``: a resumed run logs them again."""
    if not os.path.exists(self.metrics):
      return
    with open(self.metrics) as f:
      lines = f.readlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) == len(lines):
      return
    partial = self.metrics + ".tmp"
    with open(partial, "w") as f:
      f.writelines(kept)
    os.replace(partial, self.metrics)


@dataclasses.dataclass(frozen=True)
class SweepCopy:
  """A copy of a learning-rate sweep, ``SWEEP_DIR/lr<rate>`` (``lr<rate>_dense<rate>`` where
  the sweep pairs each rate with a dense leaves' rate), read as the run at its rates.

  A sweep (:mod:`lowrank_jax.train.rate_copies`) keeps one checkpoint of all its copies in its own
  run directory and each copy's records in ``lr<rate>/``. ``train``, ``eval`` and ``export``
  name a copy by that directory: its config is the sweep's with ``optimizer.learning_rate`` the
  copy's (and no ``learning_rates``), its state its part of the sweep's checkpoint.
  """

  sweep_dir: str
  position: int  # the copy's place on the sweep's axis of copies
  learning_rate: float
  dense_learning_rate: float | None = None  # its own, where the sweep pairs the two rates

  @classmethod
  def at(cls, path: str) -> SweepCopy | None:
    """The copy whose directory ``path`` is (its parent holds a sweep with a copy of that
    name), else ``None``."""
    parent = RunDir(os.path.dirname(os.path.normpath(path)))
    if os.path.exists(RunDir(path).config) or not parent.holds_run():
      return None
    optimizer = parent.saved_config().optimizer
    dense = optimizer.dense_learning_rates or (None,) * len(optimizer.learning_rates)
    name = os.path.basename(path.rstrip("/"))
    for position, rates in enumerate(zip(optimizer.learning_rates, dense)):
      if copy_dir_name(*rates) == name:
        return cls(parent.path, position, *rates)
    return None

  def config(self, sweep_config: TrainConfig) -> TrainConfig:
    """The sweep's config as the run of this copy alone."""
    optimizer = sweep_config.optimizer
    optimizer = dataclasses.replace(
        optimizer,
        learning_rate=self.learning_rate,
        learning_rates=(),
        dense_learning_rate=self.dense_learning_rate or optimizer.dense_learning_rate,
        dense_learning_rates=(),
    )
    return dataclasses.replace(sweep_config, optimizer=optimizer)
