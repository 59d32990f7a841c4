"""The uninterrupted reference run that the kill tests compare with."""

import pytest

from fault_helpers import CONSTANT, loss_records, overrides


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
  """An uninterrupted 24-step constant-lr run checkpointing every 2 steps: its losses."""
  from lowrank_jax.train.config import load_config
  from lowrank_jax.train.loop import train

  run_dir = tmp_path_factory.mktemp("reference") / "run"
  train(load_config(overrides=overrides(run_dir, CONSTANT, "schedule.total_steps=24",
                                        "checkpoint.every=2")))
  return dict(loss_records(run_dir))
