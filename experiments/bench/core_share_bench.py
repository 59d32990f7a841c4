"""What two cores give the CPU protocol: one micro run alone against two runs at once.

A learning-rate sweep as one program (:mod:`lowrank_jax.train.rate_copies`) can only beat one run
per rate where one run leaves the machine idle: on a CPU, where one process's train step does
not use every core. This script measures how much of the 2-core machine one run of the CPU
protocol (``experiments/grids/cpu_protocol.yaml``) already uses. Each trial starts this script
again as worker processes, each timing ``--steps`` steps of the trainer's step of one grid
cell (synthetic tokens, after a warm-up step that compiles), first one worker alone, then
``--workers`` at once sharing every core, then ``--workers`` at once each pinned to its own
cores (:func:`lowrank_jax.benchmark.runner.cpu_blocks`, as the grid runner does); the trials
alternate and the medians are reported. Total tokens/s of ``N`` workers over one worker's
alone is the headroom that training ``N`` rates in one program has over one run at a time
when the step is compute-bound; the grid runner's ``N`` workers already take it. Written to
``experiments/results/bench/core_share_bench.{md,json}``.

Usage::

  PYTHONPATH=. python experiments/bench/core_share_bench.py [--method full_rank] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import jax

from experiments.bench import timing
from lowrank_jax.benchmark import Grid
from lowrank_jax.benchmark.runner import cpu_blocks
from lowrank_jax.train.run import Run


def worker(grid_path: str, method: str, steps: int) -> None:
  """Prints the tokens/s of ``steps`` train steps of the grid's first cell of ``method``."""
  grid = Grid.load(grid_path)
  run = Run.without_data(grid.cell(grid.sizes[0], method, None, grid.seeds[0]).config())
  step, state = run.train_step(), run.init_state()
  batch = timing.synthetic_batch(run.config)
  state, metrics = step(state, batch)  # compiles
  jax.block_until_ready(metrics["loss"])
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics["loss"])
  tokens = steps * batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - 1)
  print(json.dumps({"tokens_per_s": tokens / (time.perf_counter() - start)}), flush=True)


def _at_once(count: int, args, pinned: bool = False) -> list[float]:
  """Each worker's tokens/s, ``count`` of them started together (``pinned``: each on its own
  CPUs, as the grid runner pins its workers)."""
  command = [sys.executable, __file__, "--worker", "--grid", args.grid, "--method", args.method]
  command += ["--steps", str(args.steps)]
  env = {
      **os.environ,
      "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
  }
  processes = [
      subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in range(count)
  ]
  for process, block in zip(processes, cpu_blocks(count) if pinned else []):
    if block is not None:
      os.sched_setaffinity(process.pid, block)
  outputs = [process.communicate()[0] for process in processes]
  if any(process.returncode for process in processes):
    raise RuntimeError(f"a worker failed: exit codes {[p.returncode for p in processes]}")
  return [json.loads(output.strip().splitlines()[-1])["tokens_per_s"] for output in outputs]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--grid", default="experiments/grids/cpu_protocol.yaml")
  parser.add_argument("--method", default="full_rank")
  parser.add_argument("--steps", type=int, default=200, help="timed steps a worker")
  parser.add_argument("--workers", type=int, default=2, help="runs at once in the shared trial")
  parser.add_argument("--trials", type=int, default=3)
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(args.grid, args.method, args.steps)
  alone, shared, pinned = [], [], []
  for _ in range(args.trials):
    alone.append(_at_once(1, args)[0])
    shared.append(sum(_at_once(args.workers, args)))
    pinned.append(sum(_at_once(args.workers, args, pinned=True)))
  alone_median, shared_median = statistics.median(alone), statistics.median(shared)
  pinned_median = statistics.median(pinned)
  gain, pinned_gain = shared_median / alone_median, pinned_median / alone_median
  timing.write_report(
      "core_share_bench",
      f"One {args.method} run of the CPU protocol alone against {args.workers} at once",
      [
          f"{os.cpu_count()} cores; the trainer's step of `{args.grid}`'s {args.method} cell, "
          f"{args.steps} steps a worker after one that compiles, medians of {args.trials} "
          f"alternating trials. Total tokens/s of {args.workers} runs at once over one run's "
          "alone: the headroom of training rates in one program over one run at a time, when "
          f"the step is compute-bound (the grid runner's {args.workers} workers take it)."
      ],
      ["runs at once", "tokens/s, total", f"{args.workers} at once / 1 alone"],
      [
          [1, f"{alone_median:,.0f}", ""],
          [args.workers, f"{shared_median:,.0f}", f"**{gain:.2f}**"],
          [
              f"{args.workers}, each on its own CPUs",
              f"{pinned_median:,.0f}",
              f"**{pinned_gain:.2f}**",
          ],
      ],
      {
          "method": args.method,
          "steps": args.steps,
          "workers": args.workers,
          "alone_tokens_per_s": alone,
          "shared_tokens_per_s": shared,
          "pinned_tokens_per_s": pinned,
          "gain": gain,
          "pinned_gain": pinned_gain,
      },
  )


if __name__ == "__main__":
  main()
