"""Bad inputs across the CLI: each a one-line ``lowrank-jax: error:`` naming the value, exit
status 2, no traceback, and nothing written (no new run directory, an old one unchanged)."""

import os
import sys

import pytest

from lowrank_jax.cli import main
from lowrank_jax.train.config import load_config

from fault_helpers import file_hashes, overrides

# (extra train overrides, text the error must contain); the tests see 8 devices.
BAD_TRAIN_INPUTS = [
    (["optimizer.method=sgdx"], "optimizer.method='sgdx' is unknown"),
    (
        ["optimizer.method=galore", "optimizer.options.rank=0"],
        "optimizer.options.rank=0 must be an integer >= 1",
    ),
    (
        ["optimizer.method=galore", "optimizer.options.rank=64"],
        "rank=64 exceeds the smaller side (32) of the projected leaf",
    ),
    (
        ["optimizer.method=galore", "optimizer.options.bogus=1"],
        "unknown option optimizer.options.bogus; allowed: rank, update_proj_gap, scale",
    ),
    (
        ["optimizer.method=galore", "optimizer.options.scale=abc"],
        "optimizer.options.scale='abc' is not a number",
    ),
    (["optimizer.learning_rate=-1"], "optimizer.learning_rate=-1.0 must be a finite number > 0"),
    (["optimizer.learning_rate=inf"], "optimizer.learning_rate=inf must be a finite number > 0"),
    (["optimizer.learning_rate=nan"], "optimizer.learning_rate=nan must be a finite number > 0"),
    (["optimizer.clip_norm=.inf"], "optimizer.clip_norm=inf must be a finite number > 0 or null"),
    (["schedule.total_steps=1e3"], "schedule.total_steps='1e3' must be an integer >= 1"),
    (["schedule.total_steps=true"], "schedule.total_steps=True must be an integer >= 1"),
    (["schedule.kind=linear"], "schedule.kind='linear' is unknown; allowed: cosine, constant"),
    (["logging.progress=maybe"], "logging.progress='maybe' must be true or false"),
    (["faults.nan_loss_steps=[0]"], "faults.nan_loss_steps=[0] must be a list of integers >= 1"),
    (["seed=-1"], "seed=-1 must be an integer >= 0"),
    (["optimizer=adamw"], "config section 'optimizer' must be a mapping, got 'adamw'"),
    (["optimizer.learning_rate=[0.1"], "override 'optimizer.learning_rate=[0.1' has a bad value"),
    (["optimizer..learning_rate=0.1"], "is not of the form key=value"),
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
    (["data.tokenizer={not_spm}"], "is not a SentencePiece model (a .model file)"),
    (
        ["model.linear.alhpa=3"],
        "unknown config key 'model.linear.alhpa'; allowed: model.linear.alpha",
    ),
    (
        ["optimizer.method=galore", "model.linear.rank=32"],
        "model.linear.rank=32 means nothing to optimizer.method='galore', which trains dense "
        "linears (they take no model.linear key); did you mean optimizer.options.rank=32?",
    ),
    (
        ["optimizer.method=low_rank", "model.linear.rank=8", "model.linear.sparsity=0.1"],
        "model.linear.sparsity=0.1 means nothing to optimizer.method='low_rank'",
    ),
    (["optimizer.method=low_rank"], "'lowrank' linears, which need model.linear.rank"),
    (
        ["optimizer.method=low_rank", "model.linear.rank=8", "model.linear.alpha=-1"],
        "model.linear.alpha=-1 must be positive",
    ),
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


# (the bytes of a --config file, text the error must contain besides the file's name)
BAD_CONFIG_FILES = [
    (b"optimizer:\n\tmethod: galore\n", "line 2, column 1: a tab, where YAML allows only spaces"),
    (b"optimizer:\n  method: [galore\n", "line 3, column 1: "),
    (b"optimizer: {method: galore\nschedule: 1\n", "line 2"),
    (b"- optimizer.method=galore\n", "must hold a mapping of keys"),
    (b"3\n", "must hold a mapping of keys (e.g. 'optimizer: ...'), not a int"),
    (b"optimizer:\n  method: gal\xe9re\n", "line 2: byte 0xe9 is not UTF-8"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is binary, not YAML text (a NUL byte on line 3)"),
    (b"optimizer:\n  learning_rate: .inf\n", "optimizer.learning_rate=inf must be a finite number"),
    (b"optimizer:\n  - learning_rate\n", "config section 'optimizer' must be a mapping"),
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
  not_spm = tmp_path / "tokenizer.model"
  not_spm.write_text("a text file, not a serialized SentencePiece model")
  run_dir = tmp_path / "run"
  extra = [e.format(empty=empty, not_spm=not_spm) for e in extra]
  assert main(["train", *overrides(run_dir, *extra)]) == 2
  assert expected in error_line(capsys)
  assert not run_dir.exists()


@pytest.mark.parametrize(
    "content,expected", BAD_CONFIG_FILES, ids=[expected for _, expected in BAD_CONFIG_FILES]
)
def test_bad_config_file(content, expected, tmp_path, capsys):
  path = tmp_path / "run.yaml"
  path.write_bytes(content)
  run_dir = tmp_path / "run"
  assert main(["train", "--config", str(path), *overrides(run_dir)]) == 2
  line = error_line(capsys)
  assert expected in line and (str(path) in line or "optimizer" in expected)
  assert not run_dir.exists()


def test_a_config_path_that_is_a_directory(tmp_path, capsys):
  assert main(["train", "--config", str(tmp_path), *overrides(tmp_path / "run")]) == 2
  assert f"config file '{tmp_path}' cannot be read" in error_line(capsys)


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


def test_export_without_the_hf_extra_is_one_line(finished, tmp_path, monkeypatch, capsys):
  """safetensors (the hf extra) cannot be imported: a setup to fix, exit 2, nothing written."""
  monkeypatch.setitem(sys.modules, "safetensors.numpy", None)  # import raises ImportError
  assert main(["export", "--checkpoint", str(finished / "run"), "--out", str(tmp_path / "hf")]) == 2
  assert "export needs the hf extra (pip install 'lowrank-jax[hf]')" in error_line(capsys)
  assert not (tmp_path / "hf").exists()


def test_eval_refuses_a_key_that_would_change_the_run(finished, capsys):
  argv = ["eval", "--checkpoint", str(finished / "run"), "optimizer.learning_rate=0.1"]
  assert main(argv) == 2
  assert "eval takes only data.* and eval.* keys" in error_line(capsys)


# (a grid file's text, what the error says besides the file's name)
BAD_GRID_FILES = [
    ("out_dir: [x\n", "line 2, column 1: expected ',' or ']'"),
    ("sizes: [nano]\nmethods: [full_rank]\n", "misses the required key 'out_dir'"),
    ("out_dir: x\nsizes: nano\nmethods: [full_rank]\n", "sizes='nano' must be a list of strings"),
    (
        "out_dir: x\nsizes: [nano]\nmethods: [full_rank]\nseeds: [0.5]\n",
        "must be a list of integers",
    ),
    ("out_dir: x\nsizes: [nano]\nmethods: [full_rank]\nmax_extensions: two\n", "an integer"),
    (
        "out_dir: x\nsizes: [nano]\nmethods: [full_rank]\nmethod_overrides: {full_rank: a=1}\n",
        "method_overrides['full_rank']='a=1' must be a list of strings",
    ),
    ("out_dir: x\nsizes: [nano]\nmethods: [full_rank]\nseed: [0]\n", "unknown grid key 'seed'"),
    ("- out_dir\n", "must hold a mapping of keys"),
]


@pytest.mark.parametrize("text,expected", BAD_GRID_FILES, ids=[e for _, e in BAD_GRID_FILES])
def test_a_bad_grid_file_is_one_line_before_anything_runs(text, expected, tmp_path, capsys):
  path = tmp_path / "grid.yaml"
  path.write_text(text)
  assert main(["benchmark", str(path)]) == 2
  line = error_line(capsys)
  assert expected in line and str(path) in line
  assert os.listdir(tmp_path) == ["grid.yaml"]


def test_a_model_side_methods_rank_given_as_an_optimizer_option_names_model_linear_rank():
  with pytest.raises(ValueError) as error:
    load_config(overrides=["optimizer.method=low_rank", "optimizer.options.rank=8"])
  assert str(error.value).endswith("did you mean model.linear.rank=8?")
