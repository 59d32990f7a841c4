"""What one ``lowrank-jax train`` of a grid runs: one cell, or a search's rates as one sweep.

A learning-rate search runs several rates of one ``(size, method, seed)``; with
``as_one_program`` they train as one learning-rate sweep (:mod:`lowrank_jax.train.rate_copies`): one
process, one jitted step over a copy of the model per rate, the same batches. The sweep has a
run directory of its own beside the cells',
``out_dir/size/method/sweep_seed<seed>_lr<rate>_<rate>...``; when it ends each cell's run
directory becomes a link to its copy's directory, so every reader of a cell (the search, the
report) sees it as it would a run of its own. A copy that diverged is marked failed, as a
diverged run is. Only cells that never ran are grouped: one with a run directory resumes
alone.

>>> from lowrank_jax.benchmark.grid import Grid
>>> grid = Grid(out_dir="runs/g", sizes=("nano",), methods=("galore",), seeds=(0,),
...             learning_rates={"galore": (0.01, 0.02)})
>>> [job.name for job in jobs_of(grid.sweep_cells(), as_one_program=True)]
['nano/galore/sweep_seed0_lr0.01_0.02']
>>> jobs_of(grid.sweep_cells(), as_one_program=True)[0].argv()[-1]
'optimizer.learning_rates=[0.01,0.02]'
"""

from __future__ import annotations

import dataclasses
import os

from lowrank_jax.benchmark.grid import Cell
from lowrank_jax.train import rate_copies
from lowrank_jax.train.config import TrainConfig, load_config
from lowrank_jax.train.run_dir import RunDir


@dataclasses.dataclass(frozen=True)
class Job:
  """One training run of the grid: ``cells`` holds one cell, or the rates of a sweep."""

  cells: tuple[Cell, ...]

  @property
  def is_sweep(self) -> bool:
    return len(self.cells) > 1

  @property
  def name(self) -> str:
    first = self.cells[0]
    if not self.is_sweep:
      return first.name
    rates = "_".join(f"{cell.learning_rate:g}" for cell in self.cells)
    dense = "" if first.dense_learning_rate is None else f"_dense{first.dense_learning_rate:g}"
    return f"{first.size}/{first.method}/sweep_seed{first.seed}{dense}_lr{rates}"

  @property
  def run_dir(self) -> str:
    return os.path.join(self.cells[0].out_dir, self.name)

  def copy_dir(self, cell: Cell) -> RunDir:
    """The directory of ``cell``'s copy in this sweep's run directory."""
    return RunDir(os.path.join(self.run_dir, rate_copies.copy_dir_name(cell.learning_rate)))

  def argv(self) -> list[str]:
    """The arguments of ``lowrank-jax train`` that run this job."""
    args = self.cells[0].argv()
    if not self.is_sweep:
      return args
    rates = ",".join(f"{cell.learning_rate:g}" for cell in self.cells)
    kept = [a for a in args if not a.startswith(("run_dir=", "optimizer.learning_rate="))]
    return kept + [f"run_dir={self.run_dir}", f"optimizer.learning_rates=[{rates}]"]

  def config(self, *extra_overrides: str) -> TrainConfig:
    """The job's validated config."""
    configs = len(self.cells[0].configs)
    args = [arg for arg in self.argv() if arg != "--config"]
    return load_config(args[:configs], args[configs:] + list(extra_overrides))

  def publish(self) -> None:
    """After a sweep ended: links each cell's run directory to its copy's, and marks a copy
    that diverged (its summary says it stopped) or never wrote a summary as failed."""
    if not self.is_sweep:
      return
    for cell in self.cells:
      copy = self.copy_dir(cell)
      os.makedirs(copy.path, exist_ok=True)
      if not os.path.lexists(cell.run_dir):
        os.makedirs(os.path.dirname(cell.run_dir), exist_ok=True)
        os.symlink(os.path.relpath(copy.path, os.path.dirname(cell.run_dir)), cell.run_dir)
      summary = copy.read_summary()
      if summary is None or summary.get("stopped_by") == "non-finite":
        with open(copy.failed_marker, "w") as f:
          f.write(f"the copy at this rate of the sweep {self.run_dir} did not finish\n")


def jobs_of(cells: list[Cell], as_one_program: bool = False) -> list[Job]:
  """The jobs that run ``cells``: with ``as_one_program``, the never-run cells of one
  ``(size, method, seed, dense rate)`` as one sweep (two or more of them), the others one
  job a cell."""
  if not as_one_program:
    return [Job((cell,)) for cell in cells]
  groups: dict[tuple, list[Cell]] = {}
  for cell in cells:
    fresh = cell.learning_rate is not None and not os.path.lexists(cell.run_dir)
    key = (cell.size, cell.method, cell.seed, cell.dense_learning_rate) if fresh else (cell.name,)
    groups.setdefault(key, []).append(cell)
  return [
      Job(tuple(sorted(group, key=lambda cell: cell.learning_rate or 0.0)))
      for group in groups.values()
  ]
