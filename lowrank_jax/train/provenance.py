"""Where a run's numbers were computed: the software and hardware that decide their last bits.

The same config and seed give bitwise the same run on the same platform. On another, the
numbers differ at float level, and the differences grow with training: XLA compiles for the
host's CPU or for the accelerator, and on a CPU every SVD and QR (GaLore's and Fira's
projections, LoRO's manifold step, the refactorizations) is SciPy's OpenBLAS, whose kernels
are chosen for the CPU when it loads (:func:`lowrank_jax.optim.linalg.lapack_kernel`). The
XLA code is chosen by the CPU's vector extensions too (``XLA_FLAGS=--xla_cpu_max_isa=AVX2``
gives an AVX-512 machine the code of an AVX2 one), and a virtual machine can be handed a
different CPU from one boot to the next. A run's summary records all of them, so two runs
that disagree can be told apart from a bug.

>>> record = platform()
>>> sorted(record)
['backend', 'cpu', 'device_count', 'device_kind', 'jax', 'jaxlib', 'lapack_kernel', 'vector_isa', 'xla_flags']
>>> record["jax"] == jax.__version__
True
"""

from __future__ import annotations

import os
import platform as host

import jax
import jaxlib

from lowrank_jax.optim.linalg import lapack_kernel

# The widest x86 vector extensions, widest first: XLA compiles for the widest the CPU has.
_VECTOR_ISAS = ("avx512f", "avx2", "avx")


def _cpuinfo() -> dict[str, str]:
  """The first processor's fields of Linux's /proc/cpuinfo (empty elsewhere)."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = f.read().split("\n\n")[0].splitlines()
  except OSError:
    return {}
  pairs = (line.split(":", 1) for line in lines if ":" in line)
  return {key.strip(): value.strip() for key, value in pairs}


def _cpu(fields: dict[str, str]) -> str:
  """The host CPU's model, with its family and model numbers where Linux gives them (a
  virtual machine may name only the vendor's line)."""
  name = fields.get("model name") or host.processor() or host.machine()
  if "cpu family" in fields and "model" in fields:
    return f"{name} (family {fields['cpu family']}, model {fields['model']})"
  return name


def _vector_isa(fields: dict[str, str]) -> str | None:
  """The widest x86 vector extension the CPU reports (``None``: none of them, or not Linux).

  The same virtual machine can be given another CPU from one boot to the next, and with it
  other XLA code: a run without AVX-512 rounds some reductions differently."""
  flags = set(fields.get("flags", "").split())
  return next((isa for isa in _VECTOR_ISAS if isa in flags), None)


def platform() -> dict:
  """The versions, devices, host CPU and LAPACK kernels of this process."""
  fields = _cpuinfo()
  return {
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "backend": jax.default_backend(),
      "device_kind": jax.devices()[0].device_kind,
      "device_count": jax.device_count(),
      "cpu": _cpu(fields),
      "vector_isa": _vector_isa(fields),
      "lapack_kernel": lapack_kernel() if jax.default_backend() == "cpu" else None,
      "xla_flags": os.environ.get("XLA_FLAGS", "").strip(),
  }
