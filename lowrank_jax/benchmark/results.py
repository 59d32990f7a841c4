"""What a grid's runs left behind, gathered into one table per ``(size, method)``.

Each finished cell has ``summary.json`` (validation loss and perplexity, tokens, wall time,
bytes of the trained state) and ``metrics.jsonl`` (the loss curve). A method's row holds
the learning rate chosen by its search (:mod:`lowrank_jax.benchmark.rate_search`: lowest validation
loss at the first seed) and its dense leaves' rate where it has one of its own, whether the
chosen rates sit at an edge of those tried, and the mean and standard deviation of the
validation perplexity over the seeds run at them.

>>> import math
>>> mean_std([10.0, 12.0])
(11.0, 1.4142135623730951)
>>> mean_std([10.0])[1] is None
True
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics

from lowrank_jax.benchmark.grid import Cell, Grid
from lowrank_jax.benchmark.rate_search import GridSearch, search_grid
from lowrank_jax.train.metrics import read_metrics
from lowrank_jax.train.run_dir import RunDir


@dataclasses.dataclass(frozen=True)
class CellResult:
  """A cell and what its run directory says: ``status`` is done, failed, partial or new."""

  cell: Cell
  status: str
  summary: dict

  @property
  def val_loss(self) -> float:
    """The validation loss of a finished run; ``inf`` for any other (never chosen)."""
    loss = self.summary.get("val_loss") if self.status == "done" else None
    return float(loss) if loss is not None and math.isfinite(loss) else math.inf

  def curve(self) -> list[tuple[int, float]]:
    """``(step, training loss)`` pairs from the run's metrics."""
    records = read_metrics(RunDir(self.cell.run_dir).metrics)
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def read_result(cell: Cell) -> CellResult:
  """The state of ``cell``: ``done`` when its summary shows a run completed to the cell's
  steps (a grid given more steps continues its finished cells)."""
  run_dir = RunDir(cell.run_dir)
  if os.path.exists(run_dir.failed_marker):
    return CellResult(cell, "failed", {})
  finished = run_dir.finished_summary(cell.config().schedule.total_steps)
  if finished is not None:
    return CellResult(cell, "done", finished)
  if run_dir.holds_run():
    return CellResult(cell, "partial", run_dir.read_summary() or {})
  return CellResult(cell, "new", {})


def searches(grid: Grid) -> dict[tuple[str, str], GridSearch]:
  """Where each ``(size, method)``'s search stands, from its runs on disk: a search over
  points ``(learning rate, dense rate)``, the dense axis searched where the grid says so and
  otherwise the one rate ``dense_rate_from``'s search chose (``None``: tied to the learning
  rate). A method that waits for that choice is absent until its search has ended."""
  seed = grid.seeds[0]

  def state(size, method, dense_rates):
    def loss(point):
      result = read_result(grid.cell(size, method, point[0], seed, point[1]))
      return None if result.status not in ("done", "failed") else result.val_loss

    return search_grid((grid.rates(method), dense_rates), grid.max_extensions, loss)

  states = {
      (size, method): state(size, method, grid.dense_rates(method) or (None,))
      for size, method in grid.pairs()
      if not grid.waits_for_dense_rate(method)
  }
  for size, method in grid.pairs():
    source = grid.waits_for_dense_rate(method) and states[size, grid.dense_rate_from].best
    if source:
      states[size, method] = state(size, method, (source[1],))
  return {pair: states[pair] for pair in grid.pairs() if pair in states}


def pending_sweep_cells(grid: Grid, states: dict | None = None) -> list[Cell]:
  """The sweep cells to run next: the unfinished points of every search, extensions included
  (``states``: :func:`searches` of ``grid``, when already read)."""
  states = searches(grid) if states is None else states
  return [
      grid.cell(size, method, rate, grid.seeds[0], dense)
      for (size, method), state in states.items()
      for rate, dense in state.pending
  ]


def chosen_rates(grid: Grid, states: dict | None = None) -> dict[tuple[str, str], tuple]:
  """The ``(learning rate, dense rate)`` of each ``(size, method)`` whose search has ended
  with a finished run (a search whose runs all failed has no best)."""
  states = searches(grid) if states is None else states
  return {
      pair: state.best
      for pair, state in states.items()
      if state.best is not None
      and read_result(grid.cell(*pair, state.best[0], grid.seeds[0], state.best[1])).status
      == "done"
  }


def ended_statuses(retry_failed: bool = False) -> tuple[str, ...]:
  """The statuses of a cell that is not run again: done, and failed unless ``retry_failed``."""
  return ("done",) if retry_failed else ("done", "failed")


def ready_cells(grid: Grid, retry_failed: bool = False, states: dict | None = None) -> list[Cell]:
  """Every cell that can run now: the searches' pending rates, then the other seeds of each
  method whose search has ended (finished cells, and failed ones unless ``retry_failed``,
  left out; ``states`` as in :func:`pending_sweep_cells`)."""
  states = searches(grid) if states is None else states
  seeds = grid.seed_cells(chosen_rates(grid, states))
  return pending_sweep_cells(grid, states) + [
      c for c in seeds if read_result(c).status not in ended_statuses(retry_failed)
  ]


def mean_std(values: list[float]) -> tuple[float, float | None]:
  """Mean and sample standard deviation (``None`` for a single value)."""
  return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


@dataclasses.dataclass(frozen=True)
class MethodRow:
  """One ``(size, method)`` of the table: ``runs`` are its finished seeds at the chosen rates,
  ``sweep`` its search's runs, ``at_edge`` whether a searched rate is at an edge of them,
  ``searched`` whether the matrix rate's search tried more than one rate."""

  size: str
  method: str
  learning_rate: float | None
  runs: tuple[CellResult, ...]
  sweep: tuple[CellResult, ...]
  at_edge: bool = False
  dense_learning_rate: float | None = None
  searched: bool = True

  def ppl(self) -> tuple[float, float | None]:
    return mean_std([float(r.summary["val_ppl"]) for r in self.runs])

  def mean_of(self, key: str) -> float:
    return statistics.fmean(float(r.summary[key]) for r in self.runs)

  @property
  def state_bytes(self) -> int:
    """Bytes of the trained state: parameters (with frozen ones) plus optimizer state."""
    summary = self.runs[0].summary
    return int(summary["param_bytes"]) + int(summary["opt_state_bytes"])

  def as_dict(self) -> dict:
    mean, std = self.ppl()
    return {
        "size": self.size,
        "method": self.method,
        "learning_rate": self.learning_rate,
        "dense_learning_rate": self.dense_learning_rate,
        "seeds": [r.cell.seed for r in self.runs],
        "val_ppl": [float(r.summary["val_ppl"]) for r in self.runs],
        "val_ppl_mean": mean,
        "val_ppl_std": std,
        "tokens": self.mean_of("tokens_seen"),
        "wall_time_s": self.mean_of("wall_time_s"),
        "tokens_per_s": self.mean_of("tokens_seen") / self.mean_of("wall_time_s"),
        "lr_at_edge": self.at_edge,
        "lr_searched": self.searched,
        "state_bytes": self.state_bytes,
        "param_bytes": int(self.runs[0].summary["param_bytes"]),
        "opt_state_bytes": int(self.runs[0].summary["opt_state_bytes"]),
        "sweep": {
            self._point_name(r.cell): (
                float(r.summary["val_ppl"]) if r.status == "done" else r.status
            )
            for r in self.sweep
        },
    }

  def _point_name(self, cell: Cell) -> str:
    """``0.01``, ``cfg`` for the config's rate, ``0.01/0.004`` where the dense rate varies."""
    name = "cfg" if cell.learning_rate is None else f"{cell.learning_rate:g}"
    if len({r.cell.dense_learning_rate for r in self.sweep}) > 1:
      name += f"/{cell.dense_learning_rate:g}"
    return name


def method_rows(grid: Grid) -> list[MethodRow]:
  """Rows of every ``(size, method)`` with at least one finished run at its chosen rate."""
  states = searches(grid)
  chosen = chosen_rates(grid)
  rows = []
  for size, method in grid.pairs():
    if (size, method) not in chosen:
      continue
    (rate, dense), state = chosen[size, method], states[size, method]
    cells = [grid.cell(size, method, rate, seed, dense) for seed in grid.seeds_of(method)]
    runs = tuple(r for r in map(read_result, cells) if r.status == "done")
    sweep = tuple(
        read_result(grid.cell(size, method, r, grid.seeds[0], d)) for r, d in state.points
    )
    dense_searched = grid.dense_rates(method) is not None
    at_edge = state.at_edge[0] or (dense_searched and state.at_edge[1])
    searched = len(state.axes[0]) > 1
    rows.append(MethodRow(size, method, rate, runs, sweep, at_edge, dense, searched))
  return rows
