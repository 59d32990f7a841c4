"""A benchmark grid: methods x sizes x learning rates x seeds, each cell one training run.

A grid is a YAML file (``experiments/grids/*.yaml``)::

    out_dir: runs/nano_grid          # one run directory per cell below it
    sizes: [nano]                    # model presets
    methods: [full_rank, galore]     # names of lowrank_jax.train.methods.METHODS
    method_modules: []               # modules registering methods defined outside the package
    seeds: [0, 1, 2]
    seed_counts: {galore: 1}         # a method's first n seeds; absent: all of them
    configs: []                      # YAML files per cell; {size} and {method} are filled in
    overrides: [schedule.total_steps=100]       # dotted overrides of every cell
    method_overrides: {galore: [optimizer.options.rank=32]}
    learning_rates: {galore: [0.005, 0.01, 0.02]}  # the sweep; absent: the config's rate
    dense_learning_rates: {}         # a second axis: the dense leaves' rate, searched too
    dense_rate_from: null            # a method whose chosen dense rate every other one uses
    max_extensions: 2                # rates a sweep may add past its edges (per axis)
    data_seed: 42                    # a cell's data order seed is data_seed + its seed

A method with several learning rates is searched at the first seed
(:mod:`lowrank_jax.benchmark.rate_search`: neighbours at most 2x apart, extended past an edge
until the best is interior); its other seeds then run at the rate with the lowest validation
loss (the paper tuned each method's rate, arXiv 2505.22922, experimental protocol).

Per parameter group: a method in ``dense_learning_rates`` searches the rate of its dense
leaves (``optimizer.dense_learning_rate``: embeddings, lm_head, norms) as a second axis,
every combination a run, each axis bracketed on its own (full rank's two-dimensional search);
with ``dense_rate_from: full_rank``, every other method runs with the dense rate that search
chose, and starts once it has ended (the dense leaves equalised across methods).

A seed varies the initialisation and the data order: a cell's ``data.seed`` is
``data_seed + seed``, so the spread over seeds is the run-to-run spread. A cell is
``(size, method, learning_rate, seed)`` (and its dense rate, when it has one); it sets
``model.preset`` to its size after the config files and before the overrides, and its run
directory is ``out_dir/size/method/lr<rate>_seed<seed>`` (``lr<rate>_dense<rate>_seed<seed>``):

>>> grid = Grid(out_dir="runs/g", sizes=("nano",), methods=("galore",), seeds=(0, 1),
...             learning_rates={"galore": (0.01, 0.02)})
>>> [c.name for c in grid.sweep_cells()]
['nano/galore/lr0.01_seed0', 'nano/galore/lr0.02_seed0']
>>> [c.name for c in grid.seed_cells({("nano", "galore"): (0.02, None)})]
['nano/galore/lr0.02_seed1']
>>> grid.sweep_cells()[0].argv()[-4:]
['optimizer.method=galore', 'optimizer.learning_rate=0.01', 'seed=0', 'data.seed=42']
>>> grid.cell("nano", "full_rank", 0.002, 1, dense_learning_rate=0.008).argv()[-4:]
['optimizer.learning_rate=0.002', 'optimizer.dense_learning_rate=0.008', 'seed=1', 'data.seed=43']
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from lowrank_jax.benchmark.grid_file import read_grid_file
from lowrank_jax.benchmark.rate_search import check_rates
from lowrank_jax.models import PRESETS
from lowrank_jax.train.config import TrainConfig, load_config
from lowrank_jax.train.methods import METHODS, known_method
from lowrank_jax.train.methods.registration import import_method_modules

DATA_SEED = 42  # the data order of seed 0: the trainer's default data.seed


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
  data_seed: int = DATA_SEED
  dense_learning_rate: float | None = None  # None: the method's own (tied) rate

  @property
  def rates(self) -> tuple[float | None, float | None]:
    """``(learning_rate, dense_learning_rate)``: the point of a search this cell runs."""
    return self.learning_rate, self.dense_learning_rate

  @property
  def name(self) -> str:
    rate = "cfg" if self.learning_rate is None else f"{self.learning_rate:g}"
    dense = "" if self.dense_learning_rate is None else f"_dense{self.dense_learning_rate:g}"
    return f"{self.size}/{self.method}/lr{rate}{dense}_seed{self.seed}"

  @property
  def run_dir(self) -> str:
    return os.path.join(self.out_dir, self.name)

  def argv(self) -> list[str]:
    """The arguments of ``lowrank-jax train`` that run this cell."""
    args = [arg for path in self.configs for arg in ("--config", path)]
    args += [*self.overrides, f"run_dir={self.run_dir}", f"optimizer.method={self.method}"]
    if self.learning_rate is not None:
      args.append(f"optimizer.learning_rate={self.learning_rate:g}")
    if self.dense_learning_rate is not None:
      args.append(f"optimizer.dense_learning_rate={self.dense_learning_rate:g}")
    return args + [f"seed={self.seed}", f"data.seed={self.data_seed + self.seed}"]

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
  dense_learning_rates: dict = dataclasses.field(default_factory=dict)
  dense_rate_from: str | None = None
  max_extensions: int = 2
  data_seed: int = DATA_SEED
  method_modules: tuple[str, ...] = ()

  def __post_init__(self):
    import_method_modules(self.method_modules, "grid method_modules")
    for name, values, known, allowed in (
        ("sizes", self.sizes, PRESETS.__contains__, PRESETS),
        ("methods", self.methods, known_method, METHODS),  # an entry point's method loads
    ):
      if not values:
        raise ValueError(f"grid {name} is empty; allowed: {sorted(allowed)}")
      for value in values:
        if not known(value):
          raise ValueError(f"grid {name} has unknown {value!r}; allowed: {sorted(allowed)}")
    if (
        not self.seeds
        or len(set(self.seeds)) != len(self.seeds)
        or not all(isinstance(s, int) for s in self.seeds)
    ):
      raise ValueError(f"grid seeds={list(self.seeds)!r} must be distinct integers, at least one")
    for key in ("seed_counts", "method_overrides", "learning_rates", "dense_learning_rates"):
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
    for method, rates in self.dense_learning_rates.items():
      check_rates(method, rates)
    if self.dense_rate_from is not None and self.dense_rate_from not in self.dense_learning_rates:
      raise ValueError(
          f"grid dense_rate_from={self.dense_rate_from!r} must be a method of "
          f"dense_learning_rates {sorted(self.dense_learning_rates)}"
      )
    seeded = [o for o in self.overrides if o.startswith("data.seed=")]
    if seeded:
      raise ValueError(
          f"grid override {seeded[0]!r}: a cell's data order seed is data_seed + its seed; "
          "set the grid's data_seed instead"
      )
    if not isinstance(self.data_seed, int) or self.data_seed < 0:
      raise ValueError(f"grid data_seed={self.data_seed!r} must be an integer >= 0")
    if not isinstance(self.max_extensions, int) or self.max_extensions < 0:
      raise ValueError(f"grid max_extensions={self.max_extensions!r} must be an integer >= 0")

  @classmethod
  def load(cls, path: str, extra_overrides: Sequence[str] = ()) -> Grid:
    """Reads a grid YAML file; ``extra_overrides`` apply to every cell, after the file's.

    A file with ``extends: <grid file>`` is that grid with the file's keys in place of its
    own (each key replaced whole), so a protocol's variant states only what differs.
    """
    values = read_grid_file(path, cls)  # YAML, keys and types: one line naming the key
    tuples = {
        key: tuple(values[key])
        for key in ("sizes", "methods", "seeds", "configs", "overrides", "method_modules")
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
            **{
                key: {m: tuple(r) for m, r in (values.get(key) or {}).items()}
                for key in ("learning_rates", "dense_learning_rates")
            },
            "seed_counts": values.get("seed_counts") or {},
        }
    )

  def cell(
      self,
      size: str,
      method: str,
      learning_rate: float | None,
      seed: int,
      dense_learning_rate: float | None = None,
  ) -> Cell:
    configs = tuple(path.format(size=size, method=method) for path in self.configs)
    overrides = (f"model.preset={size}", *self.overrides, *self.method_overrides.get(method, ()))
    if self.method_modules:  # each cell's `train` process imports them too
      overrides += (f"optimizer.method_modules=[{','.join(self.method_modules)}]",)
    return Cell(
        size,
        method,
        learning_rate,
        seed,
        configs,
        overrides,
        self.out_dir,
        self.data_seed,
        dense_learning_rate,
    )

  def pairs(self) -> list[tuple[str, str]]:
    """Every ``(size, method)``, in the grid's order."""
    return [(size, method) for size in self.sizes for method in self.methods]

  def rates(self, method: str) -> tuple[float | None, ...]:
    """The rates a method's search starts from, ascending (``(None,)``: the config's)."""
    rates = self.learning_rates.get(method)
    return check_rates(method, rates) if rates else (None,)

  def dense_rates(self, method: str) -> tuple[float, ...] | None:
    """The dense leaves' rates a method searches, ascending (``None``: not an axis)."""
    rates = self.dense_learning_rates.get(method)
    return check_rates(method, rates) if rates else None

  def waits_for_dense_rate(self, method: str) -> bool:
    """Whether ``method`` runs at the dense rate another method's search chooses."""
    return self.dense_rate_from is not None and method not in self.dense_learning_rates

  def seeds_of(self, method: str) -> tuple[int, ...]:
    """The seeds a method runs at its chosen rate (the first of them also sweeps)."""
    return self.seeds[: self.seed_counts.get(method, len(self.seeds))]

  def sweep_cells(self) -> list[Cell]:
    """The cells that run first: every grid rate of every method that waits for no other,
    at the first seed (the extensions past an edge, and the methods that wait, follow from
    the results: :mod:`lowrank_jax.benchmark.results`)."""
    return [
        self.cell(size, method, rate, self.seeds[0], dense)
        for size, method in self.pairs()
        if not self.waits_for_dense_rate(method)
        for rate in self.rates(method)
        for dense in self.dense_rates(method) or (None,)
    ]

  def seed_cells(self, chosen_rates: dict[tuple[str, str], tuple]) -> list[Cell]:
    """The other seeds of every ``(size, method)``, at its chosen ``(learning rate, dense
    rate)``."""
    cells = []
    for size, method in self.pairs():
      if (size, method) in chosen_rates:
        rate, dense = chosen_rates[size, method]
        cells += [self.cell(size, method, rate, seed, dense) for seed in self.seeds_of(method)[1:]]
    return cells

  def check(self) -> None:
    """Validates every cell's config before anything runs (raises ``ValueError``); a method
    that waits for a dense rate is checked at its grid's first one."""
    waiting = [
        self.cell(size, method, self.rates(method)[0], self.seeds[0], dense)
        for size, method in self.pairs()
        if self.waits_for_dense_rate(method)
        for dense in self.dense_rates(self.dense_rate_from)[:1]
    ]
    for cell in self.sweep_cells() + waiting:
      try:
        cell.config()
      except ValueError as error:
        raise ValueError(f"grid cell {cell.name}: {error}") from None
