"""Runs a grid on this host, or writes its cells as jobs for a cluster.

With one worker the cells train one after another in this process (no start-up cost per
cell); with more, each cell is a ``lowrank-jax train`` subprocess, ``workers`` at a time.
Either way a cell's output goes to its run directory's ``train.log``. A finished cell
(``summary.json`` of a complete run) is never run again; an interrupted one resumes from its
newest checkpoint, because a run directory that holds a run always resumes (a grid given
more steps continues its cells: the runs accept the changes that may change mid-run); a
failed one (a marker file ``failed``, e.g. a diverged run) is not retried unless
``retry_failed``. The sweep cells run first, in rounds: each round runs the rates every
search still waits for, and a search whose best rate sits at an edge adds the next rate past
it for the following round (:mod:`lowrank_jax.benchmark.sweep`). Then the other seeds run at
each method's chosen learning rate.
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
from lowrank_jax.benchmark.results import chosen_rates, pending_sweep_cells, read_result, searches
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


def run_cells(
    cells: list[Cell],
    workers: int = 1,
    retry_failed: bool = False,
    desc: str = "grid",
    poll_s: float = 2.0,
    as_one_program: bool = False,
) -> dict[str, int]:
  """Runs the cells that are not finished; returns ``{job name: exit status}`` of the jobs
  run (:mod:`lowrank_jax.benchmark.jobs`; with ``as_one_program`` the fresh rates of a
  search train as one sweep).

  A stage without cells (a grid of one seed has no seed stage) shows no progress bar."""
  if not cells:
    return {}
  todo = [
      c
      for c in cells
      if read_result(c).status not in (("done",) if retry_failed else ("done", "failed"))
  ]
  bar = tqdm.tqdm(
      total=len(cells), initial=len(cells) - len(todo), desc=desc, unit="run", dynamic_ncols=True
  )
  current: list[Job] = []  # the jobs being trained, for the progress bar
  with _showing_progress(bar, current, poll_s):
    statuses = (_in_this_process if workers == 1 else _in_subprocesses)(
        jobs_of(todo, as_one_program), workers, bar, current, poll_s
    )
  bar.close()
  return statuses


def _in_this_process(todo, workers, bar, current, poll_s) -> dict[str, int]:
  del workers, poll_s
  statuses = {}
  for job in todo:
    current[:] = [job]
    with _start(job) as log:
      statuses[job.name] = _train_here(job, log)
    _finish(job, statuses[job.name], bar)
  return statuses


def _in_subprocesses(todo, workers, bar, current, poll_s) -> dict[str, int]:
  statuses = {}
  running: dict[str, tuple[Job, subprocess.Popen, object]] = {}
  try:
    while todo or running:
      while todo and len(running) < workers:
        job = todo.pop(0)
        log = _start(job)
        running[job.name] = (
            job,
            subprocess.Popen(_train_command(job), stdout=log, stderr=subprocess.STDOUT),
            log,
        )
      current[:] = [j for j, _, _ in running.values()]
      time.sleep(poll_s)
      for name, (job, process, log) in list(running.items()):
        if process.poll() is None:
          continue
        log.close()
        del running[name]
        statuses[name] = process.returncode
        _finish(job, process.returncode, bar)
  finally:
    for _, process, log in running.values():  # interrupted: the runs resume next time
      process.terminate()
      process.wait()
      log.close()
  return statuses


def use_compilation_cache(directory: str) -> None:
  """Shares compiled programs between cells (the other seeds recompile nothing), in this
  process and in the subprocesses it starts."""
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", directory)
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run_grid(
    grid: Grid, workers: int = 1, retry_failed: bool = False, as_one_program: bool = False
) -> None:
  """Runs the searches round by round, then the other seeds at each method's chosen rate;
  with ``as_one_program`` each round's fresh rates of a search train as one sweep."""
  grid.check()
  if retry_failed:  # the failed cells of every search rerun once, before the searches go on
    tried = [
        grid.cell(size, method, rate, grid.seeds[0])
        for (size, method), state in searches(grid).items()
        for rate in state.rates
    ]
    run_cells(tried, workers, retry_failed=True, desc="sweep")
  ran: set[str] = set()
  for round_ in itertools.count():
    cells = pending_sweep_cells(grid)
    if not cells or ran.issuperset(c.name for c in cells):  # nothing new (e.g. stopped runs)
      break
    names = {c.name for c in cells}
    run_cells(
        cells, workers, desc="extensions" if round_ else "sweep", as_one_program=as_one_program
    )
    ran.update(names)
  run_cells(grid.seed_cells(chosen_rates(grid)), workers, retry_failed, desc="seeds")


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
