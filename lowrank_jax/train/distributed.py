"""The multi-controller runtime: one process per host, every one running the same command.

JAX runs a pod or a cluster as ``P`` cooperating processes. :func:`initialize` connects this
one to the others (``jax.distributed.initialize``) before JAX touches a device; afterwards
``jax.devices()`` lists the devices of all ``P`` processes, a jitted step runs on all of them
at once, each process feeds its own devices its ``B / P`` rows of every global batch
(:mod:`lowrank_jax.data.global_batch`), and ``jax.process_index() == 0`` does the writing.

Who takes part comes from the ``distributed`` config section
(:class:`~lowrank_jax.train.config.DistributedSection`); a field left unset there is read
from the environment (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``), and with ``auto`` JAX detects the rest from the cluster (TPU VM pod
slices, SLURM, Open MPI, Kubernetes). Nothing set means one process and no connection:

>>> from lowrank_jax.train.config import DistributedSection
>>> resolve(DistributedSection(), environ={}) is None
True
>>> resolve(DistributedSection(coordinator_address="10.0.0.1:1234", num_processes=2),
...         environ={"JAX_PROCESS_ID": "1"})  # doctest: +NORMALIZE_WHITESPACE
{'coordinator_address': '10.0.0.1:1234', 'num_processes': 2, 'process_id': 1,
 'initialization_timeout': 300, 'cluster_detection_method': 'deactivate'}
>>> resolve(DistributedSection(num_processes=2), environ={})
Traceback (most recent call last):
...
ValueError: distributed.coordinator_address, distributed.process_id are unset ...
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils

from lowrank_jax.train.config import DistributedSection

# The section's fields that name the processes, and the environment variables behind them.
ENVIRONMENT = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}


def _from_environment(name: str, environ: Mapping[str, str]) -> str | int | None:
  raw = environ.get(ENVIRONMENT[name])
  if raw is None or name == "coordinator_address":
    return raw
  try:
    return int(raw)
  except ValueError:
    raise ValueError(f"{ENVIRONMENT[name]}={raw!r} is not an integer") from None


def resolve(section: DistributedSection, environ: Mapping[str, str] | None = None) -> dict | None:
  """The arguments of ``jax.distributed.initialize``, or ``None`` for a single process.

  Args:
    section: the config's ``distributed`` section; its unset fields fall back to
      :data:`ENVIRONMENT` (checked like the section's own values).
    environ: the environment (default ``os.environ``).

  Raises:
    ValueError: some but not all of the processes' fields are known and ``auto`` is off,
      or an environment variable holds a bad value.
  """
  environ = os.environ if environ is None else environ
  section = dataclasses.replace(
      section,
      **{
          name: _from_environment(name, environ)
          for name in ENVIRONMENT
          if getattr(section, name) is None
      },
  )
  values = {name: getattr(section, name) for name in ENVIRONMENT}
  missing = [f"distributed.{name}" for name, value in values.items() if value is None]
  if not section.auto and len(missing) == len(values):
    return None
  if not section.auto and missing:
    raise ValueError(
        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} unset "
        f"(config or {', '.join(ENVIRONMENT.values())}); give all three, or "
        "distributed.auto=true to detect the cluster"
    )
  arguments = {**values, "initialization_timeout": section.initialization_timeout}
  if not section.auto:
    arguments["cluster_detection_method"] = "deactivate"
  return arguments


def initialize(section: DistributedSection, environ: Mapping[str, str] | None = None) -> bool:
  """Connects this process to the others as ``section`` says; returns whether it is connected.

  Call it before anything touches a JAX device. Idempotent: a second call (another run in the
  same process) keeps the first connection. On CPU, cross-process collectives go through gloo.
  """
  arguments = resolve(section, environ)
  if arguments is None:
    return False
  if jax.distributed.is_initialized():
    return True
  platforms = (jax.config.jax_platforms or "").split(",")
  if platforms[0] == "cpu" and arguments["num_processes"] != 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**arguments)
  return True


def barrier(name: str) -> None:
  """Waits until every process has reached the barrier ``name`` (nothing for one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def largest(value: int) -> int:
  """The largest of every process's ``value`` (an all-gather; ``value`` for one process)."""
  if jax.process_count() == 1:
    return value
  return int(np.max(multihost_utils.process_allgather(np.int32(value))))
