"""Runs a grid on this host, or writes its cells as jobs for a cluster.

With one worker the cells train one after another in this process (no start-up cost per
cell); with more, each cell is a ``lowrank-jax train`` subprocess, ``workers`` at a time.
Either way a cell's output goes to its run directory's ``train.log``. A finished cell
(``summary.json`` of a complete run) is never run again; an interrupted one resumes from its
newest checkpoint, because a run directory that holds a run always resumes (a grid given
more steps continues its cells: the runs accept the changes that may change mid-run); a
failed one (a marker file ``failed``, e.g. a diverged run) is not retried unless
``retry_failed``. A run starts as soon as what it depends on has ended: every search's
first rates at once; the next rate past an edge when the search's best sits there
(:mod:`lowrank_jax.benchmark.rate_search`); a method's other seeds, at its chosen learning rate,
when its search has ended. The runner asks which runs are ready each time one ends, so a
worker never waits for another method's runs; it starts the searches' runs first (they
unlock the rest). With several workers on a host with as many CPUs, each worker's runs keep
to their own CPUs (:func:`cpu_blocks`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import subprocess
import sys
import threading
import time

import jax
import tqdm

from lowrank_jax import errors
from lowrank_jax.benchmark.grid import Cell, Grid
from lowrank_jax.benchmark.jobs import Job, jobs_of
from lowrank_jax.benchmark.results import (
    chosen_rates,
    ended_statuses,
    pending_sweep_cells,
    read_result,
    ready_cells,
    searches,
)
from lowrank_jax.train.loop import train
from lowrank_jax.train.metrics import format_summary, read_metrics
from lowrank_jax.train.run_dir import RunDir

QUIET = "logging.progress=false"  # a log file needs no progress bar
ACCEPT_CHANGES = "--accept-changes"  # a grid given more steps continues its cells


def _train_command(job: Job) -> list[str]:
  return [sys.executable, "-m", "lowrank_jax", "train", ACCEPT_CHANGES, *job.argv(), QUIET]


def _latest(job: Job) -> str:
  """The job's newest logged step: its loss (the lowest of a sweep's copies) and tokens/s,
  for the grid's progress bar."""
  metrics = (
      [job.copy_dir(cell).metrics for cell in job.cells]
      if job.is_sweep
      else [RunDir(job.run_dir).metrics]
  )
  lasts = [[r for r in read_metrics(path) if "loss" in r][-1:] for path in metrics]
  lasts = [last[0] for last in lasts if last]
  if not lasts:
    return job.name
  best = min(lasts, key=lambda r: r["loss"])
  return f"{job.name} step {best['step']} loss {best['loss']:.3f} {best['tokens_per_s']:,.0f} tok/s"


@contextlib.contextmanager
def _showing_progress(bar, cells, poll_s: float):
  """Refreshes the bar's postfix with the running cells' latest steps every ``poll_s``."""
  stop = threading.Event()

  def refresh():
    while not stop.wait(poll_s):
      bar.set_postfix_str(" | ".join(_latest(c) for c in list(cells)))

  thread = threading.Thread(target=refresh, daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()


def _start(job: Job):
  """Clears an old failure marker and opens the job's log (appending: a resumed run)."""
  run_dir = RunDir(job.run_dir)
  os.makedirs(run_dir.path, exist_ok=True)
  if os.path.exists(run_dir.failed_marker):
    os.remove(run_dir.failed_marker)
  return open(run_dir.train_log, "a")


def _finish(job: Job, status: int, bar) -> None:
  if status:
    run_dir = RunDir(job.run_dir)
    with open(run_dir.failed_marker, "w") as f:
      f.write(f"exit status {status}; see {run_dir.train_log}\n")
    bar.write(f"{job.name}: failed (exit status {status}), see {run_dir.train_log}")
  job.publish()
  bar.update(len(job.cells))


def _train_here(job: Job, log) -> int:
  """Trains ``job`` in this process; the exit status ``lowrank-jax train`` would give."""
  with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    try:
      summary = train(job.config(QUIET), accept_changes=True)
    except errors.REPORTED as error:
      return errors.report(error)
    print(format_summary(summary), end="")
  if summary["stopped_by"] is not None:  # SIGINT/SIGTERM: saved; the grid stops here
    raise KeyboardInterrupt(f"{job.name} stopped by {summary['stopped_by']}")
  return errors.DONE


def cpu_blocks(workers: int) -> list[frozenset[int] | None]:
  """The CPUs each of ``workers`` subprocesses is pinned to: this process's CPUs split into
  ``workers`` equal blocks (``None``: not pinned, when there are fewer CPUs than workers or
  the platform cannot pin).

  Pinned, two runs on a 2-core machine each keep one core and its caches instead of
  migrating between both, which makes about 8% more tokens/s in all
  (experiments/results/bench/core_share_bench.md); the numbers they compute are the same.

  >>> blocks = cpu_blocks(1)
  >>> blocks == [None] or blocks[0] == frozenset(os.sched_getaffinity(0))
  True
  """
  if not hasattr(os, "sched_setaffinity"):
    return [None] * workers
  cpus = sorted(os.sched_getaffinity(0))
  share = len(cpus) // workers
  if not share:
    return [None] * workers
  return [frozenset(cpus[i * share : (i + 1) * share]) for i in range(workers)]


def run_cells(
    cells: list[Cell],
    workers: int = 1,
    retry_failed: bool = False,
    desc: str = "grid",
    poll_s: float = 2.0,
    as_one_program: bool = False,
    pin_workers: bool = True,
) -> dict[str, int]:
  """Runs the cells that are not finished; returns ``{job name: exit status}`` of the jobs
  run (:mod:`lowrank_jax.benchmark.jobs`; with ``as_one_program`` the fresh rates of a
  search train as one sweep; ``pin_workers``: each subprocess on its own CPUs,
  :func:`cpu_blocks`).

  No cells, no progress bar."""
  if not cells:
    return {}
  todo = [c for c in cells if read_result(c).status not in ended_statuses(retry_failed)]
  jobs = jobs_of(todo, as_one_program)
  bar = tqdm.tqdm(
      total=len(cells), initial=len(cells) - len(todo), desc=desc, unit="run", dynamic_ncols=True
  )
  statuses = _run_jobs(lambda: jobs, workers, bar, poll_s, pin_workers)
  bar.close()
  return statuses


def _run_jobs(ready, workers: int, bar, poll_s: float, pin_workers: bool) -> dict[str, int]:
  """Runs the jobs ``ready()`` returns, ``workers`` at a time, each once, asking again
  whenever one ends (its results may make new ones ready) until none is ready or running."""
  current: list[Job] = []  # the jobs being trained, for the progress bar
  started: set[str] = set()  # the cells of every job started

  def next_jobs():
    for job in ready():
      if started.isdisjoint(cell.name for cell in job.cells):
        started.update(cell.name for cell in job.cells)
        yield job

  with _showing_progress(bar, current, poll_s):
    if workers == 1:
      return _in_this_process(next_jobs, bar, current)
    blocks = cpu_blocks(workers) if pin_workers else [None] * workers
    return _in_subprocesses(next_jobs, blocks, bar, current, poll_s)


def _in_this_process(next_jobs, bar, current) -> dict[str, int]:
  statuses = {}
  while (job := next(next_jobs(), None)) is not None:
    current[:] = [job]
    with _start(job) as log:
      statuses[job.name] = _train_here(job, log)
    _finish(job, statuses[job.name], bar)
  return statuses


def _in_subprocesses(next_jobs, blocks, bar, current, poll_s) -> dict[str, int]:
  """Runs the jobs as subprocesses, one on each CPU block of ``blocks`` at a time."""
  statuses = {}
  running: dict[str, tuple[Job, subprocess.Popen, object, frozenset[int] | None]] = {}
  free, ended = list(blocks), True
  try:
    while True:
      if ended:  # a job's results can make others ready: ask only then (it reads every run)
        jobs = itertools.islice(next_jobs(), len(free))
        for job, block in zip(jobs, list(free)):
          free.remove(block)
          log = _start(job)
          process = subprocess.Popen(_train_command(job), stdout=log, stderr=subprocess.STDOUT)
          if block is not None:  # before the child starts its threads: they inherit it
            os.sched_setaffinity(process.pid, block)
          running[job.name] = (job, process, log, block)
      if not running:
        return statuses
      current[:] = [job for job, _, _, _ in running.values()]
      time.sleep(poll_s)
      ended = False
      for name, (job, process, log, block) in list(running.items()):
        if process.poll() is None:
          continue
        log.close()
        del running[name]
        free.append(block)
        statuses[name] = process.returncode
        _finish(job, process.returncode, bar)
        ended = True
  finally:
    for _, process, log, _ in running.values():  # interrupted: the runs resume next time
      process.terminate()
      process.wait()
      log.close()


def use_compilation_cache(directory: str) -> None:
  """Shares compiled programs between cells (the other seeds recompile nothing), in this
  process and in the subprocesses it starts."""
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", directory)
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run_grid(
    grid: Grid,
    workers: int = 1,
    retry_failed: bool = False,
    as_one_program: bool = False,
    pin_workers: bool = True,
) -> None:
  """Runs every search and then each method's other seeds at its chosen rate, each run as
  soon as the runs it depends on have ended (an extension when its search's rates have, a
  method's seeds when its search has), so no worker waits for another method's runs; with
  ``as_one_program`` a search's fresh rates train as one sweep, with ``pin_workers`` each
  subprocess on its own CPUs (:func:`cpu_blocks`)."""
  grid.check()
  if retry_failed:  # the failed cells of every search rerun once, before the searches go on
    tried = [
        grid.cell(size, method, rate, grid.seeds[0], dense)
        for (size, method), state in searches(grid).items()
        for rate, dense in state.points
    ]
    run_cells(tried, workers, retry_failed=True, desc="sweep", pin_workers=pin_workers)
  seeds_each = sum(len(grid.seeds_of(method)) - 1 for _, method in grid.pairs())
  states = searches(grid)
  ended = sum(len(state.points) - len(state.pending) for state in states.values()) + sum(
      read_result(c).status in ended_statuses(retry_failed)
      for c in grid.seed_cells(chosen_rates(grid, states))
  )
  bar = tqdm.tqdm(total=ended, initial=ended, desc="grid", unit="run", dynamic_ncols=True)

  def ready() -> list[Job]:
    states = searches(grid)
    bar.total = sum(len(s.points) for s in states.values()) + seeds_each  # grows by extensions
    bar.refresh()
    return jobs_of(ready_cells(grid, retry_failed, states), as_one_program)

  _run_jobs(ready, workers, bar, 2.0, pin_workers)
  bar.close()


def job_lines(grid: Grid) -> tuple[str, list[str]]:
  """The stage still to run and one shell command per unfinished cell of it.

  The extensions of a search and the seed cells need the sweep's results, so while any
  search waits for a run the jobs are those runs; run ``--emit-jobs`` again after they end
  to get the next round's, and finally the seeds'.
  """
  grid.check()
  sweep = pending_sweep_cells(grid)
  stage, cells = (
      ("sweep", sweep)
      if sweep
      else (
          "seeds",
          [c for c in grid.seed_cells(chosen_rates(grid)) if read_result(c).status != "done"],
      )
  )
  return stage, [shlex.join(["lowrank-jax", "train", ACCEPT_CHANGES, *c.argv()]) for c in cells]
