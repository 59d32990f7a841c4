"""An installed package's method is found by its ``lowrank_jax.methods`` entry point alone.

The package is what ``pip install`` leaves on ``sys.path``: ``my_pkg/methods.py``, whose import
registers sign descent, and ``my_methods-0.0.dist-info`` declaring the entry point
``sign_descent = my_pkg.methods``. No ``method_modules`` names it, so every lookup of the name
(the config's ``get_method``, a grid's method check, the memory report's) must load the entry
point.
"""

import subprocess
import sys

import pytest
import yaml
from test_external_method import NAME, subprocess_env

from lowrank_jax import cli
from lowrank_jax.benchmark import Grid
from lowrank_jax.train.methods import METHODS, unregister_method

PACKAGE = "my_pkg"


def install(directory) -> None:
  """``my_pkg`` and its distribution's metadata in ``directory``, as an installed package."""
  (directory / PACKAGE).mkdir()
  (directory / PACKAGE / "__init__.py").write_text("")
  (directory / PACKAGE / "methods.py").write_text(
      "from test_external_method import register_sign_descent\nregister_sign_descent()\n"
  )
  info = directory / "my_methods-0.0.dist-info"
  info.mkdir()
  (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-methods\nVersion: 0.0\n")
  (info / "entry_points.txt").write_text(f"[lowrank_jax.methods]\n{NAME} = {PACKAGE}.methods\n")


@pytest.fixture
def installed(tmp_path, monkeypatch):
  """The package installed on this process's path, not imported; unregistered after."""
  install(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  assert NAME not in METHODS
  yield
  if NAME in METHODS:
    unregister_method(NAME)
  for module in (f"{PACKAGE}.methods", PACKAGE):
    sys.modules.pop(module, None)


def test_a_fresh_process_finds_the_method_by_its_entry_point(tmp_path):
  install(tmp_path)
  done = subprocess.run(
      [sys.executable, "-m", "lowrank_jax.cli", "train", "--print-config"]
      + [f"optimizer.method={NAME}", "optimizer.options.scale=0.25"],
      env=subprocess_env(tmp_path),
      capture_output=True,
      text=True,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  optimizer = yaml.safe_load(done.stdout)["optimizer"]
  assert optimizer["method"] == NAME and optimizer["method_modules"] == []
  assert optimizer["options"] == {"scale": 0.25}


def test_a_grid_takes_a_method_of_an_entry_point(installed, tmp_path):
  grid = Grid(out_dir=str(tmp_path / "grid"), sizes=("nano",), methods=(NAME,))
  (cell,) = grid.sweep_cells()
  assert cell.config().optimizer.method == NAME


def test_the_memory_command_takes_a_method_of_an_entry_point(installed, capsys):
  case = ["memory", "--sizes", "nano", "--methods", NAME, "--dtype", "fp32", "--no-compile"]
  assert cli.main(case) == 0, capsys.readouterr().err
  assert f"| nano | fp32 | 1 | {NAME} |" in capsys.readouterr().out
