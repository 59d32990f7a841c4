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
import typing
from typing import Any, ClassVar
from collections.abc import Sequence

import yaml

from lowrank_jax.data.config import DataConfig
from lowrank_jax.models import LlamaConfig
from lowrank_jax.train.config_section import Section
from lowrank_jax.train.config_sources import merge, parse_override, read_yaml_file
from lowrank_jax.train.fields import coerce, setting
from lowrank_jax.train.linear_keys import method_linear, used_linear_fields
from lowrank_jax.train.methods import ResolvedOptimizer, get_method
from lowrank_jax.train.model_section import ModelSection
from lowrank_jax.train.optimizer_section import OptimizerSection
from lowrank_jax.train.run_sections import (
    CheckpointSection,
    DistributedSection,
    EvalSection,
    FaultsSection,
    LoggingSection,
    MeshSection,
    ScheduleSection,
)

__all__ = [  # the sections live in their own modules; this one assembles them
    "CheckpointSection",
    "DistributedSection",
    "EvalSection",
    "FaultsSection",
    "LoggingSection",
    "MeshSection",
    "ModelSection",
    "OptimizerSection",
    "ScheduleSection",
    "TrainConfig",
    "load_config",
    "merged_values",
    "resolved_dict",
    "to_dict",
]


# The embedded default run: the nano model on the embedded corpus, minutes on a CPU.
NANO_DATA = DataConfig(
    vocab_size=4096, seq_len=128, global_batch_size=32, mode="packed", validation_tokens=100_000
)


@dataclasses.dataclass(frozen=True)
class TrainConfig(Section):
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
    # resolved once, here, and read by every consumer (frozen: set as the init would)
    method = self.optimizer.method
    linear = method_linear(get_method(method), method, self.model.linear)
    object.__setattr__(
        self, "_model_config", dataclasses.replace(self.model.build(), linear=linear)
    )
    object.__setattr__(self, "_resolved_optimizer", self.optimizer.resolve(self.schedule))
    self._check_relora_warmup()
    max_seq_len = self.model_config().max_seq_len
    if self.data.seq_len > max_seq_len:
      raise ValueError(
          f"data.seq_len={self.data.seq_len} exceeds the model's max_seq_len={max_seq_len}"
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
    return self._model_config

  def optimizer_section(self) -> ResolvedOptimizer:
    """The optimizer section resolved for this run (:meth:`OptimizerSection.resolve`)."""
    return self._resolved_optimizer


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
  values["optimizer"]["options"] = dataclasses.asdict(config.optimizer.method_options)
  values["optimizer"]["eps"] = config.optimizer_section().eps
  values["model"]["linear"] = used_linear_fields(config.model_config().linear)
  return values
