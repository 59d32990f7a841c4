"""A method defined here, outside the package, registers with one call and trains as a built-in.

``sign_descent`` (scaled sign SGD, an optax factory with one option) is registered with
``leaves="target"``: the trainer must give the target matrices its transform and the dense
leaves AdamW, at their own rate; a ``lowrank-jax train`` subprocess must find it through
``optimizer.method_modules``; its memory formula must reach the memory report; bad
registrations must fail in one line; and the registry must be the built-ins' again after.
"""

import os
import shlex
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
import yaml
from test_dense_rate import DENSE, WEIGHT_DECAY, close, traced
from test_method_mechanics import B1, B2, EPS, PEAK, expected_lr
from tiny_run import TINY

from lowrank_jax import cli
from lowrank_jax.benchmark import Grid, run_grid
from lowrank_jax.benchmark.results import read_result
from lowrank_jax.memory import report
from lowrank_jax.memory.analytic import non_target_entries
from lowrank_jax.optim.tree_utils import path_names
from lowrank_jax.train import Entries, register_method, unregister_method
from lowrank_jax.train.commented_config import annotated_yaml
from lowrank_jax.train.config import load_config
from lowrank_jax.train.methods import METHODS, TARGET_LINEARS, get_method
from lowrank_jax.train.schedule import make_schedule

NAME = "sign_descent"
BUILT_IN = frozenset(METHODS)


def sign_descent(learning_rate, scale: float = 0.5):
  """Sign SGD: every entry moves by ``learning_rate * scale`` against its gradient's sign."""
  return optax.chain(
      optax.scale_by_sign(), optax.scale(scale), optax.scale_by_learning_rate(learning_rate)
  )


def stateless_memory(m, n, r, delta):
  del r, delta
  return Entries(m * n, 0)


def register_sign_descent():
  """What a user's module runs on import (the subprocess imports one that calls this)."""
  return register_method(NAME, sign_descent, memory=stateless_memory)


@pytest.fixture
def registered():
  method = register_sign_descent()
  yield method
  unregister_method(NAME)


def hand_wired(config, peak: float, dense_peak: float) -> optax.GradientTransformation:
  """The trainer's wiring written out: sign descent on the seven target matrices, optax's
  AdamW on every other leaf at the dense leaves' rate."""

  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: (
            "target" if leaf.ndim >= 2 and set(path_names(path)) & set(TARGET_LINEARS) else "dense"
        ),
        params,
    )

  return optax.partition(
      {
          "target": sign_descent(make_schedule(peak, config.schedule)),
          "dense": optax.adamw(
              make_schedule(dense_peak, config.schedule),
              b1=B1,
              b2=B2,
              eps=EPS,
              weight_decay=WEIGHT_DECAY,
          ),
      },
      labels,
  )


def test_a_registered_method_trains_as_its_factory_wired_by_hand(registered):
  config, states, grads, metrics = traced(NAME)
  tx = hand_wired(config, PEAK, DENSE)
  opt_state = tx.init(states[0].params)
  for t, (before, after, grad) in enumerate(zip(states, states[1:], grads)):
    updates, opt_state = tx.update(grad, opt_state, before.params)
    expected = optax.apply_updates(before.params, updates)
    for got, want in zip(jax.tree.leaves(after.params), jax.tree.leaves(expected)):
      assert close(got, want), t + 1
    np.testing.assert_allclose(float(metrics[t]["lr"]), expected_lr("full_rank", t), rtol=1e-5)
  assert config.optimizer.method_options.scale == 0.5  # the factory's default


def write_method_module(directory, module: str = "my_methods") -> str:
  """A user's module in ``directory`` whose import registers sign descent; its name."""
  (directory / f"{module}.py").write_text(
      "from test_external_method import register_sign_descent\nregister_sign_descent()\n"
  )
  return module


def subprocess_env(directory) -> dict[str, str]:
  """This process's environment with ``directory``, the tests and this checkout on the path
  of a subprocess (the repository root last)."""
  here = os.path.dirname(os.path.abspath(__file__))
  tests = os.path.dirname(here)
  path = [str(directory), here, tests, os.path.dirname(tests)]
  return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


@pytest.fixture
def method_module(tmp_path, monkeypatch):
  """A user's module on this process's path (and its subprocesses'), imported by name only;
  what it registers is unregistered after."""
  module = write_method_module(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setenv("PYTHONPATH", subprocess_env(tmp_path)["PYTHONPATH"])
  yield module
  if NAME in METHODS:
    unregister_method(NAME)
  sys.modules.pop(module, None)


def test_a_train_subprocess_imports_the_method_modules_and_saves_them(tmp_path):
  write_method_module(tmp_path)
  env = subprocess_env(tmp_path)
  run_dir = tmp_path / "run"
  args = [*TINY, f"run_dir={run_dir}", "schedule.total_steps=2", "checkpoint.every=2"]
  args += [f"optimizer.method={NAME}", "optimizer.method_modules=[my_methods]"]
  done = subprocess.run(
      [sys.executable, "-m", "lowrank_jax.cli", "train", *args, "optimizer.options.scale=0.25"],
      env=env,
      capture_output=True,
      text=True,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  saved = yaml.safe_load((run_dir / "config.yaml").read_text())["optimizer"]
  assert saved["method_modules"] == ["my_methods"] and saved["options"] == {"scale": 0.25}
  unknown = subprocess.run(
      [sys.executable, "-m", "lowrank_jax.cli", "train", "--print-config", *args[-2:-1]],
      env=env,
      capture_output=True,
      text=True,
  )
  assert unknown.returncode == 2
  assert f"optimizer.method='{NAME}' is unknown; allowed: [" in unknown.stderr
  assert "'adamw'" in unknown.stderr


def test_the_memory_formula_reaches_the_memory_report(registered):
  (row,) = report.memory_rows(["nano"], [NAME], "fp32", [1], compile_step=False)
  (full,) = report.memory_rows(["nano"], ["full_rank"], "fp32", [1], compile_step=False)
  config = report.case_config("nano", NAME, "fp32")
  dense_adam_entries = 2 * non_target_entries(config.model_config())
  assert row.analytic.weight_bytes == full.analytic.weight_bytes
  assert row.analytic.optimizer_bytes == 4 * dense_adam_entries  # fp32; sign descent keeps none
  assert row.state.weights == row.analytic.weight_bytes  # the measured state agrees
  assert row.state.optimizer == row.analytic.optimizer_bytes
  assert f"| {NAME} |" in report.markdown_table([row])


def test_the_memory_command_imports_its_method_modules(method_module, capsys):
  case = ["memory", "--sizes", "nano", "--methods", NAME, "--dtype", "fp32", "--no-compile"]
  assert cli.main(case) == 2
  assert f"method '{NAME}' is unknown" in capsys.readouterr().err
  assert cli.main([*case, "--method-modules", method_module]) == 0
  assert f"| nano | fp32 | 1 | {NAME} |" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    cli.parse_args(["memory", "--help"])
  assert "--method-modules MODULE [MODULE ...]" in capsys.readouterr().out


def test_a_grids_method_modules_reach_every_cell_and_its_train_subprocess(
    method_module, tmp_path, capsys
):
  path = tmp_path / "grid.yaml"
  grid_file = {
      "out_dir": str(tmp_path / "grid"),
      "sizes": ["nano"],
      "methods": [NAME],
      "overrides": [*TINY, "schedule.total_steps=2", "checkpoint.every=2"],
      "max_extensions": 0,
      "method_modules": [method_module],
  }
  path.write_text(yaml.safe_dump(grid_file))
  assert cli.main(["benchmark", str(path), "--emit-jobs", "-"]) == 0
  header, *jobs = capsys.readouterr().out.splitlines()
  assert "1 jobs" in header
  for job in jobs:
    args = cli._parser().parse_args(shlex.split(job)[1:])
    assert f"optimizer.method_modules=[{method_module}]" in args.overrides
    assert load_config(args.config, args.overrides).optimizer.method == NAME
  grid = Grid.load(str(path))
  run_grid(grid, workers=2, pin_workers=False)  # the cell is a `train` subprocess
  (cell,) = grid.sweep_cells()
  assert read_result(cell).status == "done"
  saved = yaml.safe_load((tmp_path / cell.run_dir / "config.yaml").read_text())["optimizer"]
  assert (saved["method"], saved["method_modules"]) == (NAME, [method_module])


def test_print_config_comments_a_registered_methods_options(registered):
  text = annotated_yaml(load_config(overrides=[f"optimizer.method={NAME}"]))
  (line,) = [line for line in text.splitlines() if line.strip().startswith("scale:")]
  assert line.endswith(f"scale: 0.5  # float, a keyword of {NAME}'s factory (its default 0.5).")


def test_the_registry_is_the_built_ins_again_after_unregistering(registered):
  assert get_method(NAME) is registered and set(METHODS) == BUILT_IN | {NAME}
  unregister_method(NAME)
  assert set(METHODS) == BUILT_IN
  register_sign_descent()  # for the fixture's own cleanup
  with pytest.raises(ValueError, match="unregister_method name='galore' was not registered"):
    unregister_method("galore")


class PlainOptions:
  scale: float = 0.5


@pytest.mark.parametrize(
    "name, factory, keywords, message",
    [
        ("galore", sign_descent, {}, "name='galore' is taken by a built-in method; allowed:"),
        (NAME, sign_descent, {}, f"name='{NAME}' is taken by a registered method"),
        ("my method", sign_descent, {}, "name='my method' is not allowed; allowed: a Python"),
        ("other", "sign_descent", {}, "factory='sign_descent' is not callable; allowed:"),
        ("other", sign_descent, {"options": PlainOptions}, "options=<class 'test_external"),
        ("other", sign_descent, {"leaves": "dense"}, "leaves='dense' is unknown; allowed: target"),
        ("other", sign_descent, {"linear_kind": "lorra"}, "linear_kind='lorra' is unknown"),
        ("other", sign_descent, {"memory": 3}, "memory=3 is not callable; allowed: memory(m"),
    ],
)
def test_a_bad_registration_is_a_one_line_error(registered, name, factory, keywords, message):
  with pytest.raises(ValueError, match="^register_method ") as error:
    register_method(name, factory, **keywords)
  assert message in str(error.value) and "\n" not in str(error.value)
  assert set(METHODS) == BUILT_IN | {NAME}
