"""Where a run's numbers were computed: the software and hardware that decide their last bits.

The same config and seed give bitwise the same run on the same platform. On another, the
numbers differ at float level, and the differences grow with training: XLA compiles for the
host's CPU or for the accelerator, and on a CPU every SVD and QR (GaLore's and Fira's
projections, LoRO's manifold step, the refactorizations) is SciPy's OpenBLAS, whose kernels
are chosen for the CPU when it loads (:func:`lowrank_jax.optim.linalg.lapack_kernel`). A
run's summary records them, so two runs that disagree can be told apart from a bug.

>>> record = platform()
>>> sorted(record)
['backend', 'cpu', 'device_count', 'device_kind', 'jax', 'jaxlib', 'lapack_kernel']
>>> record["jax"] == jax.__version__
True
"""

from __future__ import annotations

import platform as host

import jax
import jaxlib

from lowrank_jax.optim.linalg import lapack_kernel


def _cpu() -> str:
  """The host CPU's model, with its family and model numbers where Linux gives them (a
  virtual machine may name only the vendor's line)."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = f.read().split("\n\n")[0].splitlines()
  except OSError:
    return host.processor() or host.machine()
  fields = dict(line.split(":", 1) for line in lines if ":" in line)
  fields = {key.strip(): value.strip() for key, value in fields.items()}
  name = fields.get("model name", host.machine())
  if "cpu family" in fields and "model" in fields:
    return f"{name} (family {fields['cpu family']}, model {fields['model']})"
  return name


def platform() -> dict:
  """The versions, devices, host CPU and LAPACK kernels of this process."""
  device = jax.devices()[0]
  return {
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "backend": jax.default_backend(),
      "device_kind": device.device_kind,
      "device_count": jax.device_count(),
      "cpu": _cpu(),
      "lapack_kernel": lapack_kernel() if jax.default_backend() == "cpu" else None,
  }
