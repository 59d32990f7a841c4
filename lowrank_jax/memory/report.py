"""The memory report: the paper's count against the measured program, per method and size.

One :class:`MemoryRow` per (size, dtype policy, device count, method) puts side by side

* ``analytic``: the paper's weights + optimizer-state bytes
  (:func:`~lowrank_jax.memory.analytic.analytic_memory`), ``None`` for a method
  without a formula (shown as ``n/a``);
* ``state``: the measured bytes of the abstract train state, total and per device
  (:func:`~lowrank_jax.memory.measured.measure_state`);
* ``step``: XLA's per-device memory analysis of the compiled train step, when asked for
  (:func:`~lowrank_jax.memory.measured.measure_step`).

Every case trains at the paper's rank of its size (:data:`PAPER_RANKS`) on a
``(data=1, fsdp=devices, tensor=1)`` mesh, one sequence of ``seq_len`` tokens per device.
:func:`write_report` writes ``memory.md``, ``memory.csv`` and ``memory.png``. Without a list of
methods the report shows :func:`default_methods`: every method once (``adamw`` trains exactly
as ``full_rank``, so one row stands for both).

>>> rows = memory_rows(["nano"], ["full_rank", "low_rank"], "bf16", [1], compile_step=False)
>>> [(row.method, round(row.ratio_to_full_rank, 2)) for row in rows]  # nano: embeddings dominate
[('full_rank', 1.0), ('low_rank', 0.74)]
>>> rows[1].state_weights_and_optimizer == rows[1].analytic.total_bytes
True
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Callable, Sequence

import jax

from lowrank_jax.models import PRESETS
from lowrank_jax.train.config import TrainConfig, load_config
from lowrank_jax.memory.analytic import FORMULAS, PAPER_RANKS, AnalyticMemory, analytic_memory
from lowrank_jax.memory.measured import (
    StateBytes,
    StepBytes,
    measure_state,
    measure_step,
    memory_run,
)
from lowrank_jax.train.methods import METHODS, get_method, known_method

DTYPES = ("fp32", "bf16", "mixed")
GB = 1e9
CITATION = "arXiv 2505.22922, memory accounting"  # the count: weights + optimizer state


def default_methods() -> list[str]:
  """The names of :data:`METHODS`, sorted, one per distinct method: of names that train
  identically (equal :class:`~lowrank_jax.train.methods.Method`, e.g. ``adamw`` and
  ``full_rank``) the one listed first in the paper's table (:data:`FORMULAS`) stays.

  >>> "full_rank" in default_methods(), "adamw" in default_methods()
  (True, False)
  """
  order = [*FORMULAS, *sorted(set(METHODS) - set(FORMULAS))]
  kept: list[str] = []
  for name in (name for name in order if name in METHODS):
    if all(METHODS[name] != METHODS[other] for other in kept):
      kept.append(name)
  return sorted(kept)


def case_config(
    size: str,
    method: str,
    dtype: str,
    devices: int = 1,
    fsdp: int = 1,
    seq_len: int = 256,
    tensor: int = 1,
    overrides: Sequence[str] = (),
) -> TrainConfig:
  """The config of one case: ``method`` on the ``size`` preset at its paper rank.

  Args:
    size: a model preset (``nano`` ... ``7b``).
    method: a name of :data:`lowrank_jax.train.methods.METHODS`.
    dtype: a dtype policy name (``fp32``, ``bf16``, ``mixed``).
    devices: devices of the mesh (its batch has one sequence per data-parallel device).
    fsdp: how many of them shard the state along ``fsdp``.
    seq_len: tokens per sequence of the compiled step's batch.
    tensor: the tensor-parallel width (``devices / (fsdp * tensor)`` replicate the state).
    overrides: further ``key=value`` config overrides, applied last.
  """
  if size not in PAPER_RANKS:
    raise ValueError(f"size {size!r} is unknown; expected one of {list(PAPER_RANKS)}")
  if devices % (fsdp * tensor):
    raise ValueError(f"fsdp={fsdp} x tensor={tensor} does not divide devices={devices}")
  rank = PAPER_RANKS[size]
  data = devices // (fsdp * tensor)
  overrides = [
      f"model.preset={size}",
      f"model.dtype={dtype}",
      "model.scan_layers=true",
      f"optimizer.method={method}",
      f"mesh.data={data}",
      f"mesh.fsdp={fsdp}",
      f"mesh.tensor={tensor}",
      f"data.seq_len={seq_len}",
      f"data.global_batch_size={data * fsdp}",
      f"eval.batch_size={data * fsdp}",
      *_method_overrides(method, rank),
      *overrides,
  ]
  return load_config(overrides=overrides)


def _method_overrides(method: str, rank: int) -> list[str]:
  """The paper's rank, set by the method's rank key where it has one
  (:attr:`~lowrank_jax.train.methods.Method.rank_key`)."""
  key = get_method(method).rank_key if known_method(method) else None  # get_method names it
  return [] if key is None else [f"{key}={rank}"]


@dataclasses.dataclass(frozen=True)
class MemoryRow:
  """One case of the report; see the module docstring.

  Attributes:
    size, dtype, devices, method: the case.
    analytic: the paper's count, or ``None`` (no formula).
    state: measured train-state bytes, or ``None`` if the method could not be built.
    step: the compiled step's analysis, or ``None`` (not asked for, or not built).
    full_rank_bytes: the analytic full-rank total of the same size and dtype.
  """

  size: str
  dtype: str
  devices: int
  method: str
  analytic: AnalyticMemory | None
  state: StateBytes | None
  step: StepBytes | None
  full_rank_bytes: int

  @property
  def state_weights_and_optimizer(self) -> int | None:
    """Measured bytes that the paper's count covers (extras excluded)."""
    return None if self.state is None else self.state.weights + self.state.optimizer

  @property
  def ratio_to_full_rank(self) -> float | None:
    """Measured (else analytic) weights + optimizer bytes over full-rank's analytic ones."""
    measured = self.state_weights_and_optimizer
    if measured is None:
      measured = None if self.analytic is None else self.analytic.total_bytes
    return None if measured is None else measured / self.full_rank_bytes


def validate_cases(sizes, methods, dtype, device_counts) -> None:
  """One-line ValueErrors for unknown sizes, methods or dtype and unavailable device counts."""
  for size in sizes:
    if size not in PRESETS:
      raise ValueError(f"size {size!r} is unknown; expected some of {list(PRESETS)}")
  for method in methods:
    if not known_method(method):
      raise ValueError(f"method {method!r} is unknown; expected some of {sorted(METHODS)}")
  if dtype not in DTYPES:
    raise ValueError(f"dtype {dtype!r} is unknown; expected one of {list(DTYPES)}")
  available = len(jax.devices())
  for count in device_counts:
    if not isinstance(count, int) or not 1 <= count <= available:
      raise ValueError(
          f"device count {count!r} must be between 1 and the {available} " "devices available"
      )


def memory_rows(
    sizes: Sequence[str],
    methods: Sequence[str],
    dtype: str,
    device_counts: Sequence[int],
    compile_step: bool = True,
    on_case: Callable[[int, int, str], None] | None = None,
) -> list[MemoryRow]:
  """Every (size, device count, method) case of the report, fully sharded over the devices.

  Args:
    sizes: model presets.
    methods: names of :data:`lowrank_jax.train.methods.METHODS`.
    dtype: a dtype policy name.
    device_counts: mesh sizes, each at most ``len(jax.devices())``.
    compile_step: also lower and compile each train step (slow for large models).
    on_case: called as ``on_case(index, count, description)`` before each case is measured
      (``index`` from 1 of ``count``), e.g. to show progress.
  """
  validate_cases(sizes, methods, dtype, device_counts)
  count = len(sizes) * len(device_counts) * len(methods)
  rows = []
  for size in sizes:
    full_rank = analytic_memory(
        case_config(size, "full_rank", dtype).model_config(), "full_rank", PAPER_RANKS[size]
    )
    for devices in device_counts:
      for method in methods:
        if on_case is not None:
          on_case(len(rows) + 1, count, f"{size} {method} {dtype} on {devices} device(s)")
        config = case_config(size, method, dtype, devices, fsdp=devices)
        analytic = analytic_memory(config.model_config(), method, PAPER_RANKS[size])
        try:
          run = memory_run(config, jax.devices()[:devices])
        except ValueError:  # a method that needs options this report does not set
          state = step = None
        else:
          state = measure_state(run)
          step = measure_step(run) if compile_step else None
        rows.append(
            MemoryRow(size, dtype, devices, method, analytic, state, step, full_rank.total_bytes)
        )
  return rows


COLUMNS = (
    "size",
    "dtype",
    "devices",
    "method",
    "analytic_gb",
    "measured_gb",
    "measured_over_analytic",
    "extras_bytes",
    "ratio_to_full_rank",
    "state_per_device_gb",
    "step_argument_gb",
    "step_output_gb",
    "step_temporary_gb",
)


def _gb(value: int | None) -> float | None:
  return None if value is None else value / GB


def _values(row: MemoryRow) -> dict:
  analytic = None if row.analytic is None else row.analytic.total_bytes
  measured = row.state_weights_and_optimizer
  state, step = row.state, row.step
  return {
      "size": row.size,
      "dtype": row.dtype,
      "devices": row.devices,
      "method": row.method,
      "analytic_gb": _gb(analytic),
      "measured_gb": _gb(measured),
      "measured_over_analytic": None if None in (analytic, measured) else measured / analytic,
      "extras_bytes": None if state is None else state.extras,
      "ratio_to_full_rank": row.ratio_to_full_rank,
      "state_per_device_gb": None if state is None else _gb(state.total_per_device),
      "step_argument_gb": None if step is None else _gb(step.argument),
      "step_output_gb": None if step is None else _gb(step.output),
      "step_temporary_gb": None if step is None else _gb(step.temporary),
  }


def _shown(value) -> str:
  if value is None:
    return "n/a"
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_table(rows: Sequence[MemoryRow]) -> str:
  """The rows as a Markdown table (GB = 1e9 bytes; ``n/a`` where there is no number)."""
  return table_text(COLUMNS, [_values(row) for row in rows])


def table_text(columns: Sequence[str], values: Sequence[dict]) -> str:
  """A Markdown table of ``columns``, one row per dict of ``values`` (``n/a`` for None)."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for row in values:
    lines.append("| " + " | ".join(_shown(row[column]) for column in columns) + " |")
  return "\n".join(lines) + "\n"


def write_csv(path: str, columns: Sequence[str], values: Sequence[dict]) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(values)


def _on_fewest_devices(rows: Sequence[MemoryRow]) -> list[MemoryRow]:
  fewest = min(row.devices for row in rows)
  return [row for row in rows if row.devices == fewest]


def _headline(rows: Sequence[MemoryRow]) -> str:
  """Low-Rank-restarts against GaLore and Fira, from the measured numbers where present."""
  ratio = {(row.size, row.method): row.ratio_to_full_rank for row in _on_fewest_devices(rows)}
  lines = []
  for size in dict.fromkeys(row.size for row in rows):
    ours = ratio.get((size, "low_rank_restarts"))
    for other in ("galore", "fira"):
      theirs = ratio.get((size, other))
      if ours is not None and theirs is not None:
        lines.append(
            f"- {size}: Low-Rank-restarts needs {100 * (1 - ours / theirs):.1f}% less "
            f"weight + optimizer memory than {other}."
        )
  return "\n".join(lines) + "\n"


def _bar_chart(rows: Sequence[MemoryRow], path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  shown = _on_fewest_devices(rows)
  sizes = list(dict.fromkeys(row.size for row in shown))
  figure, axes = plt.subplots(len(sizes), 1, figsize=(11, 3.5 * len(sizes)), squeeze=False)
  for ax, size in zip(axes[:, 0], sizes):
    cases = [row for row in shown if row.size == size]
    x = range(len(cases))
    analytic = [_gb(row.analytic.total_bytes) if row.analytic else 0 for row in cases]
    measured = [_gb(row.state_weights_and_optimizer) or 0 for row in cases]
    ax.bar([i - 0.2 for i in x], analytic, 0.4, label=f"analytic ({CITATION})")
    ax.bar([i + 0.2 for i in x], measured, 0.4, label="measured train state")
    ax.set_xticks(list(x), [row.method for row in cases], rotation=30, ha="right")
    ax.set_ylabel("GB")
    ax.set_title(f"{size}, {cases[0].dtype}: weights + optimizer state")
    ax.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def write_report(rows: Sequence[MemoryRow], out_dir: str) -> list[str]:
  """Writes ``memory.md`` (table and headline), ``memory.csv`` and ``memory.png``; their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, f"memory.{ext}") for ext in ("md", "csv", "png")]
  with open(paths[0], "w") as f:
    f.write(
        f"# Memory: weights + optimizer state ({CITATION}) against the program\n\n"
        + _headline(rows)
        + "\n"
        + markdown_table(rows)
    )
  write_csv(paths[1], COLUMNS, [_values(row) for row in rows])
  _bar_chart(rows, paths[2])
  return paths
