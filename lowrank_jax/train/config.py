"""The training configuration: one tree of frozen dataclasses, from YAML and ``key=value``.

A run is described by :class:`TrainConfig`; its sections are small dataclasses that check
their own values. :func:`load_config` reads YAML files (later files override earlier ones)
and then dotted ``key=value`` overrides whose values are parsed as YAML scalars:

>>> cfg = load_config(overrides=["optimizer.learning_rate=0.01", "model.preset=60m"])
>>> cfg.optimizer.learning_rate, cfg.model.preset
(0.01, '60m')
>>> load_config(overrides=["optimizer.lr=0.01"])
Traceback (most recent call last):
...
ValueError: unknown config key 'optimizer.lr'; allowed: optimizer.b1, optimizer.b2, ...

Every error is one line naming the bad key or value, raised before anything runs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any
from collections.abc import Sequence

import yaml

from lowrank_jax.data.config import DataConfig
from lowrank_jax.models import DtypePolicy, LinearConfig, LlamaConfig


@dataclasses.dataclass(frozen=True)
class ModelSection:
  """Which LLaMA to train.

  Attributes:
    preset: a size of :data:`lowrank_jax.models.PRESETS` (``nano``, ``60m`` ... ``7b``).
    dtype: dtype policy name: ``fp32``, ``bf16`` (pure bf16, the paper) or ``mixed``.
    scan_layers: stack the blocks and run them with ``lax.scan``.
    remat: rematerialise blocks in the backward pass.
    linear: the linear parameterization, the fields of :class:`LinearConfig`.
    overrides: any other :class:`LlamaConfig` field, e.g. ``{num_layers: 2}``.
  """

  preset: str = "nano"
  dtype: str = "fp32"
  scan_layers: bool = True
  remat: bool = False
  linear: dict = dataclasses.field(default_factory=dict)
  overrides: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    DtypePolicy.named(self.dtype)
    allowed = {f.name for f in dataclasses.fields(LlamaConfig)} - {
        "dtype",
        "linear",
        "scan_layers",
        "remat",
    }
    unknown = sorted(set(self.overrides) - allowed)
    if unknown:
      raise ValueError(f"unknown model override {unknown[0]!r}; allowed: {sorted(allowed)}")
    self.build()  # validates the preset and the overrides

  def build(self) -> LlamaConfig:
    return LlamaConfig.preset(
        self.preset,
        dtype=DtypePolicy.named(self.dtype),
        scan_layers=self.scan_layers,
        remat=self.remat,
        linear=LinearConfig(**self.linear),
        **self.overrides,
    )


@dataclasses.dataclass(frozen=True)
class OptimizerSection:
  """The training method and its hyperparameters.

  Attributes:
    method: ``adamw`` (full rank) or any method of :mod:`lowrank_jax.train.methods`.
    learning_rate: peak learning rate of the schedule.
    weight_decay: decoupled weight decay.
    b1, b2, eps: Adam hyperparameters.
    clip_norm: clip the global gradient norm to this value (``null``: no clipping, the paper).
    options: method-specific arguments (e.g. ``rank``, ``update_proj_gap``, ``scale``).
    refactorize_every: weight refactorization period of a factorized method (0: off;
      ``null``: 200 for the ``*_restarts`` methods, else off).
    reset_every: momentum reset period of an Adam-based method (0: off; ``null``: 200 for
      the ``*_restarts`` methods and ReLoRA, whose adapters merge at the same steps).
    recovery_steps: steps over which the learning rate recovers after a reset (paper: 10).
  """

  method: str = "adamw"
  learning_rate: float = 1e-3
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  clip_norm: float | None = None
  options: dict = dataclasses.field(default_factory=dict)
  refactorize_every: int | None = None
  reset_every: int | None = None
  recovery_steps: int = 10

  def __post_init__(self):
    from lowrank_jax.train.methods import get_method  # the registry imports optim

    method = get_method(self.method)
    for name in ("refactorize_every", "reset_every"):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value < 0):
        raise ValueError(f"optimizer.{name}={value!r} must be an integer >= 0 or null")
    if self.refactorize_every and method.linear_kind in ("dense", "cola"):
      raise ValueError(
          f"optimizer.refactorize_every={self.refactorize_every} needs a method "
          f"with factors B A; {self.method!r} trains {method.linear_kind!r} linears"
      )
    if self.reset_every and method.build.__name__ not in ("_adam_family", "_relora"):
      raise ValueError(
          f"optimizer.reset_every={self.reset_every} applies to Adam-based methods; "
          f"{self.method!r} is not one"
      )
    if not isinstance(self.recovery_steps, int) or self.recovery_steps < 2:
      raise ValueError(f"optimizer.recovery_steps={self.recovery_steps!r} must be an integer >= 2")
    if (
        self.reset_every
        and method.build.__name__ == "_adam_family"
        and self.recovery_steps > self.reset_every
    ):
      raise ValueError(
          f"optimizer.recovery_steps={self.recovery_steps} exceeds "
          f"optimizer.reset_every={self.reset_every}"
      )
    if not self.learning_rate > 0:
      raise ValueError(f"optimizer.learning_rate={self.learning_rate!r} must be positive")
    if self.weight_decay < 0:
      raise ValueError(f"optimizer.weight_decay={self.weight_decay!r} must be >= 0")
    for name in ("b1", "b2"):
      if not 0 <= getattr(self, name) < 1:
        raise ValueError(f"optimizer.{name}={getattr(self, name)!r} must be in [0, 1)")
    if not self.eps > 0:
      raise ValueError(f"optimizer.eps={self.eps!r} must be positive")
    if self.clip_norm is not None and not self.clip_norm > 0:
      raise ValueError(f"optimizer.clip_norm={self.clip_norm!r} must be positive or null")


@dataclasses.dataclass(frozen=True)
class ScheduleSection:
  """Steps and the learning-rate schedule (paper: 10% linear warmup, cosine to 10%).

  Attributes:
    total_steps: optimizer steps of the run.
    warmup_ratio: fraction of ``total_steps`` spent warming up linearly from 0.
    min_lr_ratio: final learning rate as a fraction of the peak.
    kind: ``cosine`` (the paper) or ``constant``.
    grad_accum: micro-batches accumulated per optimizer step (a global batch of 512 on any
      device count); the global batch must divide by it.
  """

  total_steps: int = 1000
  warmup_ratio: float = 0.1
  min_lr_ratio: float = 0.1
  kind: str = "cosine"
  grad_accum: int = 1

  def __post_init__(self):
    if not isinstance(self.total_steps, int) or self.total_steps < 1:
      raise ValueError(f"schedule.total_steps={self.total_steps!r} must be a positive integer")
    if not 0 <= self.warmup_ratio < 1:
      raise ValueError(f"schedule.warmup_ratio={self.warmup_ratio!r} must be in [0, 1)")
    if not 0 <= self.min_lr_ratio <= 1:
      raise ValueError(f"schedule.min_lr_ratio={self.min_lr_ratio!r} must be in [0, 1]")
    if self.kind not in ("cosine", "constant"):
      raise ValueError(f"schedule.kind={self.kind!r} is unknown; allowed: cosine, constant")
    if not isinstance(self.grad_accum, int) or self.grad_accum < 1:
      raise ValueError(f"schedule.grad_accum={self.grad_accum!r} must be a positive integer")


@dataclasses.dataclass(frozen=True)
class MeshSection:
  """Device mesh axis sizes; one of them may be -1 (fill with the remaining devices).

  Attributes:
    data: pure data parallelism (parameters replicated).
    fsdp: data parallelism with parameters and optimizer state sharded (ZeRO-3).
    tensor: tensor parallelism over heads and the MLP width.
  """

  data: int = -1
  fsdp: int = 1
  tensor: int = 1

  def __post_init__(self):
    sizes = (self.data, self.fsdp, self.tensor)
    if any(s != -1 and (not isinstance(s, int) or s < 1) for s in sizes) or sizes.count(-1) > 1:
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
class CheckpointSection:
  """Orbax checkpoints.

  Attributes:
    every: save every this many steps (0: only at the end).
    keep: how many recent checkpoints to keep.
    async_save: write checkpoints in the background while training continues.
  """

  every: int = 500
  keep: int = 2
  async_save: bool = True

  def __post_init__(self):
    if not isinstance(self.every, int) or self.every < 0:
      raise ValueError(f"checkpoint.every={self.every!r} must be an integer >= 0")
    if not isinstance(self.keep, int) or self.keep < 1:
      raise ValueError(f"checkpoint.keep={self.keep!r} must be a positive integer")


@dataclasses.dataclass(frozen=True)
class EvalSection:
  """Validation perplexity.

  Attributes:
    every: evaluate every this many steps (0: only at the end).
    batch_size: validation rows per batch (global).
    references_divisor: divide the summed batch losses by (batches + 1) like the reference
      code (biased low); off by default, which gives the correct mean.
  """

  every: int = 0
  batch_size: int = 64
  references_divisor: bool = False

  def __post_init__(self):
    if not isinstance(self.every, int) or self.every < 0:
      raise ValueError(f"eval.every={self.every!r} must be an integer >= 0")
    if not isinstance(self.batch_size, int) or self.batch_size < 1:
      raise ValueError(f"eval.batch_size={self.batch_size!r} must be a positive integer")


@dataclasses.dataclass(frozen=True)
class LoggingSection:
  """Metrics and progress.

  Attributes:
    every: log metrics every this many steps.
    progress: show a progress bar.
    tensorboard: write TensorBoard event files (tensorboardX).
  """

  every: int = 10
  progress: bool = True
  tensorboard: bool = True

  def __post_init__(self):
    if not isinstance(self.every, int) or self.every < 1:
      raise ValueError(f"logging.every={self.every!r} must be a positive integer")


@dataclasses.dataclass(frozen=True)
class FaultsSection:
  """Tolerance of non-finite steps, and fault injection for tests.

  A step whose loss or gradient norm is NaN or Inf is skipped (the state keeps its values);
  see :mod:`lowrank_jax.train.nonfinite`.

  Attributes:
    max_bad_steps: stop the run (with a checkpoint of the last good state) after this many
      consecutive non-finite steps.
    nan_loss_steps: testing only: steps whose loss is made NaN inside the jitted step.
    inf_grad_steps: testing only: steps whose gradient is made +Inf inside the jitted step.
  """

  max_bad_steps: int = 10
  nan_loss_steps: tuple[int, ...] = ()
  inf_grad_steps: tuple[int, ...] = ()

  def __post_init__(self):
    if not isinstance(self.max_bad_steps, int) or self.max_bad_steps < 1:
      raise ValueError(f"faults.max_bad_steps={self.max_bad_steps!r} must be a positive integer")
    for name in ("nan_loss_steps", "inf_grad_steps"):
      steps = getattr(self, name)
      if not (isinstance(steps, tuple) and all(isinstance(s, int) and s >= 1 for s in steps)):
        raise ValueError(f"faults.{name}={steps!r} must be a list of step numbers >= 1")


@dataclasses.dataclass(frozen=True)
class DistributedSection:
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

  auto: bool = False
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  initialization_timeout: int = 300

  def __post_init__(self):
    if not isinstance(self.auto, bool):
      raise ValueError(f"distributed.auto={self.auto!r} must be true or false")
    address = self.coordinator_address
    if address is not None:
      host, _, port = str(address).rpartition(":")
      if not (isinstance(address, str) and host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"distributed.coordinator_address={address!r} must be HOST:PORT")
    for name, least in (("num_processes", 1), ("process_id", 0)):
      value = getattr(self, name)
      if value is not None and (type(value) is not int or value < least):
        raise ValueError(f"distributed.{name}={value!r} must be an integer >= {least} or null")
    if None not in (self.num_processes, self.process_id) and self.process_id >= self.num_processes:
      raise ValueError(
          f"distributed.process_id={self.process_id} must be below "
          f"distributed.num_processes={self.num_processes}"
      )
    timeout = self.initialization_timeout
    if type(timeout) is not int or timeout < 1:
      raise ValueError(
          f"distributed.initialization_timeout={timeout!r} must be a positive " "integer (seconds)"
      )


# The embedded default run: the nano model on the embedded corpus, minutes on a CPU.
NANO_DATA = DataConfig(
    vocab_size=4096, seq_len=128, global_batch_size=32, mode="packed", validation_tokens=100_000
)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """A whole run. ``run_dir`` holds checkpoints, metrics and plots; an existing one resumes.

  The defaults are the embedded nano run; the paper's runs are YAML files in
  ``experiments/configs/``.
  """

  run_dir: str = "runs/nano"
  seed: int = 0
  model: ModelSection = ModelSection()
  data: DataConfig = NANO_DATA
  optimizer: OptimizerSection = OptimizerSection(learning_rate=3e-3)
  schedule: ScheduleSection = ScheduleSection(total_steps=250)
  mesh: MeshSection = MeshSection()
  checkpoint: CheckpointSection = CheckpointSection()
  eval: EvalSection = EvalSection()
  logging: LoggingSection = LoggingSection()
  faults: FaultsSection = FaultsSection()
  distributed: DistributedSection = DistributedSection()

  def __post_init__(self):
    batch, accum = self.data.global_batch_size, self.schedule.grad_accum
    if batch % accum:
      raise ValueError(
          f"data.global_batch_size={batch} is not divisible by " f"schedule.grad_accum={accum}"
      )
    model = self.model_config()
    if self.data.seq_len > model.max_seq_len:
      raise ValueError(
          f"data.seq_len={self.data.seq_len} exceeds the model's "
          f"max_seq_len={model.max_seq_len}"
      )

  def model_config(self) -> LlamaConfig:
    """The model, its target linears parameterized as the method needs (e.g. low-rank)."""
    from lowrank_jax.train.methods import get_method

    kind = get_method(self.optimizer.method).linear_kind
    chosen = self.model.linear.get("kind", kind)
    if chosen != kind:
      raise ValueError(
          f"model.linear.kind={chosen!r} does not fit optimizer.method="
          f"{self.optimizer.method!r}, which trains {kind!r} linears"
      )
    return dataclasses.replace(
        self.model.build(), linear=LinearConfig(**{**self.model.linear, "kind": kind})
    )

  def optimizer_section(self) -> OptimizerSection:
    """The optimizer section with the method's default restart periods filled in."""
    from lowrank_jax.train.methods import PAPER_RESTART_EVERY, get_method

    method = get_method(self.optimizer.method)
    defaults = {
        "refactorize_every": PAPER_RESTART_EVERY if method.restarts else 0,
        "reset_every": PAPER_RESTART_EVERY if method.restarts or method.merge_lora else 0,
    }
    return dataclasses.replace(
        self.optimizer,
        **{
            name: default
            if getattr(self.optimizer, name) is None
            else getattr(self.optimizer, name)
            for name, default in defaults.items()
        },
    )


def _keys(cls, prefix: str = "") -> list[str]:
  keys = []
  hints = typing.get_type_hints(cls)
  for field in dataclasses.fields(cls):
    if dataclasses.is_dataclass(hints[field.name]):
      keys += _keys(hints[field.name], f"{prefix}{field.name}.")
    else:
      keys.append(prefix + field.name)
  return keys


def _build(cls, values: dict[str, Any], prefix: str = ""):
  """Builds dataclass ``cls`` from a nested dict, rejecting unknown keys."""
  if not isinstance(values, dict):
    raise ValueError(
        f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, " f"got {values!r}"
    )
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  for key in values:
    if key not in names:
      full = f"{prefix}{key}"
      raise ValueError(
          f"unknown config key {full!r}; allowed: " f"{', '.join(sorted(_keys(cls, prefix)))}"
      )
  kwargs = {}
  for key, value in values.items():
    hint = hints[key]
    if dataclasses.is_dataclass(hint):
      kwargs[key] = _build(hint, value, f"{prefix}{key}.")
    elif typing.get_origin(hint) is tuple and isinstance(value, list):
      kwargs[key] = tuple(value)
    else:
      kwargs[key] = _coerce(hint, value, f"{prefix}{key}")
  return cls(**kwargs)


def _coerce(hint, value, key: str):
  """Float fields take ints and YAML-1.1 strings such as ``1e-3``; other values pass as is."""
  floats = hint is float or (
      typing.get_origin(hint) in (typing.Union, types.UnionType) and float in typing.get_args(hint)
  )
  if not floats or value is None or isinstance(value, bool):
    return value
  try:
    return float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{key}={value!r} is not a number") from None


def _merge(base: dict, update: dict) -> dict:
  merged = dict(base)
  for key, value in update.items():
    if isinstance(value, dict) and isinstance(merged.get(key), dict):
      merged[key] = _merge(merged[key], value)
    else:
      merged[key] = value
  return merged


def parse_override(override: str) -> dict:
  """``"a.b=1"`` -> ``{"a": {"b": 1}}`` (the value parsed as YAML)."""
  key, sep, raw = override.partition("=")
  if not sep or not key:
    raise ValueError(f"override {override!r} is not of the form key=value")
  value = yaml.safe_load(raw) if raw else ""
  for part in reversed(key.split(".")):
    value = {part: value}
  return value


def load_config(
    paths: Sequence[str] = (), overrides: Sequence[str] = (), base: dict | None = None
) -> TrainConfig:
  """Reads YAML ``paths`` in order, applies ``key=value`` ``overrides``, validates.

  Values start from ``base`` (default: the defaults of :class:`TrainConfig`, the embedded
  nano run), so a file or override changes only the keys it names.
  """
  values = to_dict(TrainConfig()) if base is None else base
  for path in paths:
    try:
      with open(path) as f:
        loaded = yaml.safe_load(f) or {}
    except FileNotFoundError:
      raise ValueError(f"config file {path!r} does not exist") from None
    values = _merge(values, loaded)
  for override in overrides:
    values = _merge(values, parse_override(override))
  return _build(TrainConfig, values)


def to_dict(config: TrainConfig) -> dict:
  """The config as plain YAML-friendly data (tuples become lists)."""
  return yaml.safe_load(yaml.safe_dump(dataclasses.asdict(config)))
