r"""The dense leaves' own learning rate: the trainer's two parameter groups.

Every method has two groups of parameters: the *target* group, the seven target linears of
every block (for a model-side method their factors, adapters and sparse values: every leaf
under a target linear), and the *dense* leaves, all the others (embeddings, lm_head, norms).
The references train both at one rate; ``optimizer.dense_learning_rate`` gives the dense
leaves their own peak :math:`\eta_d` beside the matrices' :math:`\eta` (PyTorch's
``param_groups``), under the same schedule shape, resets and re-warmups.

**Why a scale of the final updates is exact.** In every method the dense leaves get an
Adam-type step (plain Adam inside the projected methods, SPAM's or LoRO's Adam elsewhere):
their update at count :math:`t` is :math:`-\eta\, s(t)\, (d_t + \lambda w_t)`, with
:math:`s` the schedule at peak 1 times the method's recovery or re-warmup, :math:`d_t` the
direction the optimizer state gives (moments of the gradients, SPAM's clipping, nothing that
depends on the rate) and :math:`\lambda w_t` the decoupled weight decay. So the update at
peak :math:`\eta_d` is the one at :math:`\eta` times :math:`\eta_d / \eta`; by induction
over the steps (:math:`w_t` then is the weight the run at :math:`\eta_d` holds) scaling the
dense leaves' final updates by :math:`\eta_d / \eta` trains them exactly as the method would
at :math:`\eta_d`, up to one rounding of the product. The target group, whose update may
not be linear in the rate (LoRO's manifold step), is left as the method computes it, and the
optimizer state keeps its structure: a checkpoint does not depend on the dense rate.

>>> import jax.numpy as jnp
>>> import optax
>>> params = {"embed_tokens": jnp.ones(2), "q_proj": {"a": jnp.ones((2, 1)),
...           "values": jnp.ones(3)}}
>>> target_group(params)
{'embed_tokens': False, 'q_proj': {'a': True, 'values': True}}
>>> tx = scale_dense_updates(optax.sgd(0.1), dense_scale(0.5, 0.1))
>>> updates, _ = tx.update(params, tx.init(params))
>>> [float(u.ravel()[0]) for u in jax.tree.leaves(updates)]
[-0.5, -0.1, -0.1]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from lowrank_jax.optim.tree_utils import path_names
from lowrank_jax.train.update_records import Record
from lowrank_jax.train.methods import TARGET_LINEARS

Scale = float | jax.Array | None


def target_group(params: Any) -> Any:
  """``True`` for every leaf under a target linear (a kernel, factor, adapter or sparse
  values, whatever its rank), ``False`` for the dense leaves."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(name in TARGET_LINEARS for name in path_names(path)), params
  )


def dense_scale(dense_peak: float | jax.Array | None, peak: float | jax.Array) -> Scale:
  """:math:`\\eta_d / \\eta`, what the dense leaves' updates are multiplied by; ``None``
  (nothing to scale) when the dense rate is the matrices' own (``dense_peak`` ``None``)."""
  return None if dense_peak is None else dense_peak / peak


def scale_dense_updates(tx: optax.GradientTransformation, scale: Scale):
  """``tx`` whose updates of the dense leaves are multiplied by ``scale`` (``tx`` itself when
  ``scale`` is ``None``); its state is ``tx``'s."""
  if scale is None:
    return tx

  def update(updates, state, params=None, **extra_args):
    updates, state = tx.update(updates, state, params, **extra_args)
    scaled = jax.tree.map(
        lambda u, target: u if target else (u * scale).astype(u.dtype),
        updates,
        target_group(updates),
    )
    return scaled, state

  return optax.GradientTransformationExtraArgs(tx.init, update)


def with_dense_rate(record: Record, scale: Scale) -> Record:
  """``record`` with ``lr/dense``, the dense leaves' applied rate: the method's ``lr`` (the
  rate its dense leaves take, recovery and re-warmup included) times ``scale``."""
  if scale is None:
    return record

  def dense_record(count):
    applied = record(count)
    return {**applied, "lr/dense": applied["lr"] * jnp.asarray(scale, jnp.float32)}

  return dense_record
