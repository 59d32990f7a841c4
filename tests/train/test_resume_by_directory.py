"""A run named by its directory: ``train run_dir=X`` continues X with the config it holds, an
extended run's rate goes on continuously, a sweep's copies are runs (eval, export, continue),
and eval scores other data."""

import inspect
import json
import shutil

import numpy as np
import pytest
import yaml

from lowrank_jax.cli import main
from lowrank_jax.models import LinearConfig
from lowrank_jax.train.methods import METHODS
from lowrank_jax.train.schedule import make_schedule
from lowrank_jax.train.run_dir import RunDir

from reference_packages import require
from tiny_run import TINY

GALORE = ["optimizer.method=galore", "optimizer.options.rank=8"]
RATES = (0.003, 0.01)


def records(run_dir, key: str) -> dict[int, float]:
  with open(run_dir / "metrics.jsonl") as f:
    return {r["step"]: r[key] for r in map(json.loads, f) if key in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A 3-step GaLore run, and a 3-step sweep over RATES of the same run."""
  root = tmp_path_factory.mktemp("runs")
  steps = "schedule.total_steps=3"
  assert main(["train", *TINY, steps, *GALORE, f"run_dir={root / 'run'}"]) == 0
  sweep = f"optimizer.learning_rates=[{RATES[0]},{RATES[1]}]"
  assert main(["train", *TINY, steps, *GALORE, sweep, f"run_dir={root / 'sweep'}"]) == 0
  return root


def test_a_run_continues_by_its_directory_alone_flags_anywhere_its_rate_continuous(
    runs, tmp_path, capsys
):
  run_dir = shutil.copytree(runs / "run", tmp_path / "run")
  before = records(run_dir, "lr")
  started = RunDir(str(run_dir)).saved_config()
  end_of_cosine = float(make_schedule(started.optimizer.learning_rate, started.schedule)(3))
  capsys.readouterr()
  argv = ["train", f"run_dir={run_dir}", "schedule.total_steps=6", "--accept-changes"]
  assert main(argv) == 0
  out = capsys.readouterr().out
  config = yaml.safe_load((run_dir / "config.yaml").read_text())
  assert config["optimizer"]["method"] == "galore" and config["optimizer"]["options"]["rank"] == 8
  assert "the schedule keeps its horizon of 3 steps (schedule.decay_steps)" in out
  assert "warning: optimizer.options.update_proj_gap=200 (the method's default) exceeds" in out
  rates = records(run_dir, "lr")
  assert {step: rates[step] for step in before} == before
  # Update 4 applies the cosine's value at count 3, its end, and the rate stays there.
  np.testing.assert_allclose([rates[4], rates[5], rates[6]], end_of_cosine, rtol=1e-6)
  assert rates[3] > rates[4]
  (record,) = map(json.loads, (run_dir / "config_history.jsonl").read_text().splitlines())
  assert record["changes"] == {"schedule.decay_steps": [None, 3], "schedule.total_steps": [3, 6]}


def test_a_sweeps_copy_evaluates_exports_and_continues_as_the_run_at_its_rate(
    runs, tmp_path, capsys
):
  sweep = shutil.copytree(runs / "sweep", tmp_path / "sweep")
  assert (sweep / "loss_curve.png").stat().st_size > 0  # every copy's loss, one plot
  copy = sweep / f"lr{RATES[1]:g}"
  capsys.readouterr()
  assert main(["eval", "--checkpoint", str(copy)]) == 0
  scored = json.loads(capsys.readouterr().out)
  summary = json.loads((copy / "summary.json").read_text())
  assert scored["step"] == 3 and scored["val_loss"] == pytest.approx(summary["val_loss"], 1e-6)
  assert main(["export", "--checkpoint", str(copy), "--out", str(tmp_path / "hf")]) == 0
  assert (tmp_path / "hf" / "model.safetensors").exists()

  # The copy continued by its directory, and the run at its rate extended the same way.
  alone = tmp_path / "alone"
  rate = f"optimizer.learning_rate={RATES[1]}"
  assert main(["train", *TINY, "schedule.total_steps=3", *GALORE, rate, f"run_dir={alone}"]) == 0
  for run_dir in (copy, alone):
    assert main(["train", "--accept-changes", f"run_dir={run_dir}", "schedule.total_steps=5"]) == 0
  copy_losses, alone_losses = records(copy, "loss"), records(alone, "loss")
  assert sorted(copy_losses) == [1, 2, 3, 4, 5]
  np.testing.assert_allclose(
      [copy_losses[s] for s in range(1, 6)], [alone_losses[s] for s in range(1, 6)], rtol=2e-5
  )
  assert yaml.safe_load((copy / "config.yaml").read_text())["optimizer"]["learning_rates"] == []


def test_eval_scores_other_data_given_as_overrides(runs, capsys):
  capsys.readouterr()
  assert main(["eval", "--checkpoint", str(runs / "run")]) == 0
  own = json.loads(capsys.readouterr().out)
  assert main(["eval", "data.validation_tokens=500", "--checkpoint", str(runs / "run")]) == 0
  fewer = json.loads(capsys.readouterr().out)
  assert fewer["val_tokens"] <= 500 < own["val_tokens"]
  assert fewer["val_loss"] != own["val_loss"]


def test_print_config_lists_the_fields_of_a_model_side_methods_linear(capsys):
  assert main(["train", "--print-config", "optimizer.method=sltrain", "model.linear.rank=8"]) == 0
  linear = yaml.safe_load(capsys.readouterr().out)["model"]["linear"]
  defaults = LinearConfig()
  assert linear == {
      "kind": "sltrain",
      "rank": 8,
      "alpha": defaults.alpha,
      "sparsity": defaults.sparsity,
  }


def test_galores_eps_is_the_references_in_the_cli_and_the_library(capsys):
  torch_galore = require("galore_torch")
  reference = inspect.signature(torch_galore.GaLoreAdamW).parameters["eps"].default
  library = inspect.signature(METHODS["galore"].factory).parameters["eps"].default
  assert main(["train", "--print-config", "optimizer.method=galore"]) == 0
  assert yaml.safe_load(capsys.readouterr().out)["optimizer"]["eps"] == library == reference
