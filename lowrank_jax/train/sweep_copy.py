"""A copy of a learning-rate sweep, ``SWEEP_DIR/lr<rate>``, read as the run at its rate.

A sweep (:mod:`lowrank_jax.train.sweep`) keeps one checkpoint of all its copies in its own
run directory and each copy's records in ``lr<rate>/``. ``lowrank-jax eval`` and ``export``
name a copy by that directory: its config is the sweep's with ``optimizer.learning_rate`` the
copy's (and no ``learning_rates``), its state its part of the sweep's checkpoint.

>>> SweepCopy.at("/nonexistent/sweep/lr0.01") is None
True
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from lowrank_jax.train.config import TrainConfig
from lowrank_jax.train.run_dir import RunDir
from lowrank_jax.train.sweep import copy_dir_name


@dataclasses.dataclass(frozen=True)
class SweepCopy:
  """The copy at ``learning_rate`` of the sweep in ``sweep_dir``."""

  sweep_dir: str
  learning_rate: float

  @classmethod
  def at(cls, path: str) -> SweepCopy | None:
    """The copy whose directory ``path`` is (its parent holds a sweep with a rate of that
    name), else ``None``."""
    parent = RunDir(os.path.dirname(os.path.normpath(path)))
    if os.path.exists(RunDir(path).config) or not parent.holds_run():
      return None
    rates = parent.saved_config().optimizer.learning_rates
    named = [rate for rate in rates if copy_dir_name(rate) == os.path.basename(path.rstrip("/"))]
    return cls(parent.path, named[0]) if named else None

  def config(self, sweep_config: TrainConfig) -> TrainConfig:
    """The sweep's config as the run of this copy alone."""
    optimizer = dataclasses.replace(
        sweep_config.optimizer, learning_rate=self.learning_rate, learning_rates=()
    )
    return dataclasses.replace(sweep_config, optimizer=optimizer)

  def index(self, peaks: Sequence[float]) -> int:
    """This copy's place on the sweep axis of a sweep with ``peaks``."""
    return list(peaks).index(self.learning_rate)
