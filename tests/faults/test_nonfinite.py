"""NaN and Inf injected inside the jitted step: the update is skipped (state bitwise
unchanged, step counted and logged), and a streak stops the run with the last good state."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lowrank_jax.cli import main
from lowrank_jax.models import LlamaConfig
from lowrank_jax.train import mesh as mesh_lib
from lowrank_jax.train.config import MeshSection
from lowrank_jax.train.nonfinite import make_injector
from lowrank_jax.train.run import load_checkpoint
from lowrank_jax.train.state import init_train_state, model_graphdef
from lowrank_jax.train.step import make_train_step

from fault_helpers import overrides

CONFIG = LlamaConfig.preset(
    "nano", num_layers=1, hidden_size=16, intermediate_size=32, num_heads=2, vocab_size=32
)


def _nan_update_at(update: int) -> optax.GradientTransformation:
  """Turns the optimizer's ``update``-th (1-based) update into NaN: a finite gradient made
  non-finite by the optimizer, as a failed decomposition inside a refresh would."""

  def update_fn(updates, count, params=None):
    del params
    poison = jnp.where(count + 1 == update, jnp.nan, 0.0)
    return jax.tree.map(lambda u: u + poison, updates), count + 1

  return optax.GradientTransformation(lambda params: jnp.zeros([], jnp.int32), update_fn)


@pytest.mark.parametrize(
    "poison, tx, third_finite",
    [
        (dict(nan_loss_steps=(2,)), optax.adamw(1e-2), True),
        (dict(inf_grad_steps=(2,)), optax.adamw(1e-2), True),
        # the kept optimizer state makes the same update again: the third step fails too
        ({}, optax.chain(optax.adamw(1e-2), _nan_update_at(2)), False),
    ],
    ids=["nan_loss", "inf_grad", "nan_update"],
)
def test_a_poisoned_step_leaves_the_state_unchanged(poison, tx, third_finite):
  mesh = mesh_lib.make_mesh(MeshSection(data=1), jax.devices()[:1])
  step = jax.jit(make_train_step(model_graphdef(CONFIG), tx, inject=make_injector(**poison)))
  batch = {"input_ids": jnp.arange(24).reshape(2, 12) % 32, "loss_mask": jnp.ones((2, 12))}
  first, metrics_1 = step(init_train_state(CONFIG, tx, mesh, seed=0), batch)
  second, metrics_2 = step(first, batch)
  third, metrics_3 = step(second, batch)
  assert [bool(m["finite"]) for m in (metrics_1, metrics_2, metrics_3)] == [
      True,
      False,
      third_finite,
  ]
  assert int(second.step) == 2  # the batch is consumed
  chex.assert_trees_all_equal((second.params, second.opt_state), (first.params, first.opt_state))
  moved = any(
      not np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(third.params), jax.tree.leaves(second.params))
  )
  assert moved == third_finite


def test_a_streak_of_bad_steps_stops_with_the_last_good_state(tmp_path, capsys):
  run_dir = tmp_path / "run"
  status = main(
      [
          "train",
          *overrides(
              run_dir,
              "faults.nan_loss_steps=[2]",
              "faults.inf_grad_steps=[4, 5, 6, 7, 8]",
              "faults.max_bad_steps=3",
              "schedule.total_steps=10",
              "checkpoint.every=2",
              "checkpoint.keep=5",
          ),
      ]
  )
  err = capsys.readouterr().err
  assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
  assert "steps 4-6 were non-finite (3 in a row, the limit faults.max_bad_steps=3)" in err
  assert "checkpoint step 7" in err
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if r["skipped_steps"]] == [2, 4, 5, 6, 7]
  summary = json.loads((run_dir / "summary.json").read_text())
  # Step 7 ran before step 6's flag ended the streak: five updates were skipped in all.
  assert summary["stopped_by"] == "non-finite" and summary["skipped_steps"] == 5
  states = {step: load_checkpoint(str(run_dir), step)[1] for step in (2, 4, 6, 7)}
  good = (states[4].params, states[4].opt_state)  # after step 3, the last finite one
  for step in (6, 7):
    chex.assert_trees_all_equal((states[step].params, states[step].opt_state), good)
  assert int(states[7].step) == 7
  with pytest.raises(AssertionError):
    chex.assert_trees_all_equal(states[2].params, states[4].params)


def test_the_summary_counts_the_skipped_steps_of_every_session(tmp_path):
  run_dir = tmp_path / "run"
  first = overrides(run_dir, "faults.nan_loss_steps=[2]", "schedule.total_steps=4")
  assert main(["train", *first]) == 0
  later = overrides(run_dir, "faults.nan_loss_steps=[5]", "schedule.total_steps=6")
  assert main(["train", "--accept-changes", *later]) == 0
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["steps"] == 6 and summary["skipped_steps"] == 2
