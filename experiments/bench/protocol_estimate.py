"""How long a benchmark grid takes on this machine, from a few steps of a few of its methods.

A cell costs ``steps * s + c``: ``s`` seconds a training step (refreshes and restarts
amortised), ``c`` the rest of a cell (compiling, building the data, the final evaluation).
Each measured method trains its grid cell (middle learning rate, first seed) twice, in this
process as the grid's one-worker runner does, for ``n1`` and ``n2`` steps (both multiples of
the grid's period T = 40, so each holds its share of refreshes); then

.. math::  s = (t(n_2) - t(n_1)) / (n_2 - n_1), \\qquad c = t(n_1) - n_1 s.

Time is taken two ways: the wall clock, and this process's CPU time (user + system, every
thread). The machine is shared; other processes slow the wall clock, while the CPU time a step
needs does not shrink when the process has both cores to itself (XLA's idle threads spin under
contention, so it is if anything inflated). On an otherwise quiet 2-core machine the process
runs at least one core's worth, so its wall time is at most its CPU time measured here: the
CPU-time estimate is the upper bound, the wall-clock estimate is what the load of the moment
gives. The central estimate calibrates the CPU time against a run measured on the quiet
machine: the default nano run (``lowrank-jax train``: 250 steps of 4,080 tokens at 5,400
tokens/s, 0.756 s a step, README of 2026-11-28) is timed here the same way, and every CPU time
is scaled by (its quiet wall time) / (its CPU time now).

The grid runs two cells at a time (``--workers 2``): the nano run's CPU time here is about its
wall time on the quiet machine (the calibration line of the report), so one run keeps about one
core busy, and two runs keep both. The grid's time is then the
sum of its cells' times over the workers (a round of the search that ends with one cell left
idles a core for that cell; not counted).

Methods not measured are priced as the measured method of their kind (dense, projected,
factorized, sparse). The grid's cells: every method's grid rates at the first seed, its
extensions (none in the lower estimate, ``max_extensions`` for every method in the upper), and
its other seeds. Written to ``experiments/results/bench/protocol_estimate.{md,json}``.

Usage::

  PYTHONPATH=. python experiments/bench/protocol_estimate.py [--grid experiments/grids/cpu_protocol.yaml]
      [--methods full_rank galore low_rank_restarts sltrain] [--steps 40 120]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

from experiments.bench import timing
from lowrank_jax.benchmark import Grid
from lowrank_jax.train.config import TrainConfig, load_config
from lowrank_jax.train.loop import train
from lowrank_jax.train.methods import get_method

# The default nano run's step on the quiet machine: 250 steps, 1.02M tokens at 5,400 tokens/s.
QUIET_NANO_STEP_S = 1.02e6 / 250 / 5400

# The measured method that prices each kind of method.
KINDS = {
    "dense": "full_rank",
    "projected": "galore",
    "factorized": "low_rank_restarts",
    "sparse": "sltrain",
}


def kind(method: str) -> str:
  linear = get_method(method).linear_kind
  if linear == "sltrain":
    return "sparse"
  if linear != "dense":
    return "factorized"
  return "projected" if method in ("galore", "fira", "apollo", "apollo_mini", "golore") else "dense"


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def timed(config: TrainConfig) -> tuple[float, float]:
  """Wall and CPU seconds of training ``config``."""
  wall, cpu = time.perf_counter(), _cpu_seconds()
  train(config)
  return time.perf_counter() - wall, _cpu_seconds() - cpu


def cell_config(grid: Grid, method: str, steps: int, out_dir: str) -> TrainConfig:
  """The method's cell (middle rate, first seed) cut to ``steps``, in a fresh run directory."""
  rates = grid.rates(method)
  cell = grid.cell(grid.sizes[0], method, rates[len(rates) // 2], grid.seeds[0])
  return cell.config(
      f"schedule.total_steps={steps}",
      f"run_dir={os.path.join(out_dir, f'{method}_{steps}')}",
      "checkpoint.every=0",
      "logging.progress=false",
  )


def step_and_rest(make_config, steps: tuple[int, int]) -> dict:
  """Seconds a step and the rest of a run, wall and CPU, from runs of ``steps[0]`` and
  ``steps[1]`` steps (``make_config(n)`` is the run of ``n``)."""
  (w1, c1), (w2, c2) = (timed(make_config(n)) for n in steps)
  n1, n2 = steps
  per_step = {"wall": (w2 - w1) / (n2 - n1), "cpu": (c2 - c1) / (n2 - n1)}
  return {
      "step_s": per_step,
      "fixed_s": {k: t - n1 * per_step[k] for k, t in (("wall", w1), ("cpu", c1))},
  }


def cell_counts(grid: Grid, method: str) -> tuple[int, int]:
  """Fewest and most cells of ``method``: its grid rates (+ every extension) and other seeds."""
  base = len(grid.rates(method)) * len(grid.sizes) + (len(grid.seeds_of(method)) - 1) * len(
      grid.sizes
  )
  extensions = grid.max_extensions * len(grid.sizes) if len(grid.rates(method)) > 1 else 0
  return base, base + extensions


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--grid", default="experiments/grids/cpu_protocol.yaml")
  parser.add_argument("--methods", nargs="+", default=list(KINDS.values()))
  parser.add_argument("--steps", nargs=2, type=int, default=(40, 120), metavar=("N1", "N2"))
  parser.add_argument("--workers", type=int, default=2, help="cells the grid runs at once")
  parser.add_argument("--nano-steps", nargs=2, type=int, default=(10, 30), metavar=("N1", "N2"))
  args = parser.parse_args()
  grid = Grid.load(args.grid)
  grid.check()
  total_steps = grid.cell(grid.sizes[0], grid.methods[0], None, 0).config().schedule.total_steps
  n1, n2 = args.steps
  load_before = os.getloadavg()
  with tempfile.TemporaryDirectory() as out_dir:
    nano = lambda n: load_config(
        overrides=[
            f"run_dir={out_dir}/nano_{n}",
            f"schedule.total_steps={n}",
            "checkpoint.every=0",
            "logging.progress=false",
            "logging.tensorboard=false",
        ]
    )
    timed(nano(2))  # the tokenizers, data and JAX start-up: not a cell's
    timed(cell_config(grid, "full_rank", 2, out_dir))
    calibration = step_and_rest(nano, tuple(args.nano_steps))
    measured = {
        method: step_and_rest(lambda n, m=method: cell_config(grid, m, n, out_dir), (n1, n2))
        for method in args.methods
    }
  load_after = os.getloadavg()
  priced = {m: measured.get(m) or measured[KINDS[kind(m)]] for m in grid.methods}
  scale = QUIET_NANO_STEP_S / calibration["step_s"]["cpu"]
  estimate = {}
  for clock in ("wall", "cpu", "calibrated"):
    seconds = lambda p, part: p[part]["cpu"] * scale if clock == "calibrated" else p[part][clock]
    cell_s = {
        m: total_steps * seconds(p, "step_s") + seconds(p, "fixed_s") for m, p in priced.items()
    }
    workers = 1 if clock == "wall" else args.workers  # the wall clock: one cell at a time
    estimate[clock] = [
        sum(cell_s[m] * cell_counts(grid, m)[bound] for m in grid.methods) / 60 / workers
        for bound in (0, 1)
    ]
  cells = [sum(cell_counts(grid, m)[bound] for m in grid.methods) for bound in (0, 1)]
  rows = [
      [
          m,
          f"{p['step_s']['wall'] * 1e3:.1f}",
          f"{p['step_s']['cpu'] * 1e3:.1f}",
          f"{p['fixed_s']['wall']:.1f}",
          f"{p['fixed_s']['cpu']:.1f}",
          f"{(total_steps * p['step_s']['cpu'] + p['fixed_s']['cpu']) / 60:.2f}",
      ]
      for m, p in measured.items()
  ]
  notes = [
      f"Grid `{args.grid}`: {len(grid.methods)} methods, {total_steps} steps a cell, "
      f"{cells[0]} to {cells[1]} cells (no extension / every search extended "
      f"{grid.max_extensions} times). Measured from {n1}- and {n2}-step runs of each method's "
      f"cell (load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, "
      f"{os.cpu_count()} CPUs); unmeasured methods priced as their kind's "
      f"({', '.join(f'{k}: {m}' for k, m in KINDS.items())}).",
      "",
      f"Calibration: the nano run's step takes {calibration['step_s']['cpu']:.3f} s of CPU time "
      f"here and {QUIET_NANO_STEP_S:.3f} s of wall time on the quiet machine: scale {scale:.2f}.",
      "",
      f"**Whole grid on the quiet machine, {args.workers} workers (calibrated): "
      f"{estimate['calibrated'][0]:.0f} to {estimate['calibrated'][1]:.0f} min.** CPU time as "
      f"wall time, {args.workers} workers: {estimate['cpu'][0]:.0f} to {estimate['cpu'][1]:.0f} "
      f"min. Wall clock at this load, one cell at a time: {estimate['wall'][0]:.0f} to "
      f"{estimate['wall'][1]:.0f} min.",
  ]
  timing.write_report(
      "protocol_estimate",
      "How long the CPU protocol grid takes",
      notes,
      [
          "method",
          "step ms (wall)",
          "step ms (CPU)",
          "cell rest s (wall)",
          "cell rest s (CPU)",
          "cell min (CPU)",
      ],
      rows,
      {
          "grid": args.grid,
          "steps": [n1, n2],
          "total_steps": total_steps,
          "load_average": [load_before, load_after],
          "measured": measured,
          "calibration": {
              "nano": calibration,
              "quiet_nano_step_s": QUIET_NANO_STEP_S,
              "scale": scale,
          },
          "cells": cells,
          "workers": args.workers,
          "estimate_min": estimate,
      },
  )


if __name__ == "__main__":
  main()
