"""Non-finite steps: detected inside the jitted step, skipped, counted, and stopped after a streak.

A step is *finite* when ``isfinite(loss) & isfinite(||g||_2) & isfinite(||u||_2)``, with
``g`` the gradient and ``u`` the optimizer's update (one global norm covers every entry: it is
non-finite as soon as one entry is). The update's norm catches what the gradient's cannot: a
finite gradient turned non-finite by the optimizer itself (a decomposition that fails inside
a projection refresh or a manifold step). A non-finite step keeps the
parameters, the frozen variables and the optimizer state exactly as they were

    params', frozen', opt_state' = where(finite, new, old)

and only the step counter advances (it numbers the batches consumed, so the data position,
the checkpoints and the log stay aligned). The host counts consecutive non-finite steps with
:class:`NonFiniteStreak` and stops the run after ``faults.max_bad_steps`` of them.

For tests, :func:`make_injector` poisons chosen steps inside the jitted step (a NaN loss or
an Inf gradient); with no steps configured it is the identity and costs nothing.

>>> import jax.numpy as jnp
>>> inject = make_injector(nan_loss_steps=(2,), inf_grad_steps=(3,))
>>> loss, grads = inject(jnp.int32(2), jnp.float32(1.5), {"w": jnp.ones(2)})
>>> bool(is_finite(loss, jnp.float32(1.0), jnp.float32(0.1)))
False
>>> bool(is_finite(jnp.float32(2.0), jnp.float32(1.0), jnp.float32(jnp.inf)))
False
>>> streak = NonFiniteStreak(max_bad_steps=2)
>>> [streak.observe(step, finite) for step, finite in [(1, True), (2, False), (3, False)]]
[False, False, True]
>>> streak.message()
'steps 2-3 were non-finite (2 in a row, the limit faults.max_bad_steps=2); stopped with the last good state'
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp


def is_finite(loss: jax.Array, grad_norm: jax.Array, update_norm: jax.Array) -> jax.Array:
  """Boolean scalar: the loss and the global norms of the gradient and the update are finite."""
  return jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(update_norm)


def keep_if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
  """``new`` where ``finite``, else ``old``, leaf by leaf (two trees of one structure)."""
  return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


def make_injector(
    nan_loss_steps: Sequence[int] = (), inf_grad_steps: Sequence[int] = ()
) -> Callable:
  """``inject(step, loss, grads) -> (loss, grads)`` poisoning the listed (1-based) steps.

  Args:
    nan_loss_steps: steps whose loss becomes NaN (the gradient stays finite).
    inf_grad_steps: steps whose every gradient entry becomes +Inf (the loss stays finite).

  Returns:
    The identity when both are empty, so production steps carry no injection code.
  """
  if not nan_loss_steps and not inf_grad_steps:
    return lambda step, loss, grads: (loss, grads)

  def hit(step, steps):
    return jnp.isin(step, jnp.asarray(steps or [-1], jnp.int32))

  def inject(step, loss, grads):
    loss = jnp.where(hit(step, nan_loss_steps), jnp.nan, loss)
    poison = jnp.where(hit(step, inf_grad_steps), jnp.inf, 0.0)
    return loss, jax.tree.map(lambda g: g + poison.astype(g.dtype), grads)

  return inject


class NonFiniteStreak:
  """Host-side count of consecutive non-finite steps, and of all skipped ones.

  Args:
    max_bad_steps: how many consecutive non-finite steps end the run.
  """

  def __init__(self, max_bad_steps: int):
    self.max_bad_steps = max_bad_steps
    self.skipped = 0
    self.in_a_row = 0
    self.tripped = False  # the streak has reached max_bad_steps at some step
    self.first_bad = self.last_bad = None

  def observe(self, step: int, finite: bool) -> bool:
    """Records ``step``; ``True`` when the streak has reached ``max_bad_steps``."""
    if finite:
      self.in_a_row = 0
      return False
    self.skipped += 1
    self.in_a_row += 1
    if self.in_a_row == 1:
      self.first_bad = step
    self.last_bad = step
    self.tripped |= self.in_a_row >= self.max_bad_steps
    return self.in_a_row >= self.max_bad_steps

  def message(self) -> str:
    """One line for the user when the streak stopped the run."""
    return (
        f"steps {self.first_bad}-{self.last_bad} were non-finite ({self.in_a_row} in a row, "
        f"the limit faults.max_bad_steps={self.max_bad_steps}); stopped with the last good "
        "state"
    )
