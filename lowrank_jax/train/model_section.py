"""The ``model`` section: which LLaMA to train (its linears are the method's, set by the config)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from lowrank_jax.models import DtypePolicy, LlamaConfig
from lowrank_jax.models.hf import llama_config_from_hf
from lowrank_jax.models.hf_checkpoint import read_hf_config
from lowrank_jax.train.config_section import Section
from lowrank_jax.train.fields import setting
from lowrank_jax.train.linear_keys import check_linear_keys


@dataclasses.dataclass(frozen=True)
class ModelSection(Section):
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
