"""Model configuration: the LLaMA sizes of the GaLore-lineage protocol and a dtype policy.

The presets are the models of the paper (GaLore's Table, LLaMA 60M to 7B), plus ``nano``, a
model small enough for a CPU to train to a meaningful perplexity in minutes, and ``micro``, the
benchmark's CPU model: a 1,024-piece vocabulary leaves 73% of its parameters in the seven target
linears (the methods differ there; nano and 60m hold 43%), and it sees 2.5 tokens per parameter
in a couple of minutes (``experiments/grids/cpu_protocol.yaml``).

>>> from lowrank_jax.models import LlamaConfig
>>> cfg = LlamaConfig.preset("60m")
>>> cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_layers
(512, 1376, 8, 8)
>>> LlamaConfig.preset("nano", num_layers=2).num_layers
2
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from lowrank_jax.models.linear import LinearConfig

_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class DtypePolicy:
  """Which dtype parameters are stored in and which dtype the math runs in.

  Attributes:
    param_dtype: dtype of the stored parameters ("float32", "bfloat16" or "float16").
    compute_dtype: dtype of activations and matrix products. Norm statistics, softmax
      and the loss are always computed in float32.
  """

  param_dtype: str = "float32"
  compute_dtype: str = "float32"

  def __post_init__(self):
    for field in ("param_dtype", "compute_dtype"):
      value = getattr(self, field)
      if value not in _DTYPES:
        raise ValueError(f"{field}={value!r} is not supported; expected one of {_DTYPES}")

  @classmethod
  def named(cls, name: str) -> DtypePolicy:
    """``"fp32"`` (tests), ``"bf16"`` (pure bf16, the paper) or ``"mixed"`` (fp32 master, bf16 math)."""
    policies = {
        "fp32": cls("float32", "float32"),
        "bf16": cls("bfloat16", "bfloat16"),
        "mixed": cls("float32", "bfloat16"),
    }
    if name not in policies:
      raise ValueError(f"dtype policy {name!r} is unknown; expected one of {sorted(policies)}")
    return policies[name]

  @property
  def param(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  @property
  def compute(self) -> jnp.dtype:
    return jnp.dtype(self.compute_dtype)


# name: (hidden, intermediate, heads, layers); vocab 32000 (t5-base) except nano and micro.
_PRESETS: dict[str, dict[str, Any]] = {
    "nano": dict(
        hidden_size=128, intermediate_size=352, num_heads=4, num_layers=4, vocab_size=4096
    ),
    "micro": dict(
        hidden_size=64, intermediate_size=176, num_heads=4, num_layers=7, vocab_size=1024
    ),
    "60m": dict(hidden_size=512, intermediate_size=1376, num_heads=8, num_layers=8),
    "130m": dict(hidden_size=768, intermediate_size=2048, num_heads=12, num_layers=12),
    "350m": dict(hidden_size=1024, intermediate_size=2736, num_heads=16, num_layers=24),
    "1b": dict(hidden_size=2048, intermediate_size=5461, num_heads=32, num_layers=24),
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_heads=32, num_layers=32),
}

PRESETS = tuple(_PRESETS)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """A LLaMA of the GaLore-lineage protocol (arXiv 2505.22922, experimental protocol).

  Pre-norm RMSNorm, RoPE with the rotate-half convention, SwiGLU MLP
  ``down(silu(gate x) * up x)``, multi-head attention, no biases, untied embedding and
  lm_head, every Linear and Embedding weight drawn from N(0, init_std). Two options of the
  LLaMA family beyond the paper's protocol, for checkpoints such as Llama 3, TinyLlama or
  SmolLM (``model.init_from``): grouped-query attention (``num_kv_heads``) and tied embeddings.

  Attributes:
    vocab_size: number of token ids (32000 for the paper's t5-base tokenizer).
    hidden_size: model width d.
    intermediate_size: SwiGLU inner width.
    num_heads: attention heads; the head dimension is ``hidden_size // num_heads``.
    num_kv_heads: key/value heads of grouped-query attention, a divisor of ``num_heads``
      (each serves ``num_heads // num_kv_heads`` query heads); ``None``: ``num_heads``
      (multi-head attention, the paper).
    num_layers: transformer blocks.
    max_seq_len: longest sequence the model accepts (RoPE has no table, this is a check).
    rms_norm_eps: RMSNorm epsilon.
    rope_theta: RoPE base.
    tie_word_embeddings: the logits use the embedding's transpose, ``logits = h E^T``, in
      place of a separate lm_head (HF's ``tie_word_embeddings``).
    init_std: standard deviation of the normal initialiser of Linear and Embedding weights.
    scan_layers: store the blocks stacked on a leading ``layers`` axis and run them with
      ``lax.scan`` (fast compiles for deep models); ``False`` keeps a Python list of blocks.
    remat: rematerialise each block in the backward pass (saves activation memory).
    dtype: the :class:`DtypePolicy`.
    linear: the parameterization of the seven target linears of every block.
  """

  vocab_size: int = 32000
  hidden_size: int = 512
  intermediate_size: int = 1376
  num_heads: int = 8
  num_layers: int = 8
  num_kv_heads: int | None = None
  max_seq_len: int = 1024
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  tie_word_embeddings: bool = False
  init_std: float = 0.02
  scan_layers: bool = False
  remat: bool = False
  dtype: DtypePolicy = DtypePolicy()
  linear: LinearConfig = LinearConfig()

  def __post_init__(self):
    for field in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_heads",
        "num_layers",
        "max_seq_len",
    ):
      value = getattr(self, field)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{field}={value!r} must be a positive integer")
    if self.hidden_size % self.num_heads:
      raise ValueError(
          f"hidden_size={self.hidden_size} is not divisible by " f"num_heads={self.num_heads}"
      )
    kv_heads = self.num_kv_heads
    if kv_heads is not None and (
        not isinstance(kv_heads, int) or kv_heads < 1 or self.num_heads % kv_heads
    ):
      raise ValueError(
          f"num_kv_heads={kv_heads!r} must be a positive divisor of num_heads={self.num_heads}"
      )
    if (self.hidden_size // self.num_heads) % 2:
      raise ValueError(f"head dimension {self.hidden_size // self.num_heads} must be even for RoPE")
    for field in ("rms_norm_eps", "rope_theta", "init_std"):
      if not getattr(self, field) > 0:
        raise ValueError(f"{field}={getattr(self, field)!r} must be positive")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def kv_heads(self) -> int:
    """Key/value heads: ``num_kv_heads``, or ``num_heads`` without grouped-query attention."""
    return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

  @property
  def kv_size(self) -> int:
    """Width of the key and value projections: ``kv_heads * head_dim``."""
    return self.kv_heads * self.head_dim

  @property
  def target_linears(self) -> dict[str, tuple[int, int]]:
    """``(in, out)`` of the seven target linears of a block, by module name (HF's)."""
    d, f, kv = self.hidden_size, self.intermediate_size, self.kv_size
    return {
        "q_proj": (d, d),
        "k_proj": (d, kv),
        "v_proj": (d, kv),
        "o_proj": (d, d),
        "gate_proj": (d, f),
        "up_proj": (d, f),
        "down_proj": (f, d),
    }

  @classmethod
  def preset(cls, name: str, **overrides: Any) -> LlamaConfig:
    """The named size (one of :data:`PRESETS`) with ``overrides`` applied."""
    if name not in _PRESETS:
      raise ValueError(f"model preset {name!r} is unknown; expected one of {list(PRESETS)}")
    return cls(**{**_PRESETS[name], **overrides})
