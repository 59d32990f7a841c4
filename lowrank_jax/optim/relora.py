r"""ReLoRA's optimizer side: AdamW whose adapter moments are pruned at each merge, and its jagged schedule.

Lialin, Shivagunde, Muckatira, Rumshisky, "ReLoRA: High-Rank Training Through Low-Rank
Updates", ICLR 2024 (reference: Guitaricet/relora). ReLoRA trains LoRA adapters
(:class:`~lowrank_jax.models.linear.lora.LoRALinear`) and, every :math:`K` steps, merges them into
the frozen weight and starts new ones (:func:`~lowrank_jax.models.linear.lora.merge_lora_adapters`,
model side: the frozen weight is not an optimizer parameter). At the same moment the
adapters' Adam moments are pruned (the other parameters' are left alone, and Adam's step
count, hence its bias correction, runs on), and the learning rate re-warms linearly from 0
over :math:`W` steps (:func:`relora_schedule`, the reference's ``cosine_restarts``):

.. math::

  \eta(t) = \begin{cases}
    s(kK + W) \, \dfrac{t - kK}{W} & kK \le t < kK + W,\ k \ge 1, \\
    s(t) & \text{otherwise,}
  \end{cases}

with :math:`s` the base schedule (the reference's: a linear warmup from 0 then a cosine decay
to ``min_lr_ratio`` of the peak) and :math:`t` the 0-based update count.

**Pruning** (``training_utils.optimizer_reset`` of the reference), per moment tensor
(each matrix of a stacked leaf on its own):

* ``"random"``: every entry is zeroed with probability ``prune_ratio`` (``rand > ratio``
  keeps it). The reference's default, ``--reset_optimizer_on_relora true``, is this with
  ratio 0.999 (its stand-in for zeroing, which broke its ZeRO optimizer);
* ``"magnitude"``: entries whose magnitude is at most the ``prune_ratio`` quantile
  (linear interpolation, as ``torch.quantile``) are zeroed; the reference's
  ``--optimizer_magnitude_pruning`` (0.9 in its README, 0.8 in ``training_configs/1B_v1.0.yaml``).

**Step alignment**, as the reference's loop: update :math:`kK + 1` (count :math:`t = kK`) runs
with learning rate 0, and the merge and the pruning follow it; the re-warmup then climbs
over the counts :math:`kK + 1, \dots, kK + W - 1`.

>>> import optax
>>> base = optax.warmup_cosine_decay_schedule(0.0, 1.0, 5, 100, end_value=0.1)
>>> schedule = relora_schedule(base, restart_every=20, restart_warmup_steps=4)
>>> [round(float(schedule(t)), 3) for t in (0, 5, 19, 20, 22, 24)]
[0.0, 1.0, 0.953, 0.0, 0.457, 0.914]
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lowrank_jax.optim._projection.masking import resolve_mask
from lowrank_jax.optim.refactorize import _resharded_like, _unsharded_matrix
from lowrank_jax.optim.restart_schedule import rewarm_after_restarts
from lowrank_jax.optim._renamed import renamed_attributes
from lowrank_jax.optim._checks import check_choice, check_positive_int, check_range

PRUNINGS = ("random", "magnitude")


def relora_schedule(
    base: optax.ScalarOrSchedule, restart_every: int, restart_warmup_steps: int
) -> optax.Schedule:
  """ReLoRA's jagged schedule: ``base`` with a linear re-warmup from 0 after each restart.

  Args:
    base: the schedule without restarts (an optax schedule or a float), e.g. warmup then
      cosine.
    restart_every: :math:`K`, the merge period (Python int >= 1).
    restart_warmup_steps: :math:`W`, the re-warmup length (Python int, 1 <= W <= K).

  Returns:
    An optax schedule of the 0-based update count.
  """
  restart_every = check_positive_int("restart_every", restart_every)
  restart_warmup_steps = check_positive_int("restart_warmup_steps", restart_warmup_steps)
  if restart_warmup_steps > restart_every:
    raise ValueError(
        f"restart_warmup_steps={restart_warmup_steps} must be <= restart_every={restart_every}."
    )
  return rewarm_after_restarts(
      base, restart_every, restart_warmup_steps, lambda since: since / restart_warmup_steps
  )


def prune(x: jax.Array, ratio: float, pruning: str, key: jax.Array) -> jax.Array:
  """``x`` with the entries the reference's pruning drops set to 0 (see the module docstring).

  >>> x = jnp.arange(1.0, 11.0)
  >>> prune(x, 0.5, "magnitude", jax.random.key(0)).tolist()
  [0.0, 0.0, 0.0, 0.0, 0.0, 6.0, 7.0, 8.0, 9.0, 10.0]
  """
  full = _unsharded_matrix(x) if x.ndim >= 2 else x  # quantiles over whole matrices
  if pruning == "random":
    keep = _resharded_like(jax.random.uniform(key, x.shape) > ratio, full)
  else:
    matrices = full.reshape(x.shape[:-2] + (-1,)) if x.ndim >= 2 else full.reshape(1, -1)
    magnitude = jnp.abs(matrices.astype(jnp.float32))
    threshold = jnp.quantile(magnitude, ratio, axis=-1, keepdims=True).astype(x.dtype)
    keep = (jnp.abs(matrices) > threshold).reshape(x.shape)
  return _resharded_like(jnp.where(keep, full, jnp.zeros_like(full)), x)


class ScaleByReLoRAState(NamedTuple):
  """State of :func:`scale_by_relora`.

  Attributes:
    count: int32 scalar, the number of updates taken.
    adam: ``optax.ScaleByAdamState`` of every parameter.
  """

  count: jax.Array
  adam: optax.ScaleByAdamState


def scale_by_relora(
    restart_every: int,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    prune_ratio: float = 0.999,
    pruning: str = "random",
    adapters: Any = None,
    seed: int = 0,
) -> optax.GradientTransformation:
  """Adam (``optax.scale_by_adam``) whose ``adapters``' moments are pruned after updates
  :math:`kK + 1` (:math:`k \\ge 1`); no learning rate, no weight decay.

  Args:
    restart_every: :math:`K` (Python int >= 1).
    b1: Adam's first-moment decay, in [0, 1).
    b2: Adam's second-moment decay, in [0, 1).
    eps: added to Adam's bias-corrected ``sqrt(v)`` (PyTorch AdamW's placement), >= 0.
    prune_ratio: the fraction pruned, in [0, 1].
    pruning: ``"random"`` (the reference's default) or ``"magnitude"``.
    adapters: which leaves are LoRA adapters: a tree of bools like the params or a function
      of the params returning one (default: every leaf with two or more axes).
    seed: seeds the random pruning (folded with the update count).

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ScaleByReLoRAState`.

  >>> import jax.numpy as jnp
  >>> tx = scale_by_relora(2, prune_ratio=1.0)
  >>> state = tx.init({"w": jnp.ones((2, 2))})
  >>> for _ in range(3):
  ...   _, state = tx.update({"w": jnp.ones((2, 2))}, state)
  >>> state.adam.mu["w"].tolist()  # pruned after update 3 (k = 1, K = 2)
  [[0.0, 0.0], [0.0, 0.0]]
  """
  restart_every = check_positive_int("restart_every", restart_every)
  check_range("b1", b1, 0.0, 1.0)
  check_range("b2", b2, 0.0, 1.0)
  check_range("eps", eps, 0.0)
  check_range("prune_ratio", prune_ratio, 0.0, 1.0, include_high=True)
  check_choice("pruning", pruning, PRUNINGS)
  adam = optax.scale_by_adam(b1, b2, eps)

  def init_fn(params):
    return ScaleByReLoRAState(count=jnp.zeros([], jnp.int32), adam=adam.init(params))

  def update_fn(updates, state, params=None):
    updates, adam_state = adam.update(updates, state.adam, params)
    selected = resolve_mask(adapters, updates)
    key = jax.random.fold_in(jax.random.key(seed), state.count)

    def pruned(adam_state):
      def moments(tree, salt):
        leaves, treedef = jax.tree.flatten(tree)
        keys = jax.random.split(jax.random.fold_in(key, salt), len(leaves))
        flags = treedef.flatten_up_to(selected)
        return treedef.unflatten(
            [
                prune(x, prune_ratio, pruning, k) if flag else x
                for x, flag, k in zip(leaves, flags, keys)
            ]
        )

      return adam_state._replace(mu=moments(adam_state.mu, 0), nu=moments(adam_state.nu, 1))

    due = (state.count % restart_every == 0) & (state.count > 0)
    adam_state = jax.lax.cond(due, pruned, lambda s: s, adam_state)
    return updates, ScaleByReLoRAState(count=optax.safe_increment(state.count), adam=adam_state)

  return optax.GradientTransformation(init_fn, update_fn)


def relora(
    learning_rate: optax.ScalarOrSchedule,
    restart_every: int,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    prune_ratio: float = 0.999,
    pruning: str = "random",
    adapters: Any = None,
    seed: int = 0,
) -> optax.GradientTransformation:
  r"""AdamW whose ``adapters``' moments are pruned after updates :math:`kK + 1`, as ReLoRA's.

  The parameter moves by :math:`-\eta(t) (u + \lambda p)` with :math:`u` PyTorch AdamW's
  direction, :math:`m / (\sqrt{v / (1 - b_2^t)} + \epsilon) / (1 - b_1^t)`, and the adapters'
  :math:`m, v` pruned right after updates :math:`kK + 1` (:math:`k \ge 1`).

  Args:
    learning_rate: a float or a schedule, typically :func:`relora_schedule` (0 on the
      updates :math:`kK + 1` that precede each merge).
    restart_every: :math:`K`, the merge period (Python int >= 1); merge the adapters with
      :func:`~lowrank_jax.models.linear.lora.merge_lora_adapters` after the same updates.
    b1: Adam's first-moment decay, in [0, 1).
    b2: Adam's second-moment decay, in [0, 1).
    eps: added to Adam's bias-corrected ``sqrt(v)`` (PyTorch AdamW's placement), >= 0.
    weight_decay: :math:`\lambda`, decoupled weight decay, >= 0.
    prune_ratio: the fraction of the adapters' moments pruned, in [0, 1] (the reference's
      default reset, 0.999).
    pruning: ``"random"`` (the reference's default) or ``"magnitude"``.
    adapters: which leaves are LoRA adapters: a tree of bools like the params or a function
      of the params returning one (default: every leaf with two or more axes).
    seed: seeds the random pruning (folded with the update count).

  Returns:
    The optimizer; its state is ``(ScaleByReLoRAState, ...)``.
  """
  check_range("weight_decay", weight_decay, 0.0)
  return optax.chain(
      scale_by_relora(
          restart_every,
          b1=b1,
          b2=b2,
          eps=eps,
          prune_ratio=prune_ratio,
          pruning=pruning,
          adapters=adapters,
          seed=seed,
      ),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(learning_rate),
  )


# The state's name before it followed optax's ``ScaleBy<Method>State``.
__getattr__ = renamed_attributes(__name__, {"ReLoRAState": ScaleByReLoRAState})
