"""kill -9 or SIGTERM at a (seeded) random step and kill -9 in the middle of an async save:
nothing partial is restored, and the resumed run logs exactly the records of an uninterrupted
one: loss, learning rate (a restart method's recovery, so the schedule's position shows),
events, gradient norm and tokens seen."""

import json
import random
import signal

import pytest

from lowrank_jax.train import digests
from lowrank_jax.train.config import load_config
from lowrank_jax.train.loop import train

from fault_helpers import (
    CONSTANT,
    FOREVER,
    committed_steps,
    logged_steps,
    overrides,
    saves_in_flight,
    start_training,
    wait_until,
)

# Restarts every 4 steps under a constant base rate: the logged rate recovers after each one,
# so a resume at the wrong point of the schedule (or with a fresh restart count) shows.
RUN = (
    CONSTANT,
    "checkpoint.every=2",
    "optimizer.method=low_rank_restarts",
    "model.linear.rank=4",
    "optimizer.reset_every=4",
    "optimizer.refactorize_every=4",
    "optimizer.recovery_steps=3",
)
KILL_AT = random.Random(22).sample(range(3, 13), 2)  # seeded: a failure can be replayed


def train_records(run_dir) -> list[dict]:
  """Every training line of ``metrics.jsonl``, without the wall-clock throughput."""
  with open(run_dir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records if "loss" in r]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict[int, dict], dict]:
  """The records and summary of an uninterrupted 24-step run."""
  run_dir = tmp_path_factory.mktemp("reference") / "run"
  summary = train(load_config(overrides=overrides(run_dir, *RUN, "schedule.total_steps=24")))
  records = {r["step"]: r for r in train_records(run_dir)}
  rates = [r["lr"] for r in records.values()]
  assert rates[1:7] == pytest.approx(
      [rates[0]] * 3 + [rates[0] * 1e-3, rates[0] * 0.5005, rates[0]]
  )
  return records, summary


def kill_and_resume(run_dir, reference, ready, sig=signal.SIGKILL) -> tuple[int, int, list[str]]:
  """Sends ``sig`` to a child once ``ready()``, resumes in-process; returns the newest
  checkpoint left by the child, the last step it logged and the saves it left unfinished."""
  reference, reference_summary = reference
  process = start_training(run_dir, *RUN, FOREVER)
  wait_until(process, ready)
  process.send_signal(sig)
  process.wait()
  newest = max(committed_steps(run_dir), default=0)
  unfinished, killed_at = saves_in_flight(run_dir), logged_steps(run_dir)
  assert killed_at < len(reference)
  # Each committed checkpoint is sealed within a step of its commit: all but the newest are.
  assert all(
      digests.is_sealed(run_dir / "checkpoints" / str(step))
      for step in committed_steps(run_dir)[:-1]
  )
  resumed = load_config(overrides=overrides(run_dir, *RUN, "schedule.total_steps=24"))
  summary = train(resumed, accept_changes=True)  # 24 steps instead of "forever"
  records = train_records(run_dir)
  for record in records:
    assert record == reference[record["step"]]  # bitwise, tokens_seen and lr included
  # Each step logged once: the lines logged after the newest checkpoint were cut on resume.
  assert [record["step"] for record in records] == sorted(reference)
  assert summary["tokens_seen"] == reference_summary["tokens_seen"]
  assert summary["val_loss"] == reference_summary["val_loss"]
  assert not saves_in_flight(run_dir)  # leftovers of the killed save are cleaned
  return newest, killed_at, unfinished


@pytest.mark.parametrize(
    "sig,kill_after", zip((signal.SIGKILL, signal.SIGTERM), KILL_AT), ids=("kill9", "sigterm")
)
def test_a_kill_at_a_random_step_resumes_every_record(tmp_path, reference, sig, kill_after):
  run_dir = tmp_path / "run"
  newest, stopped_at, _ = kill_and_resume(
      run_dir, reference, lambda: logged_steps(run_dir) >= kill_after, sig
  )
  assert stopped_at >= kill_after
  if sig == signal.SIGTERM:  # a clean stop checkpoints the step it stopped at
    assert newest == stopped_at


def test_kill9_during_an_async_save_never_restores_the_partial_one(tmp_path, reference):
  run_dir = tmp_path / "run"
  newest, _, unfinished = kill_and_resume(
      run_dir, reference, lambda: logged_steps(run_dir) >= 4 and saves_in_flight(run_dir)
  )
  assert unfinished, "the child was not killed while saving"
  partial_step = int(unfinished[0].rsplit("/", 1)[1].split(".")[0])
  assert newest < partial_step
