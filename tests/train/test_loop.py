"""The loop end to end: resume exactness, run-dir safety, SIGTERM, the CLI."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from lowrank_jax.cli import main
from lowrank_jax.train.config import load_config
from lowrank_jax.train.loop import train
from lowrank_jax.train.metrics import read_metrics

WALL_CLOCK_KEYS = ("tokens_per_s",)  # the one part of a record a rerun does not repeat


def logged_records(run_dir) -> list[dict]:
  """Every line of ``metrics.jsonl`` (training and validation), without its wall-clock
  measures: what a resumed run must log bitwise as the uninterrupted one did."""
  return [
      {key: value for key, value in record.items() if key not in WALL_CLOCK_KEYS}
      for record in read_metrics(os.path.join(run_dir, "metrics.jsonl"))
  ]


# ReLoRA with its adapters' input dropout: the masks of a step are keyed by the step
RELORA_DROPOUT = ["optimizer.method=relora", "optimizer.reset_every=2", "model.linear.rank=4"]
RELORA_DROPOUT += ["optimizer.options.restart_warmup_steps=1", "model.linear.dropout=0.1"]


@pytest.mark.parametrize("method", [[], RELORA_DROPOUT], ids=["full_rank", "relora_dropout"])
def test_a_resumed_run_gives_the_uninterrupted_losses_bitwise(tiny, tmp_path, method):
  straight = tmp_path / "straight"
  summary = train(load_config(overrides=tiny(*method, run_dir=straight)))
  assert summary["steps"] == 6
  final = read_metrics(os.path.join(straight, "metrics.jsonl"))[-1]
  assert final["step"] == 6 and final["val_loss"] == summary["val_loss"]
  assert summary["val_ppl"] == pytest.approx(math.exp(summary["val_loss"]))
  assert summary["val_ppl"] < 384  # a uniform guess over the vocabulary; 6 steps beat it
  assert (straight / "loss_curve.png").exists() and (straight / "summary.json").exists()

  resumed = tmp_path / "resumed"
  train(
      load_config(
          overrides=tiny(*method, "schedule.total_steps=6", "checkpoint.every=3", run_dir=resumed)
      )
  )
  # Pretend the run died after step 3: keep only that checkpoint and its metrics.
  for step in ("6",):
    subprocess.run(["rm", "-rf", str(resumed / "checkpoints" / step)], check=True)
  lines = (resumed / "metrics.jsonl").read_text().splitlines()[:3]
  (resumed / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  train(load_config(overrides=tiny(*method, run_dir=resumed)))
  # bitwise, every key: loss, grad_norm, lr, tokens_seen, skipped_steps, val_*
  assert logged_records(resumed) == logged_records(straight)


def test_an_existing_run_dir_of_another_model_is_refused_and_kept(tiny, tmp_path):
  run_dir = tmp_path / "run"
  train(load_config(overrides=tiny("schedule.total_steps=2", run_dir=run_dir)))
  before = (run_dir / "config.yaml").read_text()
  with pytest.raises(ValueError, match=r"another model.overrides.num_layers \(1 -> 2\)"):
    train(load_config(overrides=tiny("model.overrides.num_layers=2", run_dir=run_dir)))
  assert (run_dir / "config.yaml").read_text() == before
  assert sorted(os.listdir(run_dir / "checkpoints")) == ["2"]


def test_cli_errors_are_one_line_with_status_2(tiny, tmp_path, capsys):
  run_dir = tmp_path / "never"
  assert main(["train", *tiny("optimizer.method=sgdx", run_dir=run_dir)]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("lowrank-jax: error:") and "sgdx" in err and "\n" not in err
  assert not run_dir.exists()  # nothing written
  assert main(["eval", "--checkpoint", str(tmp_path / "missing")]) == 2


def test_cli_eval_and_export_read_a_finished_run(tiny, tmp_path, capsys):
  run_dir = tmp_path / "run"
  assert main(["train", *tiny("schedule.total_steps=3", run_dir=run_dir)]) == 0
  capsys.readouterr()
  assert main(["eval", "--checkpoint", str(run_dir)]) == 0
  result = json.loads(capsys.readouterr().out)
  summary = json.loads((run_dir / "summary.json").read_text())
  assert result["step"] == 3 and result["val_loss"] == pytest.approx(summary["val_loss"], 1e-6)
  assert main(["export", "--checkpoint", str(run_dir), "--out", str(tmp_path / "hf")]) == 0
  assert {"config.json", "model.safetensors"} <= set(os.listdir(tmp_path / "hf"))
  assert main(["export", "--checkpoint", str(run_dir), "--out", str(tmp_path / "hf")]) == 2


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tiny, tmp_path):
  run_dir = tmp_path / "run"
  args = tiny("schedule.total_steps=100000", "checkpoint.every=0", run_dir=run_dir)
  process = subprocess.Popen(
      [sys.executable, "-m", "lowrank_jax", "train", *args],
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
  )
  metrics = run_dir / "metrics.jsonl"
  deadline = time.time() + 240
  while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
    assert process.poll() is None and time.time() < deadline, process.stdout.read().decode()
    time.sleep(0.5)
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=120) == 0
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["stopped_by"] == "SIGTERM" and 3 <= summary["steps"] < 100000
  assert os.listdir(run_dir / "checkpoints") == [str(summary["steps"])]


def _events(path):
  from tensorboardX.proto.event_pb2 import Event

  from lowrank_jax.data.sources.tfrecord import read_frames

  with open(path, "rb") as f:
    return [Event.FromString(data) for data, _ in read_frames(f, str(path))]


def test_a_resumed_run_tells_tensorboard_to_drop_the_steps_it_logs_again(tiny, tmp_path):
  run_dir = tmp_path / "run"
  config = load_config(overrides=tiny("logging.tensorboard=true", run_dir=run_dir))
  train(config)
  subprocess.run(["rm", "-rf", str(run_dir / "checkpoints" / "6")], check=True)
  time.sleep(1.1)  # event files are named by the second they were opened
  train(config)
  first, resumed = sorted((run_dir / "tensorboard").iterdir())
  steps = sorted({e.step for e in _events(first) if e.HasField("summary")})
  assert steps == [1, 2, 3, 4, 5, 6]
  starts = [e for e in _events(resumed) if e.HasField("session_log")]
  assert [(e.step, e.session_log.status) for e in starts][:1] == [(4, starts[0].session_log.START)]
  assert min(e.step for e in _events(resumed) if e.HasField("summary")) == 4
