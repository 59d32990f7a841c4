"""kill -9 at a random step and in the middle of an async save: nothing partial is restored,
and the resumed run logs exactly the losses of an uninterrupted one."""

import random

import pytest

from lowrank_jax.train import digests
from lowrank_jax.train.config import load_config
from lowrank_jax.train.loop import train

from fault_helpers import (
    CONSTANT,
    FOREVER,
    committed_steps,
    logged_steps,
    loss_records,
    overrides,
    saves_in_flight,
    start_training,
    wait_until,
)

EVERY_2 = "checkpoint.every=2"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, float]:
  """The losses of an uninterrupted 24-step constant-lr run checkpointing every 2 steps."""
  run_dir = tmp_path_factory.mktemp("reference") / "run"
  train(load_config(overrides=overrides(run_dir, CONSTANT, "schedule.total_steps=24", EVERY_2)))
  return dict(loss_records(run_dir))


def kill_and_resume(run_dir, reference, ready) -> tuple[int, list[str]]:
  """SIGKILLs a child once ``ready()``, resumes in-process; returns the newest checkpoint
  left by the child and the saves it left unfinished."""
  process = start_training(run_dir, CONSTANT, FOREVER, EVERY_2)
  wait_until(process, ready)
  process.kill()
  process.wait()
  newest = max(committed_steps(run_dir), default=0)
  unfinished, killed_at = saves_in_flight(run_dir), logged_steps(run_dir)
  assert killed_at < len(reference)
  # Each committed checkpoint is sealed within a step of its commit: all but the newest are.
  assert all(
      digests.is_sealed(run_dir / "checkpoints" / str(step))
      for step in committed_steps(run_dir)[:-1]
  )
  resumed = load_config(overrides=overrides(run_dir, CONSTANT, "schedule.total_steps=24", EVERY_2))
  train(resumed, accept_changes=True)  # 24 steps instead of "forever"
  records = loss_records(run_dir)
  assert all(loss == reference[step] for step, loss in records)  # bitwise
  # Each step logged once: the lines logged after the newest checkpoint were cut on resume.
  assert [step for step, _ in records] == sorted(reference)
  assert not saves_in_flight(run_dir)  # leftovers of the killed save are cleaned
  return newest, unfinished


def test_kill9_at_a_random_step_resumes_from_the_last_checkpoint(tmp_path, reference):
  kill_after = random.randint(3, 12)
  run_dir = tmp_path / "run"
  kill_and_resume(run_dir, reference, lambda: logged_steps(run_dir) >= kill_after)


def test_kill9_during_an_async_save_never_restores_the_partial_one(tmp_path, reference):
  run_dir = tmp_path / "run"
  newest, unfinished = kill_and_resume(
      run_dir, reference, lambda: logged_steps(run_dir) >= 4 and saves_in_flight(run_dir)
  )
  assert unfinished, "the child was not killed while saving"
  partial_step = int(unfinished[0].rsplit("/", 1)[1].split(".")[0])
  assert newest < partial_step
