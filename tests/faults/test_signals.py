"""SIGTERM while evaluating and while an async save is in flight: the in-flight save
completes, a final checkpoint is written, and the process exits 0 within a bounded time."""

import json
import signal
import time

from lowrank_jax.train import digests

from fault_helpers import (
    FOREVER,
    committed_steps,
    logged_steps,
    saves_in_flight,
    start_training,
    wait_until,
)

BOUND_S = 60


def test_sigterm_during_evaluation_and_a_save_checkpoints_and_exits_0(tmp_path):
  run_dir = tmp_path / "run"
  # Every step saves and then evaluates (20k validation tokens), so a save is in flight
  # while most of the wall time goes to evaluation.
  process = start_training(
      run_dir, FOREVER, "checkpoint.every=1", "eval.every=1", "data.validation_tokens=20000"
  )
  wait_until(process, lambda: logged_steps(run_dir) >= 3 and saves_in_flight(run_dir))
  in_flight = int(saves_in_flight(run_dir)[0].rsplit("/", 1)[1].split(".")[0])
  process.send_signal(signal.SIGTERM)
  sent = time.time()
  assert process.wait(timeout=BOUND_S) == 0, process.stdout.read().decode()[-3000:]
  assert time.time() - sent < BOUND_S
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["stopped_by"] == "SIGTERM"
  steps = committed_steps(run_dir)
  assert in_flight in steps and max(steps) == summary["steps"] >= in_flight
  assert not saves_in_flight(run_dir)
  assert all(digests.verify(run_dir / "checkpoints" / str(step)) for step in steps)
