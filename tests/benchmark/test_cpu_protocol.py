"""The CPU protocol grid holds the protocol it documents: matrices that matter, enough tokens,
the paper's period ratios and schedule, three seeds for the findings' methods."""

import math
import os

import jax
import pytest
from flax import nnx

from lowrank_jax.benchmark import Grid
from lowrank_jax.models import LlamaConfig, abstract_model
from lowrank_jax.train.methods import target_mask

GRID = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "grids")
FINDINGS_METHODS = {
    "full_rank",
    "galore",
    "fira",
    "apollo",
    "low_rank",
    "low_rank_restarts",
    "sltrain",
    "sltrain_restarts",
}


@pytest.fixture(scope="module")
def grid():
  grid = Grid.load(os.path.join(GRID, "cpu_protocol.yaml"))
  grid.check()
  return grid


def _config(grid, method):
  return grid.sweep_cells()[[c.method for c in grid.sweep_cells()].index(method)].config()


def test_the_seven_target_linears_hold_at_least_70_percent_of_the_micro_parameters():
  params = nnx.state(abstract_model(LlamaConfig.preset("micro")), nnx.Param)
  sizes = jax.tree.map(lambda leaf: math.prod(leaf.shape), params)
  total = sum(jax.tree.leaves(sizes))
  target = sum(
      size
      for size, is_target in zip(jax.tree.leaves(sizes), jax.tree.leaves(target_mask(params)))
      if is_target
  )
  assert target / total >= 0.70
  assert LlamaConfig.preset("micro").vocab_size in range(1000, 2049)


def test_every_method_sees_at_least_2_5_tokens_per_parameter_of_packed_rows(grid):
  config = _config(grid, "full_rank")
  params = sum(
      math.prod(leaf.shape)
      for leaf in jax.tree.leaves(nnx.state(abstract_model(config.model_config()), nnx.Param))
  )
  assert config.data.mode == "packed" and config.data.vocab_size == config.model_config().vocab_size
  predicted = (
      config.schedule.total_steps * config.data.global_batch_size * (config.data.seq_len - 1)
  )
  assert predicted >= 2.5 * params
  steps = {_config(grid, m).schedule.total_steps for m in grid.methods}
  assert steps == {config.schedule.total_steps}  # the same budget for every method


def test_periods_keep_the_paper_ratios_and_the_schedule_is_the_papers(grid):
  for method in grid.methods:
    config = _config(grid, method)
    schedule, optimizer = config.schedule, config.optimizer_section()
    assert (schedule.warmup_ratio, schedule.min_lr_ratio, schedule.kind) == (0.1, 0.1, "cosine")
    steps = schedule.total_steps
    if method.endswith("_restarts"):
      assert optimizer.refactorize_every == optimizer.reset_every
      assert optimizer.recovery_steps / optimizer.reset_every == 0.05  # the paper's 10 / 200
      assert steps / optimizer.reset_every == 10_000 / 200  # the paper's 60m restarts a run
    gap = getattr(optimizer.options, "update_proj_gap", None)
    assert (gap is not None) == (method in ("galore", "fira", "apollo", "apollo_mini", "golore"))
    if gap is not None:
      assert steps / gap == 10_000 / 200


def test_the_findings_methods_get_three_seeds_and_the_others_one(grid):
  assert set(grid.methods) >= FINDINGS_METHODS and len(grid.methods) == 16
  for method in grid.methods:
    assert len(grid.seeds_of(method)) == (3 if method in FINDINGS_METHODS else 1)
    rates = grid.rates(method)
    assert len(rates) >= 3 and all(b / a <= 2 for a, b in zip(rates, rates[1:]))


def test_the_period_follow_up_matches_batch_4x_in_tokens_and_differs_only_in_the_batch():
  def restarts_of(grid_file):
    grid = Grid.load(os.path.join(GRID, "budget", grid_file))
    grid.check()
    config = _config(grid, "low_rank_restarts")
    rows, steps = config.data.global_batch_size, config.schedule.total_steps
    optimizer = config.optimizer
    return {
        "rows between restarts": rows * optimizer.reset_every,
        "rows between refactorizations": rows * optimizer.refactorize_every,
        "rows of recovery": rows * optimizer.recovery_steps,
        "restarts": steps // optimizer.reset_every,
        "rows": rows * steps,
        "learning rate": config.optimizer.learning_rate,
    }, rows

  follow_up, follow_up_batch = restarts_of("steps_4x_period160.yaml")
  batch_4x, batch_4x_batch = restarts_of("batch_4x.yaml")
  assert follow_up == batch_4x
  assert (follow_up_batch, batch_4x_batch) == (10, 40)
