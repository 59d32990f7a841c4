"""A learning-rate sweep as one program against one run per rate: the train step alone.

The sweep design: ``K`` copies of the model, one per peak learning rate, stacked on a
leading axis and trained by one jitted step, ``jax.vmap`` of the ordinary step over the copies
and their peak rates (the batch shared). It pays where one run leaves the machine idle (a
small model on a GPU, or a step bound by dispatch rather than arithmetic); whether one step of
``K`` copies costs less than ``K`` steps of one is what this script measures, before any trainer
is changed: each method's grid cell of the CPU
protocol (``experiments/grids/cpu_protocol.yaml``), ``K`` rates, the vmapped step against ``K``
separately jitted steps (one per rate), interleaved round robin, medians over a window of
consecutive steps (so the refreshes and restarts every T = 40 steps are inside it). Same
batches for every copy, synthetic tokens (only the time is measured). Written to
``experiments/results/bench/sweep_bench.{md,json}``.

A periodic event inside the step (GaLore's refresh, the restarts) is a ``lax.cond`` on the
optimizer's own step count; under ``vmap`` that count is batched, so the cond becomes a select
that runs both branches every step. The table shows the cost of that for the projected and
restarted methods; the trainer's version must keep the count unbatched (it is the same for
every copy) to avoid it.

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
from lowrank_jax.train.methods import build_optimizer, make_schedule
from lowrank_jax.train.run import Run
from lowrank_jax.train.state import init_train_state
from lowrank_jax.train.step import make_train_step


def _batch(config, seed: int = 0) -> dict:
  shape = (config.data.global_batch_size, config.data.seq_len)
  ids = jax.random.randint(jax.random.key(seed), shape, 3, config.data.vocab_size)
  return {"input_ids": ids, "loss_mask": jnp.ones(shape, jnp.int32)}


def _step(run: Run, peak) -> callable:
  """The train step of ``run`` at peak learning rate ``peak`` (a number or a tracer)."""
  config = run.config
  unit = make_schedule(1.0, config.schedule)  # the paper's schedule is linear in its peak
  tx = build_optimizer(config.optimizer_section(), lambda count: peak * unit(count))
  return make_train_step(run.graphdef, tx, config.schedule.grad_accum)


def contenders(grid: Grid, method: str, rates: int, steps: int):
  """``({"vmapped": run(), "sequential": run()}, losses)``: each run trains ``steps`` steps of
  every rate and leaves the last loss of every rate in ``losses`` under its name."""
  cell = grid.cell(grid.sizes[0], method, None, grid.seeds[0])
  run = Run.without_data(cell.config())
  peaks = jnp.asarray([0.001 * 2**k for k in range(rates)], jnp.float32)
  one = init_train_state(run.model_config, run.tx, run.mesh, 0)
  batch = _batch(run.config)

  swept = jax.jit(
      jax.vmap(lambda state, peak: _step(run, peak)(state, batch), in_axes=(0, 0)),
      donate_argnums=0,
  )
  singles = [jax.jit(_step(run, float(peak)), donate_argnums=0) for peak in peaks]
  stacked = {"state": jax.tree.map(lambda x: jnp.stack([x] * rates), one)}
  apart = {"states": [jax.tree.map(jnp.copy, one) for _ in range(rates)]}

  losses = {}  # the last loss of every rate, both ways: the two must train the same copies

  def vmapped() -> float:
    start = time.perf_counter()
    for _ in range(steps):
      stacked["state"], metrics = swept(stacked["state"], peaks)
    losses["vmapped"] = jax.block_until_ready(metrics["loss"])
    return time.perf_counter() - start

  def sequential() -> float:
    start = time.perf_counter()
    last = []
    for k, single in enumerate(singles):
      for _ in range(steps):
        apart["states"][k], metrics = single(apart["states"][k], batch)
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
      f"A {args.rates}-rate sweep: one vmapped step against one step per rate",
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
