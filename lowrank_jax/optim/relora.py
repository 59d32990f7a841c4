r"""ReLoRA's optimizer side: Adam whose state restarts with each merge, and its jagged schedule.

Lialin, Shivagunde, Muckatira, Rumshisky, "ReLoRA: High-Rank Training Through Low-Rank
Updates", ICLR 2024 (reference: Guitaricet/relora). ReLoRA trains LoRA adapters
(:class:`~lowrank_jax.models.lora.LoRALinear`) and, every :math:`K` steps, merges them into
the frozen weight and starts new ones (:func:`~lowrank_jax.models.lora.merge_lora_adapters`,
model side: the frozen weight is not an optimizer parameter). At the same moment the
adapters' Adam state is thrown away and the learning rate re-warms:

.. math::

  \eta(t) = \begin{cases}
    s(kK + W) \, \dfrac{t - kK}{W} & kK \le t < kK + W,\ k \ge 1, \\
    s(t) & \text{otherwise,}
  \end{cases}

with :math:`s` a linear warmup from 0 then a cosine decay to ``min_lr_ratio`` of the peak.

Deliberate departures from the reference: the Adam state is zeroed, step count included
(:func:`~lowrank_jax.optim.momentum_reset.momentum_reset`), where the reference prunes 99.9%
of the moment entries at random and keeps the count; and A restarts from Kaiming-uniform,
where the reference's first cycle has A = 0 (it trains nothing in the adapters).

Step alignment: merge and reset act at the end of the update whose 1-based number is
:math:`kK`; the next update (count :math:`kK`) has learning rate 0, the reference's too.

>>> schedule = relora_schedule(1.0, total_steps=100, warmup_steps=5, restart_every=20,
...                            restart_warmup_steps=4)
>>> [round(float(schedule(t)), 3) for t in (0, 5, 19, 20, 22, 24)]
[0.0, 1.0, 0.953, 0.0, 0.457, 0.914]
"""

from __future__ import annotations

import optax

from lowrank_jax.optim.momentum_reset import momentum_reset
from lowrank_jax.optim.restart_schedule import rewarm_after_restarts
from lowrank_jax.optim.validation import check_positive_int, check_range


def relora_schedule(
    peak_value: float,
    total_steps: int,
    warmup_steps: int,
    restart_every: int,
    restart_warmup_steps: int,
    min_lr_ratio: float = 0.1,
) -> optax.Schedule:
  """ReLoRA's jagged cosine: warmup, cosine decay, and a linear re-warmup after each restart.

  Args:
    peak_value: the learning rate at the end of the first warmup (> 0).
    total_steps: length of the cosine (Python int >= 1); it ends at
      ``min_lr_ratio * peak_value``.
    warmup_steps: the first linear warmup from 0 (Python int >= 1, <= restart_every).
    restart_every: :math:`K`, the merge period (Python int >= 1).
    restart_warmup_steps: :math:`W`, the re-warmup length (Python int, 1 <= W <= K).
    min_lr_ratio: the floor of the cosine as a fraction of the peak, in [0, 1].
  """
  check_range("peak_value", peak_value, 0.0)
  for name, value in (
      ("total_steps", total_steps),
      ("warmup_steps", warmup_steps),
      ("restart_every", restart_every),
      ("restart_warmup_steps", restart_warmup_steps),
  ):
    check_positive_int(name, value)
  if warmup_steps > restart_every or restart_warmup_steps > restart_every:
    raise ValueError(
        f"warmup_steps={warmup_steps} and restart_warmup_steps="
        f"{restart_warmup_steps} must be <= restart_every={restart_every}."
    )
  check_range("min_lr_ratio", min_lr_ratio, 0.0, 1.0, include_high=True)
  base = optax.warmup_cosine_decay_schedule(
      0.0, peak_value, warmup_steps, total_steps, end_value=min_lr_ratio * peak_value
  )
  return rewarm_after_restarts(
      base, restart_every, restart_warmup_steps, lambda since: since / restart_warmup_steps
  )


def relora(
    learning_rate: optax.ScalarOrSchedule,
    restart_every: int,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
  """AdamW whose moments and count restart at the end of every ``restart_every``-th update.

  Args:
    learning_rate: a float or a schedule, typically :func:`relora_schedule`.
    restart_every: :math:`K`, the merge period (Python int >= 1); merge the adapters with
      :func:`~lowrank_jax.models.lora.merge_lora_adapters` after the same updates.
    b1, b2: Adam's decays, in [0, 1).
    eps: added to Adam's bias-corrected ``sqrt(v)`` (PyTorch AdamW's placement), >= 0.
    weight_decay: decoupled weight decay, >= 0.

  Returns:
    The optimizer (its ``update`` needs ``params``).
  """
  check_range("b1", b1, 0.0, 1.0)
  check_range("b2", b2, 0.0, 1.0)
  check_range("eps", eps, 0.0)
  check_range("weight_decay", weight_decay, 0.0)
  return optax.chain(
      momentum_reset(optax.scale_by_adam(b1, b2, eps), restart_every),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(learning_rate),
  )
