"""Config loading: layering, overrides and one-line errors before anything runs."""

import ast
import dataclasses
import inspect
import typing

import pytest

from lowrank_jax.data.config import DataConfig
from lowrank_jax.train import config as config_module
from lowrank_jax.train.config import MeshSection, TrainConfig, load_config, to_dict
from lowrank_jax.train.methods import METHODS, build_optimizer
from lowrank_jax.train.schedule import make_schedule


def test_files_layer_and_overrides_win(tmp_path):
  base = tmp_path / "base.yaml"
  base.write_text("optimizer:\n  method: galore\n  learning_rate: 0.01\ndata:\n  seq_len: 64\n")
  top = tmp_path / "top.yaml"
  top.write_text("optimizer:\n  learning_rate: 0.02\n")
  cfg = load_config([str(base), str(top)], ["data.global_batch_size=16"])
  assert cfg.optimizer.method == "galore"
  assert cfg.optimizer.learning_rate == 0.02
  assert (cfg.data.seq_len, cfg.data.global_batch_size) == (64, 16)
  assert cfg.data.vocab_size == load_config().data.vocab_size  # untouched keys keep defaults


def test_round_trip_through_dict():
  cfg = load_config(overrides=["data.paths=[a.txt, b.txt]", "data.source=files"])
  assert cfg.data.paths == ("a.txt", "b.txt")
  assert load_config(base=to_dict(cfg)) == cfg
  assert load_config(overrides=["optimizer.learning_rate='1e-3'"]).optimizer.learning_rate == 1e-3


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.lr=0.1", "unknown config key 'optimizer.lr'"),
        ("optimizer.learning_rate=-1", "optimizer.learning_rate=-1.0 must be a finite number > 0"),
        ("schedule.total_steps=0", "schedule.total_steps=0"),
        ("model.preset=3b", "model preset '3b' is unknown"),
        ("model.overrides.depth=3", "unknown model override 'depth'"),
        ("data.seq_len=1", "seq_len=1"),
        ("data.seq_len=4096", "data.seq_len=4096 exceeds the model's max_seq_len=1024"),
        ("schedule.grad_accum=3", "global_batch_size=32 is not divisible by schedule.grad_accum=3"),
        ("mesh.fsdp=-1", "mesh=(data=-1, fsdp=-1, tensor=1) is invalid"),
        ("model.dtype=fp8", "dtype policy 'fp8' is unknown"),
        ("checkpoint.keep=0", "checkpoint.keep=0"),
        ("nonsense", "override 'nonsense' is not of the form key=value"),
        ("optimizer.b1=high", "optimizer.b1='high' is not a number"),
        (
            "distributed.coordinator_address=localhost",
            "coordinator_address='localhost' must be HOST",
        ),
        ("distributed.coordinator_address=host:70000", "coordinator_address='host:70000' must be"),
        ("distributed.num_processes=0", "distributed.num_processes=0 must be an integer >= 1"),
        ("distributed.process_id=-1", "distributed.process_id=-1 must be an integer >= 0"),
        ("distributed.auto=yes please", "distributed.auto='yes please' must be true or false"),
        ("distributed.initialization_timeout=0", "distributed.initialization_timeout=0 must be"),
    ],
)
def test_bad_values_raise_one_line_errors(override, message):
  with pytest.raises(ValueError) as error:
    load_config(overrides=[override])
  assert message in str(error.value)
  assert "\n" not in str(error.value)


def test_distributed_section_checks_the_rank_against_the_process_count():
  cfg = load_config(
      overrides=[
          "distributed.coordinator_address=10.0.0.1:8476",
          "distributed.num_processes=4",
          "distributed.process_id=3",
      ]
  )
  assert (
      cfg.distributed.coordinator_address,
      cfg.distributed.num_processes,
      cfg.distributed.process_id,
  ) == ("10.0.0.1:8476", 4, 3)
  assert load_config(base=to_dict(cfg)) == cfg
  with pytest.raises(ValueError, match="process_id=4 must be below distributed.num_processes=4"):
    load_config(overrides=["distributed.num_processes=4", "distributed.process_id=4"])


def test_missing_config_file_is_named(tmp_path):
  with pytest.raises(ValueError, match="nope.yaml"):
    load_config([str(tmp_path / "nope.yaml")])


def test_mesh_fills_and_checks_the_device_count():
  assert MeshSection(data=-1, fsdp=2, tensor=2).shape(8) == (2, 2, 2)
  with pytest.raises(ValueError, match=r"needs 4 devices; 8 are available"):
    MeshSection(data=1, fsdp=2, tensor=2).shape(8)
  with pytest.raises(ValueError, match="do not divide"):
    MeshSection(data=-1, fsdp=3).shape(8)


def test_every_shipped_experiment_config_loads():
  import glob
  import os

  root = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs")
  sizes = sorted(glob.glob(os.path.join(root, "llama_*.yaml")))
  assert len(sizes) == 4
  for size in sizes:
    cfg = load_config([size])
    assert cfg.data.global_batch_size == 512 and cfg.model.dtype == "bf16"
    name = os.path.basename(size)[len("llama_") : -len(".yaml")]
    methods = glob.glob(os.path.join(root, "methods", f"*_{name}.yaml"))
    assert len(methods) == len(METHODS) - 1  # every method but adamw, full_rank's alias
    for method in methods:
      layered = load_config([size, method])
      assert layered.optimizer.method == os.path.basename(method)[: -len(f"_{name}.yaml")]
      build_optimizer(
          layered.optimizer_section(),
          make_schedule(layered.optimizer.learning_rate, layered.schedule),
      )


def test_every_number_of_every_section_declares_its_bounds():
  """Ranges live with the fields (fields.setting), checked by one generic check."""
  sections = [
      hint
      for hint in typing.get_type_hints(TrainConfig).values()
      if dataclasses.is_dataclass(hint) and hint is not DataConfig
  ]
  for section in [TrainConfig, *sections]:
    hints = typing.get_type_hints(section)
    for field in dataclasses.fields(section):
      kinds = {
          typing.get_origin(h) or h
          for h in (typing.get_args(hints[field.name]) or [hints[field.name]])
      }
      if kinds & {int, float, tuple}:
        assert field.metadata.get("bounds") is not None, f"{section.__name__}.{field.name}"


def test_the_config_imports_the_method_registry_at_the_top():
  tree = ast.parse(inspect.getsource(config_module))
  nested = [
      node
      for function in ast.walk(tree)
      if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
      for node in ast.walk(function)
      if isinstance(node, (ast.Import, ast.ImportFrom))
  ]
  assert not nested, [ast.unparse(node) for node in nested]
