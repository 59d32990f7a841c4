"""Ahead-of-time compilation of the train step for a described topology, without its hardware.

Before renting a pod, compile the very program that would run on it: the train step is
lowered on abstract shapes and compiled for the topology's devices on this host, which
catches sharding errors and reports XLA's per-device memory (arguments, outputs,
temporaries) against the chip's HBM. A topology is named

* as libtpu names it: ``v5e:16x16`` (a v5e-256), ``v5e:8x8`` (v5e-64), ``v5p:4x4x4``,
  ``v6e:8x8``. This needs the ``libtpu`` package (``pip install 'lowrank_jax[tpu-aot]'``);
  its devices are compile-only and the real TPU compiler runs on the CPU host (as MaxText's
  ``train_compile.py`` does). A program that does not fit is refused by that compiler;
* ``cpu:N``: ``N`` of this host's CPU devices (fake ones with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=N``), for tests and for shapes only; a
  per-device budget can be given as ``hbm_bytes``.

The mesh is ``(data=1, fsdp=N / tensor, tensor)`` over the topology's ``N`` devices, the batch
one sequence per data-parallel device (:func:`~lowrank_jax.memory.report.case_config`).

>>> len(topology_devices("cpu:8")), HBM_BYTES["TPU v5 lite"] / GIB  # a v5e chip: 16 GiB
(8, 16.0)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import jax

from lowrank_jax.memory.report import case_config, table_text, write_csv
from lowrank_jax.memory.measured import (
    StateBytes,
    StepBytes,
    measure_state,
    measure_step,
    memory_run,
)

GIB = 2**30
# HBM per device (one device per chip) of the TPU kinds whose capacity is published.
HBM_BYTES = {"TPU v5 lite": 16 * GIB, "TPU v5": 95 * GIB, "TPU v6 lite": 32 * GIB}


def topology_devices(name: str) -> list[jax.Device]:
  """The devices of a described topology (see the module docstring for the names)."""
  kind, _, shape = name.partition(":")
  if not shape:
    raise ValueError(f"topology {name!r} is not KIND:SHAPE, e.g. v5e:16x16 or cpu:64")
  if kind == "cpu":
    if not shape.isdigit() or int(shape) < 1:
      raise ValueError(f"topology {name!r}: cpu:N needs a positive device count N")
    count, available = int(shape), jax.devices("cpu")
    if count > len(available):
      raise ValueError(
          f"topology {name!r} needs {count} CPU devices, this process has "
          f"{len(available)}; set XLA_FLAGS=--xla_force_host_platform_device_count"
          f"={count} before starting"
      )
    return available[:count]
  from jax.experimental import topologies

  try:
    return list(topologies.get_topology_desc(name, "tpu").devices)
  except RuntimeError as error:
    if "not installed" in str(error):
      raise ValueError(
          f"topology {name!r} needs libtpu to compile for TPUs on this host: "
          "pip install 'lowrank_jax[tpu-aot]'"
      ) from None
    raise ValueError(f"topology {name!r}: {str(error).splitlines()[0]}") from None


@dataclasses.dataclass(frozen=True)
class TopologyCase:
  """One method and size compiled for a topology.

  Attributes:
    size, method, dtype, topology: the case.
    devices, device_kind: the topology's device count and kind (``TPU v5 lite``, ``cpu``).
    mesh: ``{"data": ..., "fsdp": ..., "tensor": ...}``.
    state: the abstract train state's bytes, total and on the busiest device.
    step: XLA's memory analysis of the compiled step, or ``None`` if the compiler refused it.
    hbm_bytes: a device's memory, or ``None`` if not known.
    error: the compiler's first line when it refused the program (out of memory), else ``None``.
  """

  size: str
  method: str
  dtype: str
  topology: str
  devices: int
  device_kind: str
  mesh: dict
  state: StateBytes
  step: StepBytes | None
  hbm_bytes: int | None
  error: str | None

  @property
  def peak_per_device(self) -> int | None:
    """Arguments + outputs + temporaries less donated aliases, per device."""
    return None if self.step is None else self.step.peak_estimate

  @property
  def fits(self) -> bool | None:
    """Whether the step fits a device's HBM (``None`` if the HBM is unknown)."""
    if self.error is not None:
      return False
    return None if self.hbm_bytes is None else self.peak_per_device <= self.hbm_bytes


def compile_case(
    size: str,
    method: str,
    dtype: str,
    topology: str,
    tensor: int = 1,
    hbm_bytes: int | None = None,
    seq_len: int = 256,
) -> TopologyCase:
  """Lowers and compiles ``method``'s train step on ``size`` for ``topology``; nothing runs.

  Args:
    size, method, dtype: as :func:`~lowrank_jax.memory.report.case_config`.
    topology: a topology name (module docstring).
    tensor: tensor-parallel width; it must divide the device count.
    hbm_bytes: a device's memory; default: the chip's (:data:`HBM_BYTES`), unknown for CPU.
    seq_len: tokens per sequence (one sequence per data-parallel device).
  """
  devices = topology_devices(topology)
  if not isinstance(tensor, int) or tensor < 1 or len(devices) % tensor:
    raise ValueError(
        f"tensor={tensor!r} must be a positive divisor of the {len(devices)} "
        f"devices of {topology!r}"
    )
  config = case_config(
      size, method, dtype, len(devices), fsdp=len(devices) // tensor, seq_len=seq_len, tensor=tensor
  )
  run = memory_run(config, devices)
  kind = devices[0].device_kind
  hbm = hbm_bytes if hbm_bytes is not None else HBM_BYTES.get(kind)
  step, error = None, None
  try:
    step = measure_step(run)
  except jax.errors.JaxRuntimeError as failure:
    if "RESOURCE_EXHAUSTED" not in str(failure):
      raise
    error = " ".join(str(failure).split("\n")[0].split())
  return TopologyCase(
      size,
      method,
      dtype,
      topology,
      len(devices),
      kind,
      dict(run.mesh.shape),
      measure_state(run),
      step,
      hbm,
      error,
  )


def out_of_memory_message(cases: Sequence[TopologyCase]) -> str | None:
  """One line naming every case that does not fit, with bytes needed against HBM; or None."""
  failed = [case for case in cases if case.fits is False]
  if not failed:
    return None
  return "out of memory: " + "; ".join(
      f"{case.size} {case.method} on {case.topology} ({case.device_kind}, "
      + ("HBM unknown" if case.hbm_bytes is None else f"{case.hbm_bytes / GIB:.2f} GiB per device")
      + "): "
      + (case.error or f"needs {case.peak_per_device / GIB:.2f} GiB per device")
      for case in failed
  )


COLUMNS = (
    "size",
    "dtype",
    "method",
    "topology",
    "device_kind",
    "mesh",
    "state_per_device_gib",
    "step_argument_gib",
    "step_output_gib",
    "step_temporary_gib",
    "peak_per_device_gib",
    "hbm_gib",
    "fits",
    "error",
)


def _gib(value: int | None) -> float | None:
  return None if value is None else value / GIB


def case_values(case: TopologyCase) -> dict:
  """The table's values of one case (GiB = 2**30 bytes, as HBM is sold)."""
  step = case.step or StepBytes(None, None, None, None)
  return {
      "size": case.size,
      "dtype": case.dtype,
      "method": case.method,
      "topology": case.topology,
      "device_kind": case.device_kind,
      "mesh": " x ".join(f"{axis}={size}" for axis, size in case.mesh.items()),
      "state_per_device_gib": _gib(case.state.total_per_device),
      "step_argument_gib": _gib(step.argument),
      "step_output_gib": _gib(step.output),
      "step_temporary_gib": _gib(step.temporary),
      "peak_per_device_gib": _gib(case.peak_per_device),
      "hbm_gib": _gib(case.hbm_bytes),
      "fits": {True: "yes", False: "NO", None: None}[case.fits],
      "error": case.error,
  }


def topology_table(cases: Sequence[TopologyCase]) -> str:
  """The cases as a Markdown table."""
  return table_text(COLUMNS, [case_values(case) for case in cases])


def write_topology_report(cases: Sequence[TopologyCase], out_dir: str) -> list[str]:
  """Writes ``topology.md`` and ``topology.csv`` under ``out_dir``; their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, f"topology.{ext}") for ext in ("md", "csv")]
  with open(paths[0], "w") as f:
    f.write(
        "# The train step compiled for a described topology (per device, GiB = 2**30 B)\n\n"
        + topology_table(cases)
    )
  write_csv(paths[1], COLUMNS, [case_values(case) for case in cases])
  return paths
