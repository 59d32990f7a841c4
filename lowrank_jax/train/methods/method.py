"""What the trainer knows of a training method, and the optimizer section resolved for a run.

A :class:`Method` is written once, in the module of its family (``adam_family``,
``projected``, ``spam``, ``relora``, ``loro``): its options class (whose defaults are its
:mod:`lowrank_jax.optim` factory's), how it builds its transform, the linear kind of its
model, what each update records and its memory formula. :class:`ResolvedOptimizer` is the
``optimizer`` section of one run with every default filled in and the options typed, built
once by the config and read by every consumer.

Projection methods (GaLore, Fira, APOLLO, GoLore) touch only the seven target linears of
every block; embedding, lm_head and norms get plain Adam, as in the paper (arXiv 2505.22922,
experimental protocol).

>>> import jax.numpy as jnp
>>> params = {"self_attn": {"q_proj": {"kernel": jnp.ones((4, 4))}}, "embed_tokens": jnp.ones((9, 4))}
>>> target_mask(params)
{'embed_tokens': False, 'self_attn': {'q_proj': {'kernel': True}}}
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any
from collections.abc import Callable

import jax
import optax

from lowrank_jax.models.linear.registry import needs_rank
from lowrank_jax.optim.param_groups import param_groups
from lowrank_jax.optim.tree_utils import path_names
from lowrank_jax.train.methods.options import MethodOptions, NoOptions

TARGET_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

PAPER_RESTART_EVERY = 200  # the *_restarts methods' and ReLoRA's period (arXiv 2505.22922)


def is_target_matrix(names: tuple, leaf) -> bool:
  """Whether the leaf at path ``names`` is a matrix of one of the seven target linears."""
  return leaf.ndim >= 2 and any(name in TARGET_LINEARS for name in names)


def on_target_matrices(
    target: optax.GradientTransformation, dense: optax.GradientTransformation
) -> optax.GradientTransformation:
  """``target`` on the seven target matrices of every block, ``dense`` on the other leaves
  (embeddings, lm_head, norms): the projected methods' split (arXiv 2505.22922, experimental
  protocol), for a method that brings its own transform for the matrices."""
  return param_groups(
      {"target": target, "dense": dense},
      lambda names, leaf: "target" if is_target_matrix(names, leaf) else "dense",
  )


def target_mask(params: Any) -> Any:
  """``True`` for the parameters of the seven target linears of every block."""
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: is_target_matrix(path_names(path), leaf), params
  )


@dataclasses.dataclass(frozen=True)
class Entries:
  """Array entries of one target matrix, or summed over a model: a method's memory formula
  (:mod:`lowrank_jax.memory.analytic`) gives them per ``m x n`` matrix at rank ``r``.

  Attributes:
    weights: entries of the weights (trained and frozen).
    optimizer: entries of the optimizer state.
    indices: int32 index entries (SLTrain's support).
  """

  weights: int
  optimizer: int
  indices: int = 0

  def __add__(self, other: Entries) -> Entries:
    return Entries(
        self.weights + other.weights, self.optimizer + other.optimizer, self.indices + other.indices
    )


MemoryFormula = Callable[[int, int, int, float], Entries]  # (m, n, rank, density) -> Entries
DenseMemory = Callable[[tuple[int, ...]], int]  # a dense leaf's shape -> optimizer entries


def adam_moments(shape: tuple[int, ...]) -> int:
  """Adam's two moments of a dense leaf: what every method but Lion and Adafactor keeps on
  the embeddings, lm_head and norms (arXiv 2505.22922, memory accounting)."""
  return 2 * math.prod(shape)


@dataclasses.dataclass(frozen=True)
class ResolvedOptimizer:
  """The ``optimizer`` section of one run, resolved once: the method's defaults filled in
  (Adam's ``eps``, the restart periods) and its options typed, with the defaults that depend
  on the run's schedule (e.g. GoLore's length of training).

  Attributes:
    method: the method's name.
    options: an instance of the method's options class.
    b1, b2, eps, weight_decay, clip_norm: Adam's hyperparameters and the clipping.
    refactorize_every, reset_every, recovery_steps: the periods of the restarts (0: off).
  """

  method: str
  options: MethodOptions = NoOptions()
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.0
  clip_norm: float | None = None
  refactorize_every: int = 0
  reset_every: int = 0
  recovery_steps: int = 10

  def adam_hyperparameters(self) -> dict:
    """Adam's hyperparameters as the keyword arguments every method factory takes."""
    return dict(b1=self.b1, b2=self.b2, eps=self.eps, weight_decay=self.weight_decay)


@dataclasses.dataclass(frozen=True)
class Method:
  """A named training method.

  Attributes:
    build: ``build(schedule, section, mesh) -> optax transform`` (``section`` a
      :class:`ResolvedOptimizer`; ``mesh`` the run's, over which a projected method may spread
      its refreshes).
    record: ``record(schedule, section) -> record(count)``, what each update applies: its
      learning rates and the method's events (:mod:`lowrank_jax.train.update_records`).
    memory: its memory formula per target matrix (arXiv 2505.22922, memory accounting);
      ``None`` for a registered method without one (the memory report says ``n/a``).
    linear_kind: the parameterization of the target linears it trains (``dense``, ...).
    options: the class of its ``optimizer.options``.
    factory: the :mod:`lowrank_jax.optim` factory it builds, if not AdamW's chain.
    restarts: refactorization and momentum reset every 200 steps unless the section says
      otherwise (the paper's ``*_restarts``).
    merge_lora: ReLoRA's merge-and-reinit of the adapters after updates ``kK + 1``.
    adam_family: AdamW on every parameter, which momentum resets and refactorization wrap.
    takes_reset_every: ``optimizer.reset_every`` applies (the Adam family's resets,
      ReLoRA's merges).
    dense_memory: the optimizer entries it keeps for one dense leaf (embedding, lm_head, a
      norm) of a given shape, with its default options.
  """

  build: Callable
  record: Callable
  memory: MemoryFormula | None
  linear_kind: str = "dense"
  options: type = NoOptions
  factory: Callable | None = None
  restarts: bool = False
  merge_lora: bool = False
  adam_family: bool = False
  takes_reset_every: bool = False
  dense_memory: DenseMemory = adam_moments

  @property
  def default_eps(self) -> float:
    """Adam's ``eps`` where ``optimizer.eps`` is unset: its factory's default (the
    reference code's: galore-torch's, Fira's, APOLLO's and SPAM's AdamW take 1e-6), else
    PyTorch's and optax's AdamW's 1e-8 (also for a registered factory without ``eps``)."""
    eps = None if self.factory is None else inspect.signature(self.factory).parameters.get("eps")
    return 1e-8 if eps is None else eps.default

  @property
  def option_names(self) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(self.options))

  @property
  def rank_key(self) -> str | None:
    """The config key that sets this method's rank ``r``: ``optimizer.options.rank`` where
    its options have one (the projection's rank of GaLore, Fira, APOLLO, GoLore),
    ``model.linear.rank`` where its linear kind needs one (the factors' inner size of
    Low-Rank, LoRA, SLTrain, CoLA, LoRO, ReLoRA), ``None`` for a method without a rank.

    >>> from lowrank_jax.train.methods import get_method
    >>> [get_method(name).rank_key for name in ("galore", "low_rank", "adamw")]
    ['optimizer.options.rank', 'model.linear.rank', None]
    """
    if "rank" in self.option_names:
      return "optimizer.options.rank"
    if needs_rank(self.linear_kind):
      return "model.linear.rank"
    return None


def every_parameter(
    factory: Callable, options: type, record: Callable, memory: MemoryFormula, **kinds
) -> Method:
  """A method whose ``factory`` routes the parameters itself (SPAM, Stable-SPAM, LoRO): it
  takes the Adam hyperparameters and the keywords of its ``options``."""

  def build(schedule, section: ResolvedOptimizer, mesh=None):
    del mesh  # nothing to spread
    return factory(schedule, **section.adam_hyperparameters(), **section.options.factory_kwargs())

  return Method(build, record, memory, options=options, factory=factory, **kinds)
