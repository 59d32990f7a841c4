"""The paper's memory count: bytes of weights plus optimizer state, from shapes alone.

arXiv 2505.22922, memory accounting counts, for every target matrix ``m x n`` (the seven linears of each
block) at rank ``r``::

    method            weights                     optimizer state (Adam)
    Full-Rank         mn                          2 mn
    GaLore / Fira     mn                          min(m, n) r + 2 r max(m, n)
    APOLLO            mn                          2 r max(m, n)
    Low-Rank          (m + n) r                   2 (m + n) r
    LoRA / ReLoRA     mn + (m + n) r              2 (m + n) r
    SLTrain           (m + n) r + s               2 ((m + n) r + s),  s = int(delta mn)

and every other parameter (embedding, lm_head, norms: ``2 V d + (2 L + 1) d`` entries, ``V d``
fewer with tied embeddings) as its
weights plus two Adam moments. Bytes are ``bytes-per-entry x entries`` in the policy's
parameter dtype, plus SLTrain's ``s`` int32 support indices per matrix (4 bytes each), which
the paper writes as "(+ indices)".

What the count leaves out, on purpose (:mod:`lowrank_jax.memory.measured` lists them
separately as *extras*): step counters, per-matrix scalars (Fira's and APOLLO's norms, the
SPAM EMAs) and APOLLO's seed: at most one number per matrix per layer. CoLA has the factor
shapes of Low-Rank, SPAM / Stable-SPAM the state of Full-Rank, GoLore that of GaLore and
APOLLO-Mini that of APOLLO at rank 1.

>>> from lowrank_jax.models import LlamaConfig
>>> cfg = LlamaConfig.preset("nano")
>>> full = analytic_memory(cfg, "full_rank", rank=32)
>>> full.weights == sum(m * n for m, n in target_shapes(cfg)) + non_target_entries(cfg)
True
>>> full.optimizer == 2 * full.weights
True
>>> analytic_memory(cfg, "low_rank", rank=32).total_bytes < full.total_bytes
True
>>> print(analytic_memory(cfg, "a_method_without_a_formula", rank=32))
None
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp

from lowrank_jax.models import LlamaConfig

# The rank r of each size (arXiv 2505.22922, experimental protocol); nano takes a quarter of its width.
PAPER_RANKS = {"nano": 32, "60m": 128, "130m": 256, "350m": 256, "1b": 512, "7b": 1024}
PAPER_DENSITY = 0.03  # SLTrain's delta
INDEX_BYTES = 4  # int32 support indices


@dataclasses.dataclass(frozen=True)
class Entries:
  """Array entries of one target matrix, or summed over a model.

  Attributes:
    weights: entries of the weights (trained and frozen).
    optimizer: entries of the optimizer state.
    indices: int32 index entries (SLTrain's support), counted at :data:`INDEX_BYTES` each.
  """

  weights: int
  optimizer: int
  indices: int = 0

  def __add__(self, other: Entries) -> Entries:
    return Entries(
        self.weights + other.weights, self.optimizer + other.optimizer, self.indices + other.indices
    )


@dataclasses.dataclass(frozen=True)
class AnalyticMemory:
  """The paper's count for one model and method.

  Attributes:
    weights, optimizer, indices: entries, as in :class:`Entries`, summed over the model.
    bytes_per_entry: itemsize of the parameter dtype.
  """

  weights: int
  optimizer: int
  indices: int
  bytes_per_entry: int

  @property
  def weight_bytes(self) -> int:
    return self.bytes_per_entry * self.weights + INDEX_BYTES * self.indices

  @property
  def optimizer_bytes(self) -> int:
    return self.bytes_per_entry * self.optimizer

  @property
  def total_bytes(self) -> int:
    return self.weight_bytes + self.optimizer_bytes


MatrixFormula = Callable[[int, int, int, float], Entries]


def _full_rank(m, n, r, delta):
  return Entries(m * n, 2 * m * n)


def _galore(m, n, r, delta):
  return Entries(m * n, min(m, n) * r + 2 * r * max(m, n))


def _apollo(m, n, r, delta):
  return Entries(m * n, 2 * r * max(m, n))


def _apollo_mini(m, n, r, delta):
  return _apollo(m, n, 1, delta)


def _low_rank(m, n, r, delta):
  return Entries((m + n) * r, 2 * (m + n) * r)


def _lora(m, n, r, delta):
  return Entries(m * n + (m + n) * r, 2 * (m + n) * r)


def sparse_entries(m: int, n: int, delta: float) -> int:
  """SLTrain's support size ``int(delta m n)``, at least 1 (as the model draws it)."""
  return max(1, int(delta * m * n))


def _sltrain(m, n, r, delta):
  trained = (m + n) * r + sparse_entries(m, n, delta)
  return Entries(trained, 2 * trained, sparse_entries(m, n, delta))


# In the order of the paper's table: where two method names train identically (``adamw`` and
# ``full_rank``), the report's default rows keep the first (:func:`report.default_methods`).
FORMULAS: dict[str, MatrixFormula] = {
    "full_rank": _full_rank,
    "adamw": _full_rank,
    "spam": _full_rank,
    "stable_spam": _full_rank,
    "galore": _galore,
    "fira": _galore,
    "golore": _galore,
    "apollo": _apollo,
    "apollo_mini": _apollo_mini,
    "low_rank": _low_rank,
    "low_rank_restarts": _low_rank,
    "cola": _low_rank,
    "loro": _low_rank,
    "lora": _lora,
    "relora": _lora,
    "sltrain": _sltrain,
    "sltrain_restarts": _sltrain,
}


def target_shapes(config: LlamaConfig) -> list[tuple[int, int]]:
  """``(in, out)`` of the seven target linears of every block, for all blocks (k and v are
  ``d x kv_size``, narrower than ``d`` with grouped-query attention)."""
  return list(config.target_linears.values()) * config.num_layers


def non_target_entries(config: LlamaConfig) -> int:
  """Embedding, lm_head and norm weights: ``2 V d + (2 L + 1) d`` (``V d`` for both
  matrices with tied embeddings)."""
  d = config.hidden_size
  matrices = 1 if config.tie_word_embeddings else 2
  return matrices * config.vocab_size * d + (2 * config.num_layers + 1) * d


def analytic_memory(
    config: LlamaConfig, method: str, rank: int, density: float = PAPER_DENSITY
) -> AnalyticMemory | None:
  """The paper's count for ``method`` on ``config``, or ``None`` if it has no formula.

  Args:
    config: the model (its sizes and its parameter dtype are read; its ``linear`` is not).
    method: a name of :data:`FORMULAS` (the methods of :mod:`lowrank_jax.train.methods`).
    rank: the rank ``r`` of the factors or projections (APOLLO-Mini always uses 1).
    density: SLTrain's ``delta``, in (0, 1].
  """
  if not isinstance(rank, int) or rank < 1:
    raise ValueError(f"rank={rank!r} must be a positive integer")
  if not 0 < density <= 1:
    raise ValueError(f"density={density!r} must be in (0, 1]")
  formula = FORMULAS.get(method)
  if formula is None:
    return None
  non_target = non_target_entries(config)
  total = Entries(non_target, 2 * non_target)
  for m, n in target_shapes(config):
    total += formula(m, n, rank, density)
  return AnalyticMemory(
      total.weights, total.optimizer, total.indices, jnp.dtype(config.dtype.param).itemsize
  )
