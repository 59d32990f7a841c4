"""Shared helpers of the benchmarks in ``experiments/bench``: timing, floors, reports.

Every benchmark measures its contenders side by side in one process (the machines
are shared and noisy), takes medians, and reports ratios next to the absolute
numbers. JAX and PyTorch functions are timed alike: :func:`median_seconds` calls
``sync`` on the result (``jax.block_until_ready`` by default; PyTorch on CPU is
synchronous).

>>> seconds = median_seconds(lambda: sum(range(1000)), repeats=3, sync=lambda x: x)
>>> seconds > 0
True
>>> markdown_table(["a", "b"], [[1, 2.5]])
'| a | b |\\n|---|---|\\n| 1 | 2.5 |'
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from lowrank_jax.optim.linalg import single_threaded_lapack

# Every benchmark owns its process, as the lowrank-jax command does: LAPACK (SciPy's OpenBLAS,
# which jaxlib and optax.contrib.galore's SVDs call) on one thread, before any contender runs.
single_threaded_lapack()

RESULTS = os.path.join(os.path.dirname(__file__), "..", "results", "bench")


def synthetic_batch(config, seed: int = 0) -> dict:
  """A batch of uniform random tokens of ``config``'s global batch and sequence length, for
  benchmarks that measure only the time of a step."""
  shape = (config.data.global_batch_size, config.data.seq_len)
  ids = jax.random.randint(jax.random.key(seed), shape, 3, config.data.vocab_size)
  return {"input_ids": ids, "loss_mask": jnp.ones(shape, jnp.int32)}


def median_seconds(
    fn: Callable[[], object],
    repeats: int,
    warmup: int = 0,
    sync: Callable[[object], object] = jax.block_until_ready,
) -> float:
  """Median wall time of ``repeats`` synced calls of ``fn()`` after ``warmup`` calls."""
  run = timed(fn, sync)
  return statistics.median([run() for _ in range(warmup + repeats)][warmup:])


def timed(
    fn: Callable[[], object], sync: Callable[[object], object] = jax.block_until_ready
) -> Callable[[], float]:
  """``fn`` made into a function returning the seconds one synced call took."""

  def run() -> float:
    start = time.perf_counter()
    sync(fn())
    return time.perf_counter() - start

  return run


def interleaved_medians(
    runs: dict[str, Callable[[], float]], repeats: int, warmup: int = 0
) -> dict[str, float]:
  """Median seconds of every ``run()`` (each returns its own seconds), taken round robin.

  Round ``i`` calls every run once, so a change of the machine's load hits every
  contender alike (the ratios stay fair where sequential blocks would not).

  >>> medians = interleaved_medians({"a": lambda: 1.0, "b": lambda: 3.0}, repeats=3)
  >>> medians
  {'a': 1.0, 'b': 3.0}
  """
  samples: dict[str, list[float]] = {name: [] for name in runs}
  for round_index in range(warmup + repeats):
    for name, run in runs.items():
      seconds = run()
      if round_index >= warmup:
        samples[name].append(seconds)
  return {name: statistics.median(times) for name, times in samples.items()}


def matmul_products(
    pairs: Sequence[tuple[tuple[int, int], tuple[int, int]]], dtype=jnp.float32
) -> Callable[[], float]:
  """A timed run (see :func:`timed`) of the products ``A @ B`` of the given shapes, as one
  jitted function (compiled here): the floor of an update bound by those products."""
  keys = jax.random.split(jax.random.key(0), 2 * len(pairs))
  operands = [
      (jax.random.normal(ka, a, dtype), jax.random.normal(kb, b, dtype))
      for (a, b), ka, kb in zip(pairs, keys[::2], keys[1::2])
  ]
  products = jax.jit(lambda ops: [a @ b for a, b in ops])
  jax.block_until_ready(products(operands))
  return timed(lambda: products(operands))


def torch_device():
  """The PyTorch device the references run on: the GPU when there is one, else the CPU."""
  import torch

  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_sync(result=None):
  """Waits for queued GPU work (PyTorch's CUDA calls are asynchronous); returns ``result``."""
  import torch

  if torch.cuda.is_available():
    torch.cuda.synchronize()
  return result


def environment() -> dict:
  """Versions and the host, for the JSON record."""
  import numpy

  versions = {"jax": jax.__version__, "numpy": numpy.__version__}
  for name in ("torch", "optax", "transformers"):
    try:
      versions[name] = __import__(name).__version__
    except ImportError:
      pass
  return {
      "host": platform.node(),
      "machine": platform.machine(),
      "cpus": os.cpu_count(),
      "device": str(jax.devices()[0].device_kind),
      "versions": versions,
      "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
  }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  """A Markdown table; floats keep their ``str`` (format them before)."""
  lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
  return "\n".join(lines)


def write_report(
    name: str,
    title: str,
    notes: Sequence[str],
    header: Sequence[str],
    rows: Sequence[Sequence],
    record: dict,
) -> str:
  """Prints a Markdown report (``## title``, the notes, the table) and writes it and
  ``record`` (plus the environment) under ``experiments/results/bench/<name>.{md,json}``;
  returns the JSON path."""
  markdown = "\n".join([f"## {title}", "", *notes, "", markdown_table(header, rows)])
  print(markdown, flush=True)
  os.makedirs(RESULTS, exist_ok=True)
  base = os.path.join(RESULTS, name)
  with open(base + ".md", "w") as handle:
    handle.write(markdown + "\n")
  with open(base + ".json", "w") as handle:
    json.dump({"environment": environment(), **record}, handle, indent=2)
  return base + ".json"
