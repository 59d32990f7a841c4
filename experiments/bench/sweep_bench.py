"""A learning-rate sweep as one program against one run per rate: the train step alone.

``lowrank-jax train`` with ``optimizer.learning_rates`` trains ``K`` copies of the model, one
per peak rate, by one jitted step (:mod:`lowrank_jax.train.rate_copies`: ``jax.vmap`` of the ordinary
step over the copies, the batch and the update counts shared, so GaLore's refresh and the
restarts stay conditionals). Whether one step of ``K`` copies costs less than ``K`` steps of
one is what this script measures: each method's grid cell of the CPU protocol
(``experiments/grids/cpu_protocol.yaml``), ``K`` rates, the trainer's sweep step against the
trainer's step of ``K`` separate runs (one per rate), interleaved round robin, medians over a
window of consecutive steps (so the refreshes and restarts every T = 40 steps are inside it).
The same batches for every copy, synthetic tokens (only the time is measured). Written to
``experiments/results/bench/sweep_bench.{md,json}``.

Usage::

  PYTHONPATH=. python experiments/bench/sweep_bench.py [--methods full_rank galore] [--steps 40]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from experiments.bench import timing
from lowrank_jax.benchmark import Grid
from lowrank_jax.train.run import Run


def contenders(grid: Grid, method: str, rates: int, steps: int):
  """``({"vmapped": run(), "sequential": run()}, losses)``: each run trains ``steps`` steps of
  every rate and leaves the last loss of every rate in ``losses`` under its name."""
  cell = grid.cell(grid.sizes[0], method, None, grid.seeds[0])
  peaks = [0.001 * 2**k for k in range(rates)]
  listed = ",".join(f"{peak:g}" for peak in peaks)
  swept = Run.without_data(cell.config(f"optimizer.learning_rates=[{listed}]"))
  apart = [Run.without_data(cell.config(f"optimizer.learning_rate={peak:g}")) for peak in peaks]
  batch = timing.synthetic_batch(swept.config)
  sweep_step, single_steps = swept.train_step(), [run.train_step() for run in apart]
  states = {"sweep": swept.init_state(), "apart": [run.init_state() for run in apart]}
  losses = {}  # the last loss of every rate, both ways: the two must train the same copies

  def vmapped() -> float:
    start = time.perf_counter()
    for _ in range(steps):
      states["sweep"], metrics = sweep_step(states["sweep"], batch)
    losses["vmapped"] = jax.block_until_ready(metrics["loss"])
    return time.perf_counter() - start

  def sequential() -> float:
    start = time.perf_counter()
    last = []
    for k, single in enumerate(single_steps):
      for _ in range(steps):
        states["apart"][k], metrics = single(states["apart"][k], batch)
      last.append(metrics["loss"])
    losses["sequential"] = jax.block_until_ready(jnp.stack(last))
    return time.perf_counter() - start

  return {"vmapped": vmapped, "sequential": sequential}, losses


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--grid", default="experiments/grids/cpu_protocol.yaml")
  parser.add_argument("--methods", nargs="+", default=["full_rank", "galore", "low_rank_restarts"])
  parser.add_argument("--rates", type=int, default=4)
  parser.add_argument("--steps", type=int, default=40, help="steps a timed window")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  grid = Grid.load(args.grid)
  rows, record = [], {}
  for method in args.methods:
    runs, losses = contenders(grid, method, args.rates, args.steps)
    medians = timing.interleaved_medians(runs, args.repeats, warmup=1)
    speedup = medians["sequential"] / medians["vmapped"]
    gap = float(jnp.max(jnp.abs(losses["vmapped"] / losses["sequential"] - 1)))
    record[method] = {**medians, "speedup": speedup, "loss_relative_gap": gap}
    rows.append(
        [
            method,
            f"{medians['vmapped'] / args.steps * 1e3:.1f}",
            f"{medians['sequential'] / args.steps * 1e3:.1f}",
            f"**{speedup:.2f}**",
            f"{gap:.1e}",
        ]
    )
  timing.write_report(
      "sweep_bench",
      f"A {args.rates}-rate sweep: the trainer's sweep step against one step per rate",
      [
          f"The {grid.sizes[0]} cells of `{args.grid}`, {args.rates} peak rates, medians of "
          f"{args.repeats} windows of {args.steps} steps (interleaved); ms for all "
          f"{args.rates} rates a step. Target: sequential / vmapped >= 1.5. Loss gap: the "
          "largest relative difference of a rate's last loss between the two (the same training)."
      ],
      ["method", "vmapped ms", "sequential ms", "sequential / vmapped", "loss gap"],
      rows,
      {"rates": args.rates, "steps": args.steps, "repeats": args.repeats, "methods": record},
  )


if __name__ == "__main__":
  main()
