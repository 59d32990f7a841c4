r"""The Adam family: AdamW on every parameter, the model choosing what the parameters are.

Full rank (``adamw``, ``full_rank``) trains dense linears; Low-Rank, LoRA, SLTrain and CoLA
train their factorized linears (:mod:`lowrank_jax.models`); the ``*_restarts`` methods add
the paper's momentum reset and weight refactorization every 200 steps (arXiv 2505.22922,
weight refactorization and momentum reset), after which the rate recovers quickly.

Their memory, per target matrix ``m x n`` at rank ``r`` (arXiv 2505.22922, memory
accounting), weights and Adam's two moments of what is trained::

    Full-Rank    mn                   2 mn
    Low-Rank     (m + n) r            2 (m + n) r           (CoLA: the same shapes)
    LoRA         mn + (m + n) r       2 (m + n) r           (the frozen mn untrained)
    SLTrain      (m + n) r + s        2 ((m + n) r + s),  s = int(delta mn) values + indices

>>> import optax
>>> from lowrank_jax.train.methods.method import ResolvedOptimizer
>>> section = ResolvedOptimizer("low_rank_restarts", reset_every=4, refactorize_every=4,
...                             recovery_steps=2)
>>> record = adam_record(optax.constant_schedule(1.0), section)
>>> [(round(float(r["lr"]), 3), int(r["momentum_reset"])) for r in map(record, range(2, 7))]
[(1.0, 0), (1.0, 1), (0.001, 0), (1.0, 0), (1.0, 0)]
"""

from __future__ import annotations

import optax

from lowrank_jax import optim
from lowrank_jax.train.methods.method import Entries, Method, ResolvedOptimizer
from lowrank_jax.train.update_records import Record, ends_period, rate


def adam_learning_rate(schedule: optax.Schedule, section: ResolvedOptimizer) -> optax.Schedule:
  """The learning rate of the Adam-based methods: ``schedule`` with the paper's quick
  recovery (:func:`~lowrank_jax.optim.restart_schedule`) after every momentum reset."""
  if not section.reset_every:
    return schedule
  return optim.restart_schedule(schedule, section.reset_every, section.recovery_steps)


def build(schedule, section: ResolvedOptimizer, mesh=None) -> optax.GradientTransformation:
  """AdamW on every parameter, with the paper's restarts where the section asks for them.

  ``momentum_reset`` wraps only the moments (so the schedule's count is not reset), the
  learning rate recovers after each reset (:func:`adam_learning_rate`), and ``refactorize``
  wraps the whole optimizer because it needs the updated factors.
  """
  del mesh  # nothing to spread
  moments = optax.scale_by_adam(section.b1, section.b2, section.eps)
  if section.reset_every:
    moments = optim.momentum_reset(moments, section.reset_every)
  tx = optax.chain(
      moments,
      optax.add_decayed_weights(section.weight_decay),
      optax.scale_by_learning_rate(adam_learning_rate(schedule, section)),
  )
  if section.refactorize_every:
    tx = optim.refactorize(tx, section.refactorize_every)
  return tx


def adam_record(schedule: optax.Schedule, section: ResolvedOptimizer) -> Record:
  """What each update applies: the recovering rate, the resets and refactorizations."""
  learning_rate = adam_learning_rate(schedule, section)

  def record(count):
    return {
        "lr": rate(learning_rate(count)),
        "momentum_reset": ends_period(count, section.reset_every),
        "refactorize": ends_period(count, section.refactorize_every),
    }

  return record


def full_rank_memory(m, n, r, delta) -> Entries:
  del r, delta
  return Entries(m * n, 2 * m * n)


def low_rank_memory(m, n, r, delta) -> Entries:
  del delta
  return Entries((m + n) * r, 2 * (m + n) * r)


def lora_memory(m, n, r, delta) -> Entries:
  del delta
  return Entries(m * n + (m + n) * r, 2 * (m + n) * r)


def sparse_entries(m: int, n: int, delta: float) -> int:
  """SLTrain's support size ``int(delta m n)``, at least 1 (as the model draws it)."""
  return max(1, int(delta * m * n))


def sltrain_memory(m, n, r, delta) -> Entries:
  trained = (m + n) * r + sparse_entries(m, n, delta)
  return Entries(trained, 2 * trained, sparse_entries(m, n, delta))


def _adam(memory, linear_kind: str = "dense", restarts: bool = False) -> Method:
  return Method(
      build,
      adam_record,
      memory,
      linear_kind,
      restarts=restarts,
      adam_family=True,
      takes_reset_every=True,
  )


METHODS = {
    "full_rank": _adam(full_rank_memory),
    "adamw": _adam(full_rank_memory),
    "low_rank": _adam(low_rank_memory, "lowrank"),
    "low_rank_restarts": _adam(low_rank_memory, "lowrank", restarts=True),
    "cola": _adam(low_rank_memory, "cola"),
    "lora": _adam(lora_memory, "lora"),
    "sltrain": _adam(sltrain_memory, "sltrain"),
    "sltrain_restarts": _adam(sltrain_memory, "sltrain", restarts=True),
}
