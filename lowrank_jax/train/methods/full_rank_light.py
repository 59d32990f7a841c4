r"""Full-rank optimizers with less state than Adam: Muon, Adafactor and Lion, as optax has them.

Each trains the dense model with optax's own transform (``optax.contrib.scale_by_muon``,
``optax.adafactor``'s scaling, ``optax.scale_by_lion``) under the trainer's decoupled weight
decay and learning rate, ``-lr_t (u_t + wd w_t)``, so every update is linear in the rate and
``optimizer.dense_learning_rate`` is exact for them (:mod:`lowrank_jax.train.dense_rate`).

- **Muon** (Keller Jordan, KellerJordan/modded-nanogpt; Liu et al., arXiv 2502.16982)
  orthogonalizes the Nesterov momentum of each of the seven target matrices by Newton-Schulz
  and gives AdamW the dense leaves (embeddings, lm_head, norms), as its authors run it. Each
  matrix of a stacked-layer leaf ``(L, m, n)`` is orthogonalized on its own.
- **Adafactor** (Shazeer and Stern, arXiv 1804.04235) keeps a factored second moment (a row
  and a column vector per matrix whose two sides are at least ``min_dim_size_to_factor``)
  and no momentum; **Lion** (Chen et al., arXiv 2302.06675) steps by the sign of an
  interpolated momentum. Both run on every leaf, as their authors do, unless
  ``dense_leaves: adamw`` gives the dense leaves the trainer's AdamW (protocol B, which
  compares the methods on the matrices only, needs that).

Their optimizer state per target matrix ``m x n`` (weights ``mn``), and per dense leaf::

    Muon        mn momentum                                     dense: Adam's 2 moments
    Lion        mn momentum                                     dense: one moment
    Adafactor   m + n (factored; mn when a side is below 128)    dense: the same rule

>>> LionOptions().b2, AdafactorOptions().decay_rate, MuonOptions().consistent_rms
(0.99, 0.8, 0.2)
>>> LionOptions(dense_leaves="sgd")
Traceback (most recent call last):
...
ValueError: optimizer.options.dense_leaves='sgd' is unknown; allowed: own, adamw
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax
from optax import contrib

from lowrank_jax.optim.adam import with_decoupled_weight_decay
from lowrank_jax.train.methods import adam_family
from lowrank_jax.train.fields import setting
from lowrank_jax.train.methods.method import (
    Entries,
    Method,
    ResolvedOptimizer,
    on_target_matrices,
)
from lowrank_jax.train.methods.options import MethodOptions, factory_default
from lowrank_jax.train.update_records import schedule_record

DENSE_LEAVES = ("own", "adamw")


def dense_leaves_setting():
  """``dense_leaves``: ``own`` (the method on every leaf, its authors' way) or ``adamw``."""
  return setting("own", choices=DENSE_LEAVES)


@dataclasses.dataclass(frozen=True)
class MuonOptions(MethodOptions):
  """Muon on the target matrices; AdamW (``optimizer.b1``, ``b2``, ``eps``) on the rest.

  Attributes:
    beta: momentum decay (``optax.contrib.muon``'s and modded-nanogpt's 0.95).
    ns_steps: Newton-Schulz iterations (both's 5).
    nesterov: Nesterov momentum (both's ``true``).
    consistent_rms: scale each orthogonalized update by ``consistent_rms * sqrt(max(m, n))``
      so its RMS matches AdamW's and one learning rate serves both groups (arXiv 2502.16982,
      section 2.2: 0.2); ``null``: modded-nanogpt's ``sqrt(max(1, n / m))``, which needs its
      own, larger rate (0.02-0.05) beside Adam's.
  """

  beta: float = setting(factory_default(contrib.muon, "beta"), at_least=0, below=1)
  ns_steps: int = setting(factory_default(contrib.muon, "ns_steps"), at_least=1)
  nesterov: bool = factory_default(contrib.muon, "nesterov")
  consistent_rms: float | None = setting(0.2, above=0)


@dataclasses.dataclass(frozen=True)
class LionOptions(MethodOptions):
  """Lion: ``u = sign(b1 m + (1 - b1) g)``, then ``m <- b2 m + (1 - b2) g``.

  Its update has unit RMS, so its rate is 3-10x below AdamW's and its weight decay 3-10x
  above (arXiv 2302.06675, section 5); the defaults are the paper's and ``optax.lion``'s.

  Attributes:
    b1: the interpolation of the update (0.9).
    b2: the momentum's decay (0.99).
    dense_leaves: ``own`` (Lion on every leaf) or ``adamw`` (AdamW with ``optimizer.b1``,
      ``b2``, ``eps`` on the embeddings, lm_head and norms).
  """

  b1: float = setting(factory_default(optax.lion, "b1"), at_least=0, below=1)
  b2: float = setting(factory_default(optax.lion, "b2"), at_least=0, below=1)
  dense_leaves: str = dense_leaves_setting()


@dataclasses.dataclass(frozen=True)
class AdafactorOptions(MethodOptions):
  """Adafactor as ``optax.adafactor`` has it (its defaults, arXiv 1804.04235, algorithm 4).

  Attributes:
    decay_rate: the second moment's decay is ``1 - t^-decay_rate`` (0.8).
    clipping_threshold: clip each leaf's update to this RMS (1.0; ``null``: no clipping).
    multiply_by_parameter_scale: scale each leaf's update by its weights' RMS (at least
      1e-3), so the rate is relative (the paper's ``rho``, 1e-2 at most).
    momentum: decay of a first moment of the scaled updates (``null``: none, the paper's
      memory-saving choice).
    min_dim_size_to_factor: factor the second moment only where the two largest sides are
      both at least this (128).
    dense_leaves: ``own`` (Adafactor on every leaf) or ``adamw``.

  With ``model.scan_layers`` the clipping and the parameter scale see a stacked leaf whole.
  """

  decay_rate: float = setting(factory_default(optax.adafactor, "decay_rate"), above=0)
  clipping_threshold: float | None = setting(
      factory_default(optax.adafactor, "clipping_threshold"), above=0
  )
  multiply_by_parameter_scale: bool = factory_default(
      optax.adafactor, "multiply_by_parameter_scale"
  )
  momentum: float | None = setting(factory_default(optax.adafactor, "momentum"), at_least=0)
  min_dim_size_to_factor: int = setting(
      factory_default(optax.adafactor, "min_dim_size_to_factor"), at_least=1
  )
  dense_leaves: str = dense_leaves_setting()


def muon_direction(options: MuonOptions) -> optax.GradientTransformation:
  """Muon's orthogonalized momentum, shape-scaled, for leaves ``(..., m, n)`` (leading axes:
  independent matrices)."""
  per_matrix = lambda updates: jax.tree.map(
      lambda _: contrib.MuonDimensionNumbers(reduction_axis=-2, output_axis=-1), updates
  )
  return optax.chain(
      contrib.scale_by_muon(
          ns_steps=options.ns_steps,
          beta=options.beta,
          nesterov=options.nesterov,
          weight_dimension_numbers=per_matrix,
      ),
      scale_by_matrix_shape(options.consistent_rms),
  )


def scale_by_matrix_shape(consistent_rms: float | None) -> optax.GradientTransformation:
  """Scales each matrix ``(..., m, n)``'s orthogonalized update, whose RMS is about
  ``1 / sqrt(max(m, n))``, by ``consistent_rms * sqrt(max(m, n))`` (AdamW's RMS, arXiv
  2502.16982, section 2.2), or by ``sqrt(max(1, n / m))`` where ``consistent_rms`` is ``None``
  (modded-nanogpt's): ``optax.contrib.muon``'s last step.

  >>> import jax.numpy as jnp
  >>> updates, _ = scale_by_matrix_shape(0.2).update({"w": jnp.ones((2, 16, 4))}, None)
  >>> float(updates["w"][0, 0, 0])  # 0.2 * sqrt(16)
  0.800000011920929
  """

  def scale(update):
    m, n = update.shape[-2:]
    if consistent_rms is None:
      return jnp.sqrt(jnp.maximum(1, n / m)) * update
    return jnp.sqrt(jnp.maximum(m, n)) * consistent_rms * update

  return optax.stateless(lambda updates, params: jax.tree.map(scale, updates))


def adafactor_direction(options: AdafactorOptions) -> optax.GradientTransformation:
  """``optax.adafactor`` without its rate and weight decay, the sign undone: the direction
  the trainer's ``-lr_t (u + wd w)`` steps along."""
  return optax.chain(
      optax.adafactor(
          None,
          min_dim_size_to_factor=options.min_dim_size_to_factor,
          decay_rate=options.decay_rate,
          multiply_by_parameter_scale=options.multiply_by_parameter_scale,
          clipping_threshold=options.clipping_threshold,
          momentum=options.momentum,
      ),
      optax.scale(-1.0),
  )


def lion_direction(options: LionOptions) -> optax.GradientTransformation:
  return optax.scale_by_lion(options.b1, options.b2)


def light_method(direction, options: type, memory, dense_memory=None) -> Method:
  """A method stepping ``-lr_t (u + wd w)`` along ``direction(options)`` on the leaves it
  trains, the dense leaves AdamW's where they are (routed by
  :func:`~lowrank_jax.train.methods.method.on_target_matrices`, as registered methods).

  ``dense_memory`` gives the optimizer entries of one dense leaf where the method keeps its
  own state there (``None``: AdamW's two moments, as Muon).
  """

  def build(schedule, section: ResolvedOptimizer, mesh=None) -> optax.GradientTransformation:
    del mesh  # nothing to spread
    moved = with_decoupled_weight_decay(
        direction(section.options), schedule, section.weight_decay, None
    )
    if getattr(section.options, "dense_leaves", "adamw") == "own":
      return moved
    return on_target_matrices(moved, adam_family.build(schedule, section))

  kinds = {} if dense_memory is None else {"dense_memory": dense_memory}
  return Method(build, schedule_record, memory, options=options, **kinds)


def factored_entries(shape: tuple[int, ...], min_dim_size_to_factor: int = 128) -> int:
  """Entries of Adafactor's second moment of a leaf: a row and a column vector where its two
  largest sides are at least ``min_dim_size_to_factor``, else one entry per weight (optax's
  rule, leading axes multiplying both).

  >>> factored_entries((512, 256)), factored_entries((64, 256)), factored_entries((2048,))
  (768, 16384, 2048)
  """
  size = math.prod(shape)
  if len(shape) < 2:
    return size
  smaller, larger = sorted(shape)[-2:]
  if smaller < min_dim_size_to_factor:
    return size
  return size // larger + size // smaller


def momentum_memory(m, n, r, delta) -> Entries:
  """Muon's and Lion's state: one momentum per weight."""
  del r, delta
  return Entries(m * n, m * n)


def adafactor_memory(m, n, r, delta) -> Entries:
  del r, delta
  return Entries(m * n, factored_entries((m, n)))


METHODS = {
    "muon": light_method(muon_direction, MuonOptions, momentum_memory),
    "adafactor": light_method(
        adafactor_direction, AdafactorOptions, adafactor_memory, factored_entries
    ),
    "lion": light_method(lion_direction, LionOptions, momentum_memory, math.prod),
}
