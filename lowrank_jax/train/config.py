"""The training configuration: one tree of frozen dataclasses, from YAML and ``key=value``.

A run is described by :class:`TrainConfig`; its sections are small dataclasses whose fields
declare their types and bounds (:func:`~lowrank_jax.train.fields.setting`), checked on
construction. :func:`load_config` reads YAML files (later files override earlier ones) and
then dotted ``key=value`` overrides whose values are parsed as YAML scalars:

>>> cfg = load_config(overrides=["optimizer.learning_rate=0.01", "model.preset=60m"])
>>> cfg.optimizer.learning_rate, cfg.model.preset
(0.01, '60m')
>>> load_config(overrides=["optimizer.lr=0.01"])
Traceback (most recent call last):
...
ValueError: unknown config key 'optimizer.lr'; allowed: optimizer.b1, optimizer.b2, ...
>>> load_config(overrides=["optimizer.learning_rate=inf"])
Traceback (most recent call last):
...
ValueError: optimizer.learning_rate=inf must be a finite number > 0

Every error is one line naming the bad key, value or file line, raised before anything runs.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, ClassVar
from collections.abc import Sequence

import yaml

from lowrank_jax.data.config import DataConfig
from lowrank_jax.models import DtypePolicy, LlamaConfig
from lowrank_jax.models.hf import llama_config_from_hf
from lowrank_jax.models.hf_checkpoint import read_hf_config
from lowrank_jax.train.config_sources import merge, parse_override, read_yaml_file
from lowrank_jax.train.fields import check_fields, coerce, setting
from lowrank_jax.train.linear_keys import check_linear_keys, method_linear, used_linear_fields
from lowrank_jax.train.methods import PAPER_RESTART_EVERY, get_method


class _Section:
  """A config section: checks its fields' declared bounds (named ``key.field``), then the
  rules that relate several fields (:meth:`_check_together`)."""

  key: ClassVar[str]

  def __post_init__(self):
    check_fields(self, f"{self.key}." if self.key else "")
    self._check_together()

  def _check_together(self) -> None:
    pass


@dataclasses.dataclass(frozen=True)
class ModelSection(_Section):
  """Which LLaMA to train.

  Attributes:
    preset: a size of :data:`lowrank_jax.models.PRESETS` (``nano``, ``60m`` ... ``7b``).
    dtype: dtype policy name: ``fp32``, ``bf16`` (pure bf16, the paper) or ``mixed``.
    scan_layers: stack the blocks and run them with ``lax.scan``.
    remat: rematerialise blocks in the backward pass.
    linear: the linear parameterization of a model-side method (low_rank, lora, sltrain,
      cola, ...), the fields of :class:`LinearConfig` its kind uses (e.g. ``rank``).
    overrides: any other :class:`LlamaConfig` field, e.g. ``{num_layers: 2}``.
    init_from: a local HF LLaMA directory (``config.json`` and safetensors, sharded or not;
      an export of ours is one) whose weights the model starts from at step 0, for any
      method (:func:`lowrank_jax.models.hf.load_hf_weights`: dense copied, factorized kinds
      from a truncated SVD). The architecture is then the checkpoint's ``config.json``, not
      ``preset``; ``overrides`` may only change ``max_seq_len`` (a bound, no weight) or
      repeat the checkpoint's values. A new run only: a run with a checkpoint resumes from it.
  """

  key: ClassVar[str] = "model"
  preset: str = "nano"
  dtype: str = "fp32"
  scan_layers: bool = True
  remat: bool = False
  linear: dict = setting({})
  overrides: dict = setting({})
  init_from: str = ""

  def _check_together(self):
    DtypePolicy.named(self.dtype)
    check_linear_keys(self.linear)
    allowed = {f.name for f in dataclasses.fields(LlamaConfig)} - {
        "dtype",
        "linear",
        "scan_layers",
        "remat",
    }
    unknown = sorted(set(self.overrides) - allowed)
    if unknown:
      raise ValueError(f"unknown model override {unknown[0]!r}; allowed: {sorted(allowed)}")
    # the preset (or init_from's config.json) and the overrides; the linear's options, which
    # depend on the method's kind, are checked by TrainConfig.model_config
    self._architecture(dtype=DtypePolicy.named(self.dtype))

  def build(self) -> LlamaConfig:
    """The model with dense linears: :meth:`TrainConfig.model_config` sets the method's."""
    return self._architecture(
        dtype=DtypePolicy.named(self.dtype),
        scan_layers=self.scan_layers,
        remat=self.remat,
    )

  def _architecture(self, **ours) -> LlamaConfig:
    """The preset with the overrides, or ``init_from``'s ``config.json`` where they agree."""
    if not self.init_from:
      return LlamaConfig.preset(self.preset, **ours, **self.overrides)
    checkpoint = llama_config_from_hf(read_hf_config(self.init_from), **ours)
    for key, value in self.overrides.items():
      if key != "max_seq_len" and value != getattr(checkpoint, key):
        raise ValueError(
            f"model.overrides.{key}={value!r} differs from model.init_from's config.json "
            f"({key}={getattr(checkpoint, key)!r}): the architecture is the checkpoint's"
        )
    return dataclasses.replace(checkpoint, **self.overrides)


@dataclasses.dataclass(frozen=True)
class OptimizerSection(_Section):
  """The training method and its hyperparameters.

  Attributes:
    method: ``adamw`` (full rank) or any method of :mod:`lowrank_jax.train.methods`.
    learning_rate: peak learning rate of the schedule.
    learning_rates: a learning-rate sweep as one program: one copy of the model per peak
      rate, all trained by one jitted step on the same batches, in place of
      ``learning_rate`` (:mod:`lowrank_jax.train.rate_copies`). Empty: one run.
    dense_learning_rate: peak learning rate of the dense leaves (embeddings, lm_head, norms:
      every parameter outside the target linears, their factors, adapters and sparse values),
      under the same schedule, resets and re-warmups as the matrices' (PyTorch's
      param_groups; :mod:`lowrank_jax.train.dense_rate`). ``null``: ``learning_rate``, one
      rate for both groups as in the references.
    dense_learning_rates: with ``learning_rates``, the dense leaves' peak rate of each copy,
      paired element by element (same length); empty: every copy's dense leaves take
      ``dense_learning_rate`` (or, if that is ``null``, the copy's own rate).
    weight_decay: decoupled weight decay, AdamW's ``p -= lr * weight_decay * p`` at each
      update (``lr`` the leaf's group rate), as in the references: on every trained leaf of
      every method (embedding, lm_head, norms, and the target linears' kernels, model-side
      factors, LoRA adapters or SLTrain values; a projected method's dense leaves and full
      kernels too). Frozen leaves (a LoRA base, SLTrain's support) are not trained, so not
      decayed; LoRO's exact manifold steps move its factors without it.
    b1: Adam's first-moment decay.
    b2: Adam's second-moment decay.
    eps: Adam's denominator term (``null``: the method's reference value, its
      :mod:`lowrank_jax.optim` factory's default: 1e-6 for GaLore, Fira, APOLLO, GoLore, SPAM
      and LoRO, 1e-8 for the others).
    clip_norm: clip the global gradient norm to this value (``null``: no clipping, the paper).
    options: the method's own options, declared by its options class in
      :mod:`lowrank_jax.train.method_options` (e.g. ``rank``, ``update_proj_gap``, ``scale``).
    refactorize_every: weight refactorization period of a factorized method (0: off;
      ``null``: 200 for the ``*_restarts`` methods, else off).
    reset_every: momentum reset period of an Adam-based method (0: off; ``null``: 200 for
      the ``*_restarts`` methods and ReLoRA, whose adapters merge at the same steps).
    recovery_steps: steps over which the learning rate recovers after a reset (paper: 10).
  """

  key: ClassVar[str] = "optimizer"
  method: str = "adamw"
  learning_rate: float = setting(1e-3, above=0)
  learning_rates: tuple[float, ...] = setting((), above=0)
  dense_learning_rate: float | None = setting(None, above=0)
  dense_learning_rates: tuple[float, ...] = setting((), above=0)
  weight_decay: float = setting(0.0, at_least=0)
  b1: float = setting(0.9, at_least=0, below=1)
  b2: float = setting(0.999, at_least=0, below=1)
  eps: float | None = setting(None, above=0)
  clip_norm: float | None = setting(None, above=0)
  options: dict = setting({})
  refactorize_every: int | None = setting(None, at_least=0)
  reset_every: int | None = setting(None, at_least=0)
  recovery_steps: int = setting(10, at_least=2)

  def _check_together(self):
    method = get_method(self.method)
    method.parse_options(self.options)
    self._check_rates()
    if self.refactorize_every and method.linear_kind in ("dense", "cola"):
      raise ValueError(
          f"optimizer.refactorize_every={self.refactorize_every} needs a method "
          f"with factors B A; {self.method!r} trains {method.linear_kind!r} linears"
      )
    if self.reset_every and not method.takes_reset_every:
      raise ValueError(
          f"optimizer.reset_every={self.reset_every} applies to Adam-based methods; "
          f"{self.method!r} is not one"
      )
    if self.reset_every and method.adam_family and self.recovery_steps > self.reset_every:
      raise ValueError(
          f"optimizer.recovery_steps={self.recovery_steps} exceeds "
          f"optimizer.reset_every={self.reset_every}"
      )

  def _check_rates(self):
    rates, dense = list(self.learning_rates), list(self.dense_learning_rates)
    if dense and len(dense) != len(rates):
      raise ValueError(
          f"optimizer.dense_learning_rates={dense} needs one rate per entry of "
          f"optimizer.learning_rates={rates}"
      )
    if dense and self.dense_learning_rate is not None:
      raise ValueError(
          f"optimizer.dense_learning_rate={self.dense_learning_rate} and "
          f"optimizer.dense_learning_rates={dense} both set the dense rate; keep one"
      )
    copies = self.copy_rates()
    if len(set(copies)) < len(copies):
      paired = f" with optimizer.dense_learning_rates={dense}" if dense else ""
      raise ValueError(
          f"optimizer.learning_rates={rates}{paired} repeats a rate; a sweep needs distinct rates"
      )

  def copy_rates(self) -> list[tuple[float, float | None]]:
    """``(peak rate, dense leaves' peak rate)`` of each trained copy: one for a run, one per
    entry of ``learning_rates`` for a sweep; a dense rate of ``None`` is the copy's own."""
    rates = self.learning_rates or (self.learning_rate,)
    dense = self.dense_learning_rates or (self.dense_learning_rate,) * len(rates)
    return list(zip(rates, dense))


@dataclasses.dataclass(frozen=True)
class ScheduleSection(_Section):
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
class MeshSection(_Section):
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
class CheckpointSection(_Section):
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
class EvalSection(_Section):
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
class LoggingSection(_Section):
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
class FaultsSection(_Section):
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
class DistributedSection(_Section):
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


# The embedded default run: the nano model on the embedded corpus, minutes on a CPU.
NANO_DATA = DataConfig(
    vocab_size=4096, seq_len=128, global_batch_size=32, mode="packed", validation_tokens=100_000
)


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Section):
  """A whole run. ``run_dir`` holds checkpoints, metrics and plots; an existing one resumes.

  The defaults are the embedded nano run; the paper's runs are YAML files in
  ``experiments/configs/``.

  Attributes:
    run_dir: the run directory (see :mod:`lowrank_jax.train.run_dir`).
    seed: initialisation seed of the model (the data order has its own, ``data.seed``).
  """

  key: ClassVar[str] = ""
  run_dir: str = "runs/nano"
  seed: int = setting(0, at_least=0)
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

  def _check_together(self):
    batch, accum = self.data.global_batch_size, self.schedule.grad_accum
    if batch % accum:
      raise ValueError(
          f"data.global_batch_size={batch} is not divisible by schedule.grad_accum={accum}"
      )
    self._check_relora_warmup()
    model = self.model_config()
    if self.data.seq_len > model.max_seq_len:
      raise ValueError(
          f"data.seq_len={self.data.seq_len} exceeds the model's max_seq_len={model.max_seq_len}"
      )

  def _check_relora_warmup(self):
    """ReLoRA's scheduler asserts ``first_warmup_steps <= restart_every`` (Guitaricet/relora@176f376
    ``peft_pretraining/training_utils.py``): a merge inside the first warmup would prune and
    re-warm before the rate has reached its peak."""
    if not get_method(self.optimizer.method).merge_lora or self.schedule.kind != "cosine":
      return
    warmup = self.schedule.warmup_steps
    every = self.optimizer_section().reset_every
    if warmup > every:
      raise ValueError(
          f"schedule.warmup_ratio={self.schedule.warmup_ratio} warms up over {warmup} steps, "
          f"more than ReLoRA's merge period optimizer.reset_every={every}; shorten the warmup"
      )

  def model_config(self) -> LlamaConfig:
    """The model, its target linears parameterized as the method needs (e.g. low-rank)."""
    method = self.optimizer.method
    linear = method_linear(get_method(method), method, self.model.linear)
    return dataclasses.replace(self.model.build(), linear=linear)

  def optimizer_section(self) -> OptimizerSection:
    """The optimizer section with the method's defaults filled in: Adam's ``eps``, the
    restart periods, and the options' that depend on the run (e.g. GoLore's length of
    training)."""
    method = get_method(self.optimizer.method)
    defaults = {
        "eps": method.default_eps,
        "refactorize_every": PAPER_RESTART_EVERY if method.restarts else 0,
        "reset_every": PAPER_RESTART_EVERY if method.restarts or method.merge_lora else 0,
    }
    filled = {
        name: default if getattr(self.optimizer, name) is None else getattr(self.optimizer, name)
        for name, default in defaults.items()
    }
    options = method.parse_options(self.optimizer.options).for_run(self.schedule)
    return dataclasses.replace(self.optimizer, options=dataclasses.asdict(options), **filled)


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
        f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {values!r}"
    )
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  for key in values:
    if key not in names:
      full = f"{prefix}{key}"
      raise ValueError(
          f"unknown config key {full!r}; allowed: {', '.join(sorted(_keys(cls, prefix)))}"
      )
  kwargs = {}
  for key, value in values.items():
    hint = hints[key]
    if dataclasses.is_dataclass(hint):
      kwargs[key] = _build(hint, value, f"{prefix}{key}.")
    elif typing.get_origin(hint) is tuple and isinstance(value, list):
      kwargs[key] = coerce(hint, tuple(value), f"{prefix}{key}")
    else:
      kwargs[key] = coerce(hint, value, f"{prefix}{key}")
  return cls(**kwargs)


def load_config(
    paths: Sequence[str] = (), overrides: Sequence[str] = (), base: dict | None = None
) -> TrainConfig:
  """Reads YAML ``paths`` in order, applies ``key=value`` ``overrides``, validates.

  Values start from ``base`` (default: the defaults of :class:`TrainConfig`, the embedded
  nano run), so a file or override changes only the keys it names.
  """
  return _build(TrainConfig, merged_values(paths, overrides, base))


def merged_values(
    paths: Sequence[str] = (), overrides: Sequence[str] = (), base: dict | None = None
) -> dict:
  """The nested values :func:`load_config` builds its config from, unchecked."""
  values = to_dict(TrainConfig()) if base is None else base
  for path in paths:
    values = merge(values, read_yaml_file(path))
  for override in overrides:
    values = merge(values, parse_override(override))
  return values


def to_dict(config: TrainConfig) -> dict:
  """The config as plain YAML-friendly data (tuples become lists), in field order."""
  return yaml.safe_load(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def resolved_dict(config: TrainConfig) -> dict:
  """:func:`to_dict` with every option of the method and every ``model.linear`` field its
  kind uses, defaults included, and the method's ``eps`` when unset: a value left unset and
  one set to its default describe the same run."""
  values = to_dict(config)
  method = get_method(config.optimizer.method)
  options = method.parse_options(config.optimizer.options)
  values["optimizer"]["options"] = dataclasses.asdict(options)
  values["optimizer"]["eps"] = config.optimizer_section().eps
  values["model"]["linear"] = used_linear_fields(config.model_config().linear)
  return values
