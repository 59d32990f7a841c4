"""A tiny run that trains in seconds, for the trainer tests."""

import pytest
from tiny_run import TINY


@pytest.fixture
def tiny(tmp_path):
  """Overrides for a tiny run in a fresh ``run_dir``; extra overrides come last."""

  def overrides(*extra, run_dir=None):
    return TINY + [f"run_dir={run_dir or tmp_path / 'run'}", *extra]

  return overrides
