"""Helpers of the fault-injection tests: tiny runs, in this process or in a child to kill."""

import glob
import hashlib
import json
import os
import subprocess
import sys
import time

from tiny_run import TINY

# A constant learning rate makes a run's first steps independent of schedule.total_steps,
# so a child can train "forever" until it is killed and still match a finite reference.
FOREVER = "schedule.total_steps=100000"
CONSTANT = "schedule.kind=constant"


def overrides(run_dir, *extra) -> list[str]:
  return TINY + [f"run_dir={run_dir}", *extra]


def start_training(run_dir, *extra, env=None, flags=()) -> subprocess.Popen:
  """``python -m lowrank_jax train FLAGS`` of the tiny run in a child process (environment
  ``env``, default this process's)."""
  return subprocess.Popen(
      [sys.executable, "-m", "lowrank_jax", "train", *flags, *overrides(run_dir, *extra)],
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      env=env,
  )


def wait_until(process: subprocess.Popen, condition, timeout: float = 240.0) -> None:
  """Polls ``condition()`` every millisecond while ``process`` lives."""
  deadline = time.time() + timeout
  while not condition():
    if process.poll() is not None or time.time() > deadline:
      process.kill()
      raise AssertionError(process.stdout.read().decode()[-3000:])
    time.sleep(0.001)


def logged_steps(run_dir) -> int:
  path = os.path.join(run_dir, "metrics.jsonl")
  return open(path).read().count('"loss"') if os.path.exists(path) else 0


def saves_in_flight(run_dir) -> list[str]:
  """Orbax's temporary directories of checkpoints being written."""
  return glob.glob(os.path.join(run_dir, "checkpoints", "*.orbax-checkpoint-tmp*"))


def committed_steps(run_dir) -> list[int]:
  names = os.listdir(os.path.join(run_dir, "checkpoints"))
  return sorted(int(n) for n in names if n.isdigit())


def loss_records(run_dir) -> list[tuple[int, float]]:
  """Every ``(step, loss)`` line of ``metrics.jsonl``, repeats (re-run steps) included."""
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    return [(r["step"], r["loss"]) for r in map(json.loads, f) if "loss" in r]


def file_states(directory) -> dict[str, tuple[str, int] | None]:
  """``{relative path: (sha256, mtime in ns)}`` of every file under ``directory`` and
  ``{relative path: None}`` of every folder: a command that must leave a run directory as
  it was leaves this the same (no file written, rewritten, touched, moved or added)."""
  states = {}
  for path, digest in file_hashes(directory).items():
    states[path] = (digest, os.stat(os.path.join(directory, path)).st_mtime_ns)
  for path in glob.glob(os.path.join(directory, "**"), recursive=True):
    if os.path.isdir(path):
      states[os.path.relpath(path, directory)] = None
  return states


def file_hashes(directory) -> dict[str, str]:
  """``{relative path: sha256}`` of every file under ``directory``."""
  hashes = {}
  for path in glob.glob(os.path.join(directory, "**"), recursive=True):
    if os.path.isfile(path):
      with open(path, "rb") as f:
        hashes[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return hashes
