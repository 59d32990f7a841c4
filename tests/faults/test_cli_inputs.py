"""Bad inputs across the CLI: each a one-line ``lowrank-jax: error:`` naming the value, exit
status 2, no traceback, and nothing written (no new run directory, an old one unchanged)."""

import pytest

from lowrank_jax.cli import main

from fault_helpers import file_hashes, overrides

# (extra train overrides, text the error must contain); the tests see 8 devices.
BAD_TRAIN_INPUTS = [
    (["optimizer.method=sgdx"], "optimizer.method='sgdx' is unknown"),
    (["optimizer.method=galore", "optimizer.options.rank=0"], "got 0"),
    (["optimizer.method=galore", "optimizer.options.rank=64"], "rank=64 exceeds the smaller side"),
    (["optimizer.method=galore", "optimizer.options.bogus=1"], "{'bogus': 1}"),
    (["optimizer.learning_rate=-1"], "optimizer.learning_rate=-1.0 must be positive"),
    (["optimizer.b1=high"], "optimizer.b1='high' is not a number"),
    (["optimizer.lr=0.1"], "unknown config key 'optimizer.lr'"),
    (["mesh.data=3"], "mesh shape (3, 1, 1) needs 3 devices; 8 are available"),
    (["mesh.fsdp=-1"], "mesh=(data=-1, fsdp=-1, tensor=1) is invalid"),
    (["data.global_batch_size=12"], "data.global_batch_size=12 is not divisible by the 8"),
    (["eval.batch_size=12"], "eval.batch_size=12 is not divisible by the 8"),
    (["data.seq_len=4096"], "data.seq_len=4096 exceeds the model's max_seq_len"),
    (["data.seq_len=1"], "seq_len=1 is too short"),
    (["data.source=files", "data.paths=[/nonexistent/train.txt]"], "/nonexistent/train.txt"),
    (
        ["data.source=files", "data.paths=[{empty}]", "data.validation_paths=[{empty}]"],
        "holds no document",
    ),
    (["data.source=files"], "paths=()"),
    (
        ["model.overrides.vocab_size=256"],
        "tokenizer vocab_size=384 does not fit the model's " "vocab_size=256",
    ),
    (["data.tokenizer=/nonexistent/spm.model"], "tokenizer='/nonexistent/spm.model'"),
    (["model.preset=3b"], "model preset '3b' is unknown"),
    (["model.dtype=fp8"], "dtype policy 'fp8' is unknown"),
    (["schedule.total_steps=0"], "schedule.total_steps=0"),
    (
        ["schedule.grad_accum=3"],
        "data.global_batch_size=8 is not divisible by " "schedule.grad_accum=3",
    ),
    (["checkpoint.keep=0"], "checkpoint.keep=0"),
    (["faults.max_bad_steps=0"], "faults.max_bad_steps=0"),
    (["nonsense"], "override 'nonsense' is not of the form key=value"),
    (["--config", "/nonexistent/run.yaml"], "/nonexistent/run.yaml"),
]


def error_line(capsys) -> str:
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err, err
  assert err.startswith("lowrank-jax: error: ")
  return err


@pytest.mark.parametrize(
    "extra,expected", BAD_TRAIN_INPUTS, ids=[" ".join(extra) for extra, _ in BAD_TRAIN_INPUTS]
)
def test_bad_train_input(extra, expected, tmp_path, capsys):
  empty = tmp_path / "empty.txt"
  empty.touch()
  run_dir = tmp_path / "run"
  extra = [e.format(empty=empty) for e in extra]
  assert main(["train", *overrides(run_dir, *extra)]) == 2
  assert expected in error_line(capsys)
  assert not run_dir.exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A 2-step run (checkpoint 2) and an occupied export directory."""
  root = tmp_path_factory.mktemp("finished")
  assert main(["train", *overrides(root / "run", "schedule.total_steps=2")]) == 0
  (root / "occupied").mkdir()
  (root / "occupied" / "file").write_text("x")
  return root


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["train", "model.overrides.num_layers=2"], "model.overrides.num_layers (1 -> 2)"),
        (["train", "model.overrides.hidden_size=64"], "model.overrides.hidden_size (32 -> 64)"),
        (["eval", "--step", "99"], "step 99 has no checkpoint"),
        (["export", "--out", "{root}/occupied"], "occupied"),
    ],
    ids=["train-other-depth", "train-other-width", "eval-missing-step", "export-occupied-dir"],
)
def test_bad_input_about_an_existing_run_changes_nothing(argv, expected, finished, capsys):
  run_dir = finished / "run"
  before = file_hashes(finished)
  command, *rest = [a.format(root=finished) for a in argv]
  if command == "train":
    argv = ["train", *overrides(run_dir, *rest)]
  else:
    argv = [command, "--checkpoint", str(run_dir), *rest]
  capsys.readouterr()
  assert main(argv) == 2
  assert expected in error_line(capsys)
  assert file_hashes(finished) == before


def test_a_run_dir_that_is_a_file_is_refused_and_kept(tmp_path, capsys):
  run_dir = tmp_path / "run"
  run_dir.write_text("notes")
  assert main(["train", *overrides(run_dir)]) == 2
  assert f"run_dir '{run_dir}' is a file" in error_line(capsys)
  assert run_dir.read_text() == "notes"


def test_eval_of_a_directory_that_is_not_a_run(tmp_path, capsys):
  assert main(["eval", "--checkpoint", str(tmp_path / "nowhere")]) == 2
  assert "nowhere" in error_line(capsys)
