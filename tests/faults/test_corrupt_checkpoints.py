"""Damaged checkpoints (bytes flipped, truncated, a file removed, sealed or not): a one-line
error names the step and the next older readable one; the restore changes no file; training
resumes from the older one, moving (not deleting) the damaged one aside."""

import os
import shutil

import pytest

from lowrank_jax.cli import main
from lowrank_jax.train import digests
from lowrank_jax.train.checkpoint import UnreadableCheckpoint
from lowrank_jax.train.config import load_config
from lowrank_jax.train.loop import train
from lowrank_jax.train.run import load_checkpoint

from fault_helpers import file_hashes, loss_records, overrides


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A 6-step run with checkpoints 3 and 6."""
  run_dir = tmp_path_factory.mktemp("finished") / "run"
  train(load_config(overrides=overrides(run_dir)))
  return run_dir


def largest_file(step_dir) -> str:
  files = [os.path.join(root, n) for root, _, names in os.walk(step_dir) for n in names]
  return max(files, key=os.path.getsize)


def flip_bytes(step_dir):
  path = largest_file(step_dir)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    chunk = f.read(16)
    f.seek(-len(chunk), os.SEEK_CUR)
    f.write(bytes(b ^ 0xFF for b in chunk))


def truncate(step_dir):
  path = largest_file(step_dir)
  os.truncate(path, os.path.getsize(path) // 2)


def remove_a_file(step_dir):
  os.remove(largest_file(step_dir))


def remove_a_file_of_an_unsealed_checkpoint(step_dir):
  os.remove(os.path.join(step_dir, digests.DIGESTS))  # only orbax can tell now
  os.remove(os.path.join(step_dir, "state", "_METADATA"))


DAMAGES = [flip_bytes, truncate, remove_a_file, remove_a_file_of_an_unsealed_checkpoint]


@pytest.fixture(params=DAMAGES, ids=lambda d: d.__name__)
def damaged(request, finished, tmp_path):
  """A copy of the finished run whose checkpoint 6 is damaged."""
  run_dir = tmp_path / "run"
  shutil.copytree(finished, run_dir)
  request.param(run_dir / "checkpoints" / "6")
  return run_dir


def test_reading_a_damaged_checkpoint_names_it_offers_the_older_one_and_changes_nothing(
    damaged, capsys
):
  before = file_hashes(damaged)
  with pytest.raises(
      UnreadableCheckpoint,
      match=r"checkpoint step 6 \(.*6\) is unreadable: "
      r".*; pass --step 3 for the newest readable older one",
  ) as error:
    load_checkpoint(str(damaged))
  assert error.value.step == 6 and "\n" not in str(error.value)
  assert main(["eval", "--checkpoint", str(damaged)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "step 6" in err and "--step 3" in err
  assert main(["eval", "--checkpoint", str(damaged), "--step", "3"]) == 0
  assert file_hashes(damaged) == before  # nothing deleted, moved or rewritten


def test_training_resumes_from_the_older_checkpoint_and_keeps_the_damaged_one(damaged, finished):
  damaged_bytes = file_hashes(damaged / "checkpoints" / "6")
  (damaged / "summary.json").unlink()  # the run has not finished: it died after saving 6
  train(load_config(overrides=overrides(damaged)))
  assert loss_records(damaged) == loss_records(finished)  # steps 4-6 again, bitwise, once
  assert file_hashes(damaged / "unreadable_checkpoints" / "6") == damaged_bytes
  assert sorted(os.listdir(damaged / "checkpoints")) == ["3", "6"]
  assert digests.verify(damaged / "checkpoints" / "6")  # the new step 6 is sealed and sound


def test_a_step_damaged_twice_keeps_both_copies_side_by_side(finished, tmp_path):
  run_dir = tmp_path / "run"
  shutil.copytree(finished, run_dir)
  (run_dir / "summary.json").unlink()  # the run has not finished: it died after saving 6
  damaged = []
  for _ in range(2):
    flip_bytes(run_dir / "checkpoints" / "6")
    damaged.append(file_hashes(run_dir / "checkpoints" / "6"))
    train(load_config(overrides=overrides(run_dir)))
    (run_dir / "summary.json").unlink()
  aside = run_dir / "unreadable_checkpoints"
  assert sorted(os.listdir(aside)) == ["6", "6-2"]  # not 6/6
  assert [file_hashes(aside / "6"), file_hashes(aside / "6-2")] == damaged
