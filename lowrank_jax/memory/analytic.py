"""The paper's memory count: bytes of weights plus optimizer state, from shapes alone.

arXiv 2505.22922, memory accounting counts, for every target matrix ``m x n`` (the seven linears of each
block) at rank ``r``, the weights and optimizer state of the method's formula (its
:attr:`~lowrank_jax.train.methods.Method.memory`, written in its family's module: e.g.
Full-Rank ``mn`` and ``2 mn``, GaLore ``mn`` and ``min(m, n) r + 2 r max(m, n)``, Low-Rank
``(m + n) r`` and ``2 (m + n) r``),
and every other parameter (embedding, lm_head, norms: ``2 V d + (2 L + 1) d`` entries, ``V d``
fewer with tied embeddings) as its
weights plus two Adam moments (Lion's one moment and Adafactor's factored one where they train
those leaves too: the method's ``dense_memory``). Bytes are ``bytes-per-entry x entries`` in the policy's
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
import math

import jax.numpy as jnp

from lowrank_jax.models import LlamaConfig
from lowrank_jax.train.methods import METHODS, get_method, known_method
from lowrank_jax.train.methods.method import Entries, MemoryFormula

# The rank r of each size (arXiv 2505.22922, experimental protocol); nano takes a quarter of its width.
PAPER_RANKS = {"nano": 32, "60m": 128, "130m": 256, "350m": 256, "1b": 512, "7b": 1024}
PAPER_DENSITY = 0.03  # SLTrain's delta
INDEX_BYTES = 4  # int32 support indices


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


# The built-in methods' formulas per target matrix, in the registry's order (the paper's table:
# where two names train identically, ``full_rank`` and ``adamw``, the report keeps the first).
# :func:`analytic_memory` reads the registry itself, so a method registered later counts too.
FORMULAS: dict[str, MemoryFormula] = {name: method.memory for name, method in METHODS.items()}


def target_shapes(config: LlamaConfig) -> list[tuple[int, int]]:
  """``(in, out)`` of the seven target linears of every block, for all blocks (k and v are
  ``d x kv_size``, narrower than ``d`` with grouped-query attention)."""
  return list(config.target_linears.values()) * config.num_layers


def non_target_entries(config: LlamaConfig) -> int:
  """Embedding, lm_head and norm weights: ``2 V d + (2 L + 1) d`` (``V d`` for both
  matrices with tied embeddings)."""
  return sum(math.prod(shape) for shape in dense_shapes(config))


def dense_shapes(config: LlamaConfig) -> list[tuple[int, ...]]:
  """The shapes of the dense leaves, one block's norms at a time: embedding and lm_head
  ``V x d`` (one with tied embeddings), ``2 L + 1`` norms of ``d``."""
  d = config.hidden_size
  matrices = 1 if config.tie_word_embeddings else 2
  return [(config.vocab_size, d)] * matrices + [(d,)] * (2 * config.num_layers + 1)


def analytic_memory(
    config: LlamaConfig, method: str, rank: int, density: float = PAPER_DENSITY
) -> AnalyticMemory | None:
  """The paper's count for ``method`` on ``config``, or ``None`` if it has no formula.

  Args:
    config: the model (its sizes and its parameter dtype are read; its ``linear`` is not).
    method: a name of :data:`lowrank_jax.train.methods.METHODS`, built in or registered.
    rank: the rank ``r`` of the factors or projections (APOLLO-Mini always uses 1).
    density: SLTrain's ``delta``, in (0, 1].
  """
  if not isinstance(rank, int) or rank < 1:
    raise ValueError(f"rank={rank!r} must be a positive integer")
  if not 0 < density <= 1:
    raise ValueError(f"density={density!r} must be in (0, 1]")
  formula = get_method(method).memory if known_method(method) else None
  if formula is None:
    return None
  dense_state = sum(map(METHODS[method].dense_memory, dense_shapes(config)))
  total = Entries(non_target_entries(config), dense_state)
  for m, n in target_shapes(config):
    total += formula(m, n, rank, density)
  return AnalyticMemory(
      total.weights, total.optimizer, total.indices, jnp.dtype(config.dtype.param).itemsize
  )
