"""A benchmark grid: methods x sizes x learning rates x seeds, each cell one training run.

A grid is a YAML file (``experiments/grids/*.yaml``)::

    out_dir: runs/nano_grid          # one run directory per cell below it
    sizes: [nano]                    # model presets
    methods: [full_rank, galore]     # names of lowrank_jax.train.methods.METHODS
    seeds: [0, 1, 2]
    seed_counts: {galore: 1}         # a method's first n seeds; absent: all of them
    configs: []                      # YAML files per cell; {size} and {method} are filled in
    overrides: [schedule.total_steps=100]       # dotted overrides of every cell
    method_overrides: {galore: [optimizer.options.rank=32]}
    learning_rates: {galore: [0.005, 0.01, 0.02]}  # the sweep; absent: the config's rate
    max_extensions: 2                # rates a sweep may add past its edges

A method with several learning rates is searched at the first seed
(:mod:`lowrank_jax.benchmark.sweep`: neighbours at most 2x apart, extended past an edge
until the best is interior); its other seeds then run at the rate with the lowest validation
loss (the paper tuned each method's rate, arXiv 2505.22922, experimental protocol). A cell is
``(size, method, learning_rate, seed)``; it sets ``model.preset`` to its size after the config
files and before the overrides, and its run directory is
``out_dir/size/method/lr<rate>_seed<seed>``:

>>> grid = Grid(out_dir="runs/g", sizes=("nano",), methods=("galore",), seeds=(0, 1),
...             learning_rates={"galore": (0.01, 0.02)})
>>> [c.name for c in grid.sweep_cells()]
['nano/galore/lr0.01_seed0', 'nano/galore/lr0.02_seed0']
>>> [c.name for c in grid.seed_cells({("nano", "galore"): 0.02})]
['nano/galore/lr0.02_seed1']
>>> grid.sweep_cells()[0].argv()[-3:]
['optimizer.method=galore', 'optimizer.learning_rate=0.01', 'seed=0']
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from lowrank_jax.benchmark.grid_file import read_grid_file
from lowrank_jax.benchmark.sweep import check_rates
from lowrank_jax.models import PRESETS
from lowrank_jax.train.config import TrainConfig, load_config
from lowrank_jax.train.methods import METHODS


@dataclasses.dataclass(frozen=True)
class Cell:
  """One training run of the grid: its config files and overrides, and where it runs."""

  size: str
  method: str
  learning_rate: float | None  # None: the configs' own rate
  seed: int
  configs: tuple[str, ...]
  overrides: tuple[str, ...]
  out_dir: str

  @property
  def name(self) -> str:
    rate = "cfg" if self.learning_rate is None else f"{self.learning_rate:g}"
    return f"{self.size}/{self.method}/lr{rate}_seed{self.seed}"

  @property
  def run_dir(self) -> str:
    return os.path.join(self.out_dir, self.name)

  def argv(self) -> list[str]:
    """The arguments of ``lowrank-jax train`` that run this cell."""
    args = [arg for path in self.configs for arg in ("--config", path)]
    args += [*self.overrides, f"run_dir={self.run_dir}", f"optimizer.method={self.method}"]
    if self.learning_rate is not None:
      args.append(f"optimizer.learning_rate={self.learning_rate:g}")
    return args + [f"seed={self.seed}"]

  def config(self, *extra_overrides: str) -> TrainConfig:
    """The cell's validated config (raises ``ValueError`` naming a bad value)."""
    args = [arg for arg in self.argv() if arg != "--config"]
    return load_config(args[: len(self.configs)], args[len(self.configs) :] + list(extra_overrides))


@dataclasses.dataclass(frozen=True)
class Grid:
  """A benchmark grid; see the module docstring for its YAML form."""

  out_dir: str
  sizes: tuple[str, ...]
  methods: tuple[str, ...]
  seeds: tuple[int, ...] = (0,)
  configs: tuple[str, ...] = ()
  overrides: tuple[str, ...] = ()
  seed_counts: dict = dataclasses.field(default_factory=dict)
  method_overrides: dict = dataclasses.field(default_factory=dict)
  learning_rates: dict = dataclasses.field(default_factory=dict)
  max_extensions: int = 2

  def __post_init__(self):
    for name, values, allowed in (
        ("sizes", self.sizes, PRESETS),
        ("methods", self.methods, METHODS),
    ):
      if not values:
        raise ValueError(f"grid {name} is empty; allowed: {sorted(allowed)}")
      for value in values:
        if value not in allowed:
          raise ValueError(f"grid {name} has unknown {value!r}; allowed: {sorted(allowed)}")
    if (
        not self.seeds
        or len(set(self.seeds)) != len(self.seeds)
        or not all(isinstance(s, int) for s in self.seeds)
    ):
      raise ValueError(f"grid seeds={list(self.seeds)!r} must be distinct integers, at least one")
    for key in ("seed_counts", "method_overrides", "learning_rates"):
      unknown = sorted(set(getattr(self, key)) - set(self.methods))
      if unknown:
        raise ValueError(
            f"grid {key} names {unknown[0]!r}, which is not in methods {list(self.methods)}"
        )
    for method, count in self.seed_counts.items():
      if not isinstance(count, int) or not 1 <= count <= len(self.seeds):
        raise ValueError(
            f"grid seed_counts[{method!r}]={count!r} must be an integer in [1, {len(self.seeds)}]"
        )
    for method, rates in self.learning_rates.items():
      check_rates(method, rates)
    if not isinstance(self.max_extensions, int) or self.max_extensions < 0:
      raise ValueError(f"grid max_extensions={self.max_extensions!r} must be an integer >= 0")

  @classmethod
  def load(cls, path: str, extra_overrides: Sequence[str] = ()) -> Grid:
    """Reads a grid YAML file; ``extra_overrides`` apply to every cell, after the file's."""
    values = read_grid_file(path, cls)  # YAML, keys and types: one line naming the key
    tuples = {
        key: tuple(values[key])
        for key in ("sizes", "methods", "seeds", "configs", "overrides")
        if key in values
    }
    tuples["overrides"] = tuples.get("overrides", ()) + tuple(extra_overrides)
    return cls(
        **{
            **values,
            **tuples,
            "method_overrides": {
                m: tuple(o) for m, o in (values.get("method_overrides") or {}).items()
            },
            "learning_rates": {
                m: tuple(r) for m, r in (values.get("learning_rates") or {}).items()
            },
            "seed_counts": values.get("seed_counts") or {},
        }
    )

  def cell(self, size: str, method: str, learning_rate: float | None, seed: int) -> Cell:
    configs = tuple(path.format(size=size, method=method) for path in self.configs)
    overrides = (f"model.preset={size}", *self.overrides, *self.method_overrides.get(method, ()))
    return Cell(size, method, learning_rate, seed, configs, overrides, self.out_dir)

  def pairs(self) -> list[tuple[str, str]]:
    """Every ``(size, method)``, in the grid's order."""
    return [(size, method) for size in self.sizes for method in self.methods]

  def rates(self, method: str) -> tuple[float | None, ...]:
    """The rates a method's search starts from, ascending (``(None,)``: the config's)."""
    rates = self.learning_rates.get(method)
    return check_rates(method, rates) if rates else (None,)

  def seeds_of(self, method: str) -> tuple[int, ...]:
    """The seeds a method runs at its chosen rate (the first of them also sweeps)."""
    return self.seeds[: self.seed_counts.get(method, len(self.seeds))]

  def sweep_cells(self) -> list[Cell]:
    """The cells that run first: every grid rate of every method, at the first seed (the
    extensions past an edge follow from their results: :mod:`lowrank_jax.benchmark.results`)."""
    return [
        self.cell(size, method, rate, self.seeds[0])
        for size, method in self.pairs()
        for rate in self.rates(method)
    ]

  def seed_cells(self, chosen_rates: dict[tuple[str, str], float | None]) -> list[Cell]:
    """The other seeds of every ``(size, method)``, at its chosen learning rate."""
    return [
        self.cell(size, method, chosen_rates[size, method], seed)
        for size, method in self.pairs()
        if (size, method) in chosen_rates
        for seed in self.seeds_of(method)[1:]
    ]

  def check(self) -> None:
    """Validates every cell's config before anything runs (raises ``ValueError``)."""
    for cell in self.sweep_cells():
      try:
        cell.config()
      except ValueError as error:
        raise ValueError(f"grid cell {cell.name}: {error}") from None
