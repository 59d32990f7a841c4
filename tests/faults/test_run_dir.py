"""A run directory through the command: another config is refused before any checkpoint is
opened and nothing changes; changes that may change mid-run only with ``--accept-changes``
(recorded); a resumed run's records continue exactly; a finished run is left as it is."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from lowrank_jax.train.config import load_config
from lowrank_jax.train.loop import train
from lowrank_jax.train.methods import METHODS
from lowrank_jax.train.run_dir import RunDir

from fault_helpers import file_hashes, file_states, loss_records, overrides

STEPS_3 = "schedule.total_steps=3"


def command(*argv: str) -> subprocess.CompletedProcess:
  """``python -m lowrank_jax ARGV`` in a child process, its output captured as text."""
  return subprocess.run(
      [sys.executable, "-m", "lowrank_jax", *argv], capture_output=True, text=True, timeout=600
  )


def one_error_line(result: subprocess.CompletedProcess) -> str:
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
  return result.stderr


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished 3-step AdamW run (checkpoint 3), trained by the command."""
  run_dir = tmp_path_factory.mktemp("finished") / "run"
  result = command("train", *overrides(run_dir, STEPS_3))
  assert result.returncode == 0, result.stderr[-3000:]
  return run_dir


@pytest.fixture
def run_dir(finished, tmp_path):
  """A copy of the finished run."""
  return shutil.copytree(finished, tmp_path / "run")


def test_another_method_is_refused_naming_the_keys_and_no_checkpoint_moves(run_dir):
  before = file_hashes(run_dir)
  method = ["optimizer.method=galore", "optimizer.options.rank=8"]
  error = one_error_line(command("train", *overrides(run_dir, STEPS_3, *method)))
  assert "optimizer.method (adamw -> galore), optimizer.options.rank (unset -> 8)" in error
  assert file_hashes(run_dir) == before


def test_a_method_switch_alone_is_refused_and_nothing_moves(run_dir):
  """``adamw`` to ``full_rank`` trains the same parameters with the same options: the method
  is the only key that differs, and it is refused all the same."""
  before = file_states(run_dir)
  error = one_error_line(
      command("train", *overrides(run_dir, STEPS_3, "optimizer.method=full_rank"))
  )
  assert "another optimizer.method (adamw -> full_rank); choose a new run_dir" in error
  assert file_states(run_dir) == before


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"adamw"}))
def test_any_method_change_of_a_finished_run_is_refused_and_nothing_moves(run_dir, method):
  """In this process, each method in place of the finished run's AdamW (a factorized one with
  the rank it needs): refused before any checkpoint is opened."""
  rank = ["model.linear.rank=4"] if METHODS[method].linear_kind != "dense" else []
  config = load_config(overrides=overrides(run_dir, STEPS_3, f"optimizer.method={method}", *rank))
  before = file_states(run_dir)
  with pytest.raises(ValueError, match=rf"optimizer.method \(adamw -> {method}\).*new run_dir"):
    train(config)
  assert file_states(run_dir) == before


def test_a_sound_checkpoint_of_another_state_is_refused_not_moved_aside(run_dir):
  """config.yaml of an unfinished run edited by hand to GaLore: the configs agree,
  checkpoint 3 holds AdamW's state; it is intact, so it stays where it is."""
  (run_dir / "summary.json").unlink()
  config = yaml.safe_load((run_dir / "config.yaml").read_text())
  config["optimizer"].update(method="galore", options={"rank": 8})
  (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
  before = file_hashes(run_dir)
  method = ["optimizer.method=galore", "optimizer.options.rank=8"]
  error = one_error_line(command("train", *overrides(run_dir, STEPS_3, *method)))
  assert "checkpoint step 3" in error and "holds another train state" in error
  assert file_hashes(run_dir) == before
  assert not (run_dir / "unreadable_checkpoints").exists()


def test_changes_are_refused_unless_they_may_change_mid_run_and_are_accepted(run_dir):
  before = file_hashes(run_dir)
  error = one_error_line(command("train", *overrides(run_dir, "schedule.total_steps=6")))
  assert "schedule.total_steps (3 -> 6); pass --accept-changes" in error
  learning_rate = overrides(run_dir, "schedule.total_steps=6", "optimizer.learning_rate=0.01")
  error = one_error_line(command("train", "--accept-changes", *learning_rate))
  assert "optimizer.learning_rate (0.003 -> 0.01)" in error
  dense = load_config(overrides=overrides(run_dir, STEPS_3, "optimizer.dense_learning_rate=0.01"))
  with pytest.raises(ValueError, match=r"another optimizer.dense_learning_rate \(None -> 0.01\)"):
    RunDir(str(run_dir)).changes(dense, accept_changes=True)
  assert file_hashes(run_dir) == before


def test_a_finished_run_says_so_and_changes_nothing(run_dir):
  before = file_hashes(run_dir)
  result = command("train", *overrides(run_dir, STEPS_3))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "has finished its 3 steps; nothing to do" in result.stdout
  assert file_hashes(run_dir) == before


def test_more_steps_continue_the_records_exactly_and_are_recorded(run_dir):
  first = json.loads((run_dir / "summary.json").read_text())
  # Lines a killed session logged after its checkpoint 3: the resumed run logs them again.
  with open(run_dir / "metrics.jsonl", "a") as f:
    f.writelines(json.dumps({"step": s, "loss": 99.0}) + "\n" for s in (4, 5))
  result = command("train", "--accept-changes", *overrides(run_dir, "schedule.total_steps=6"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert [step for step, _ in loss_records(run_dir)] == [1, 2, 3, 4, 5, 6]
  assert 99.0 not in dict(loss_records(run_dir)).values()
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["steps"] == 6 and summary["tokens_seen"] == 2 * first["tokens_seen"]
  earlier = summary["wall_time_s"] - summary["session_wall_time_s"]
  assert 0.5 * first["wall_time_s"] < earlier <= first["wall_time_s"]  # up to the final eval
  assert yaml.safe_load((run_dir / "config.yaml").read_text())["schedule"]["total_steps"] == 6
  (record,) = map(json.loads, (run_dir / "config_history.jsonl").read_text().splitlines())
  assert record["step"] == 3  # the cosine keeps its horizon: the rate goes on continuously
  assert record["changes"] == {"schedule.decay_steps": [None, 3], "schedule.total_steps": [3, 6]}


def test_an_option_set_to_its_default_is_no_change(tmp_path):
  """The comparison is of the runs, not of their spelling: GaLore's rank left unset is 128."""
  run_dir = RunDir(str(tmp_path / "run"))
  run_dir.start(load_config(overrides=started_with(run_dir)), [], step=0)
  same = load_config(overrides=[*started_with(run_dir), "optimizer.options.rank=128"])
  assert run_dir.changes(same) == []
  other = load_config(overrides=[*started_with(run_dir), "optimizer.options.rank=64"])
  with pytest.raises(ValueError, match=r"optimizer.options.rank \(128 -> 64\); choose a new"):
    run_dir.changes(other)


def started_with(run_dir: RunDir) -> list[str]:
  return ["optimizer.method=galore", f"run_dir={run_dir.path}"]
