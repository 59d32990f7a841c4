r"""ReLoRA: LoRA adapters merged into the frozen weights every ``optimizer.reset_every`` steps.

As Guitaricet/relora runs it: AdamW on every parameter; after the update of count
:math:`kK` (:math:`k \ge 1`, :math:`K` = ``reset_every``) the adapters merge into the frozen
weight and restart, their Adam moments are pruned (``pruning``, ``prune_ratio``), and the
rate re-warms from 0 over ``restart_warmup_steps`` updates (a jagged schedule). Its memory
is LoRA's (arXiv 2505.22922, memory accounting).

>>> import optax
>>> from lowrank_jax.train.methods.method import ResolvedOptimizer
>>> section = ResolvedOptimizer("relora", ReloraOptions(restart_warmup_steps=2), reset_every=3)
>>> record = relora_record(optax.constant_schedule(1.0), section)
>>> [(float(r["lr"]), int(r["merge"])) for r in map(record, range(2, 7))]
[(1.0, 0), (0.0, 1), (0.5, 0), (1.0, 0), (0.0, 1)]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import optax

from lowrank_jax import optim
from lowrank_jax.train.fields import setting
from lowrank_jax.train.methods.adam_family import lora_memory
from lowrank_jax.train.methods.method import Method, ResolvedOptimizer, target_mask
from lowrank_jax.train.methods.options import MethodOptions, factory_default
from lowrank_jax.train.update_records import Record, rate

RESTART_WARMUP = 100  # the re-warmup of ReLoRA's README and of the paper's args.py


@dataclasses.dataclass(frozen=True)
class ReloraOptions(MethodOptions):
  """ReLoRA: LoRA merged into the frozen weight every ``optimizer.reset_every`` steps.

  Attributes:
    restart_warmup_steps: updates over which the rate re-warms from 0 after each merge.
    pruning: how the adapters' Adam moments are pruned after a merge: ``random`` or
      ``magnitude``.
    prune_ratio: the fraction of those moments pruned.
  """

  restart_warmup_steps: int = setting(RESTART_WARMUP, at_least=0)
  pruning: str = setting(factory_default(optim.relora, "pruning"), choices=("random", "magnitude"))
  prune_ratio: float = setting(factory_default(optim.relora, "prune_ratio"), at_least=0, at_most=1)

  def factory_kwargs(self, mesh=None) -> dict[str, Any]:
    del mesh
    return {"pruning": self.pruning, "prune_ratio": self.prune_ratio}  # the rate is the trainer's


def relora_learning_rate(schedule: optax.Schedule, section: ResolvedOptimizer) -> optax.Schedule:
  """ReLoRA's jagged rate (:func:`~lowrank_jax.optim.relora_schedule`): a linear re-warm
  from 0 over ``options.restart_warmup_steps`` updates after each merge."""
  return optim.relora_schedule(schedule, section.reset_every, section.options.restart_warmup_steps)


def build(schedule, section: ResolvedOptimizer, mesh=None) -> optax.GradientTransformation:
  """AdamW on every parameter whose adapters' moments are pruned after each merge, at the
  jagged rate (:func:`relora_learning_rate`)."""
  del mesh  # nothing to spread
  return optim.relora(
      relora_learning_rate(schedule, section),
      section.reset_every,
      **section.adam_hyperparameters(),
      adapters=target_mask,
      **section.options.factory_kwargs(),
  )


def relora_record(schedule: optax.Schedule, section: ResolvedOptimizer) -> Record:
  """What each update applies: the jagged rate; the merge and the pruning of the adapters'
  moments follow the update of count :math:`kK` (:math:`k \\ge 1`), the one the rate zeroes."""
  learning_rate = relora_learning_rate(schedule, section)
  every = section.reset_every

  def record(count):
    restart = ((jnp.asarray(count) % every == 0) & (count > 0)).astype(jnp.int32)
    return {"lr": rate(learning_rate(count)), "momentum_reset": restart, "merge": restart}

  return record


METHODS = {
    "relora": Method(
        build,
        relora_record,
        lora_memory,
        "lora",
        options=ReloraOptions,
        factory=optim.relora,
        merge_lora=True,
        takes_reset_every=True,
    ),
}
