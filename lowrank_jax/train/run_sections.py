"""The sections of a run around its model and method: schedule, mesh, checkpoints,
evaluation, logging, fault tolerance and processes."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from lowrank_jax.train.config_section import Section
from lowrank_jax.train.fields import setting


@dataclasses.dataclass(frozen=True)
class ScheduleSection(Section):
  """Steps and the learning-rate schedule (paper: 10% linear warmup, cosine to 10%).

  Attributes:
    total_steps: optimizer steps of the run.
    decay_steps: the steps the warmup and the cosine span (``null``: ``total_steps``); past
      them the rate stays at its final value. A run extended with ``--accept-changes`` keeps
      the horizon it had here, so that its rate goes on from where it was.
    warmup_ratio: fraction of the horizon spent warming up linearly from 0.
    min_lr_ratio: final learning rate as a fraction of the peak.
    kind: ``cosine`` (the paper) or ``constant``.
    cycle_steps: ``cosine`` only: repeat the warmup and cosine every this many steps, its
      warmup ``warmup_ratio`` of a cycle, as the cyclical ``cosine`` scheduler of the
      GaLore-lineage repositories (``--cycle_length``; the first two steps of every later
      cycle at 1e-7 of the peak); GoLore's ``Go_pt.sh`` runs 5000 steps past its cycle of
      10000 this way (``null``: one cycle of ``total_steps``).
    grad_accum: micro-batches accumulated per optimizer step (a global batch of 512 on any
      device count); the global batch must divide by it.
  """

  key: ClassVar[str] = "schedule"
  total_steps: int = setting(1000, at_least=1)
  decay_steps: int | None = setting(None, at_least=1)
  warmup_ratio: float = setting(0.1, at_least=0, below=1)
  min_lr_ratio: float = setting(0.1, at_least=0, at_most=1)
  kind: str = setting("cosine", choices=("cosine", "constant"))
  grad_accum: int = setting(1, at_least=1)
  cycle_steps: int | None = setting(None, at_least=1)

  @property
  def cycle_length(self) -> int:
    """The steps of one warmup and cosine: ``cycle_steps``, else the horizon
    ``decay_steps``, else ``total_steps``."""
    return self.cycle_steps or self.decay_steps or self.total_steps

  @property
  def warmup_steps(self) -> int:
    """The steps of the linear warmup, ``int(warmup_ratio * cycle_length)``."""
    return int(self.warmup_ratio * self.cycle_length)


@dataclasses.dataclass(frozen=True)
class MeshSection(Section):
  """Device mesh axis sizes; one of them may be -1 (fill with the remaining devices).

  Attributes:
    data: pure data parallelism (parameters replicated).
    fsdp: data parallelism with parameters and optimizer state sharded (ZeRO-3).
    tensor: tensor parallelism over heads and the MLP width.
    sweep: where the copies of a learning-rate sweep go: ``replicated`` (every device holds
      every copy of its shard, the batch split over data x fsdp) or ``data`` (the copies split
      over the data axis, each group of devices training its own copies on the whole batch,
      split over fsdp; one process).
  """

  key: ClassVar[str] = "mesh"
  data: int = setting(-1, at_least=-1)
  fsdp: int = setting(1, at_least=-1)
  tensor: int = setting(1, at_least=-1)
  sweep: str = setting("replicated", choices=("replicated", "data"))

  def _check_together(self):
    sizes = (self.data, self.fsdp, self.tensor)
    if 0 in sizes or sizes.count(-1) > 1:
      raise ValueError(
          f"mesh=(data={self.data}, fsdp={self.fsdp}, tensor={self.tensor}) is "
          "invalid: sizes are positive integers, at most one may be -1"
      )

  def shape(self, device_count: int) -> tuple[int, int, int]:
    """The concrete ``(data, fsdp, tensor)`` sizes for ``device_count`` devices."""
    sizes = [self.data, self.fsdp, self.tensor]
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
      if device_count % known:
        raise ValueError(f"mesh sizes {sizes} do not divide the {device_count} devices")
      sizes[sizes.index(-1)] = device_count // known
    if math.prod(sizes) != device_count:
      raise ValueError(
          f"mesh shape {tuple(sizes)} needs {math.prod(sizes)} devices; "
          f"{device_count} are available"
      )
    return tuple(sizes)


@dataclasses.dataclass(frozen=True)
class CheckpointSection(Section):
  """Orbax checkpoints.

  Attributes:
    every: save every this many steps (0: only at the end).
    keep: how many recent checkpoints to keep.
    async_save: write checkpoints in the background while training continues.
  """

  key: ClassVar[str] = "checkpoint"
  every: int = setting(500, at_least=0)
  keep: int = setting(2, at_least=1)
  async_save: bool = True


@dataclasses.dataclass(frozen=True)
class EvalSection(Section):
  """Validation perplexity.

  Attributes:
    every: evaluate every this many steps (0: only at the end).
    batch_size: validation rows per batch (global).
    mean: ``tokens``, the mean loss of every validation token (each batch weighs by its
      non-pad tokens), or ``batches``, the mean of the batches' mean token losses as the
      reference code takes it (a partial last batch weighs as much as a full one).
    references_divisor: with ``mean=batches``, divide the summed batch losses by
      (batches + 1) like the reference code (biased low); off by default.
  """

  key: ClassVar[str] = "eval"
  every: int = setting(0, at_least=0)
  batch_size: int = setting(64, at_least=1)
  mean: str = setting("tokens", choices=("tokens", "batches"))
  references_divisor: bool = False

  def __post_init__(self):
    super().__post_init__()
    if self.references_divisor and self.mean != "batches":
      raise ValueError(
          "eval.references_divisor=true divides a mean over batches; set eval.mean=batches"
      )


@dataclasses.dataclass(frozen=True)
class LoggingSection(Section):
  """Metrics and progress.

  Attributes:
    every: log metrics every this many steps.
    progress: show a progress bar.
    tensorboard: write TensorBoard event files (tensorboardX).
  """

  key: ClassVar[str] = "logging"
  every: int = setting(10, at_least=1)
  progress: bool = True
  tensorboard: bool = True


@dataclasses.dataclass(frozen=True)
class FaultsSection(Section):
  """Tolerance of non-finite steps, and fault injection for tests.

  A step whose loss, gradient norm or update norm is NaN or Inf is skipped (the state keeps
  its values); see :mod:`lowrank_jax.train.nonfinite`.

  Attributes:
    max_bad_steps: stop the run (with a checkpoint of the last good state) after this many
      consecutive non-finite steps.
    nan_loss_steps: testing only: steps whose loss is made NaN inside the jitted step.
    inf_grad_steps: testing only: steps whose gradient is made +Inf inside the jitted step.
  """

  key: ClassVar[str] = "faults"
  max_bad_steps: int = setting(10, at_least=1)
  nan_loss_steps: tuple[int, ...] = setting((), at_least=1)
  inf_grad_steps: tuple[int, ...] = setting((), at_least=1)


@dataclasses.dataclass(frozen=True)
class DistributedSection(Section):
  """The processes of a multi-host run (see :mod:`lowrank_jax.train.distributed`).

  Every host runs the same command; left all unset (and ``auto`` off), the run is one
  process. Each unset field is read from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
  or ``JAX_PROCESS_ID`` when set. ``run_dir`` must be on a filesystem every host sees.

  Attributes:
    auto: let JAX detect the processes from the cluster (TPU VM pod slices, SLURM, Open MPI,
      Kubernetes); the fields below, when set, win over what it detects.
    coordinator_address: ``HOST:PORT`` of the coordinator, which process 0 serves.
    num_processes: how many processes (usually one per host) take part.
    process_id: this process's rank, in ``[0, num_processes)``.
    initialization_timeout: seconds to wait for every process to connect.
  """

  key: ClassVar[str] = "distributed"
  auto: bool = False
  coordinator_address: str | None = None
  num_processes: int | None = setting(None, at_least=1)
  process_id: int | None = setting(None, at_least=0)
  initialization_timeout: int = setting(300, at_least=1)

  def _check_together(self):
    address = self.coordinator_address
    if address is not None:
      host, _, port = address.rpartition(":")
      if not (host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"distributed.coordinator_address={address!r} must be HOST:PORT")
    if None not in (self.num_processes, self.process_id) and self.process_id >= self.num_processes:
      raise ValueError(
          f"distributed.process_id={self.process_id} must be below "
          f"distributed.num_processes={self.num_processes}"
      )
