"""A checkpoint that cannot be written: a one-line error naming the step, exit status 1, and
the previous checkpoint intact and restorable. A full disk is a real write error: the
file-size limit of the process (``RLIMIT_FSIZE``) stands in for it without root; an
unwritable directory is a checkpoint directory that is a file (root ignores permissions)."""

import contextlib
import resource
import signal

from lowrank_jax.cli import main
from lowrank_jax.train import digests
from lowrank_jax.train.run import load_checkpoint

from fault_helpers import committed_steps, file_hashes, overrides


@contextlib.contextmanager
def file_size_limit(limit_bytes: int):
  """Writes past ``limit_bytes`` fail with EFBIG (SIGXFSZ ignored), as on a full disk."""
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, handler)


def test_a_failed_save_names_the_step_and_keeps_the_previous_checkpoint(tmp_path, capsys):
  run_dir = tmp_path / "run"
  assert main(["train", *overrides(run_dir, "schedule.total_steps=2", "checkpoint.every=2")]) == 0
  before = file_hashes(run_dir / "checkpoints" / "2")
  capsys.readouterr()
  with file_size_limit(64_000):  # the state file of a checkpoint is ~300 kB
    status = main(
        [
            "train",
            "--accept-changes",
            *overrides(run_dir, "schedule.total_steps=4", "checkpoint.every=2"),
        ]
    )
  err = capsys.readouterr().err
  assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
  assert (
      "could not save checkpoint step 4" in err
      and "the newest complete checkpoint, step 2, is intact" in err
  )
  assert "File too large (errno 27)" in err
  assert committed_steps(run_dir) == [2]
  assert file_hashes(run_dir / "checkpoints" / "2") == before
  assert digests.verify(run_dir / "checkpoints" / "2")
  assert load_checkpoint(str(run_dir))[2] == 2


def test_an_unwritable_checkpoint_directory_names_the_step(tmp_path, capsys):
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  (run_dir / "checkpoints").write_text("not a directory")
  assert main(["train", *overrides(run_dir, "schedule.total_steps=2", "checkpoint.every=2")]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err
  assert "could not save checkpoint step 2" in err and "Not a directory (errno 20)" in err
  assert "there is no earlier complete checkpoint" in err
