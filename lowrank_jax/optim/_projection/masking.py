"""Routing: which leaves a low-rank method projects, and what the others get.

A low-rank optimizer only projects matrices. :func:`route` splits the
parameters with ``optax.partition`` into two groups:

* ``"projected"``: the leaves selected by ``projection_mask`` go through the
  low-rank transform;
* ``"dense"``: every other leaf (norms, biases, and any matrix the mask leaves
  out, e.g. embeddings) goes through a full-rank transform, by default the
  references' Adam with the same hyperparameters.

Each group's state holds ``optax.MaskedNode`` for the leaves of the other group,
so no zero-size placeholder arrays are created (orbax refuses those).

``projection_mask`` (the argument of every projected optimizer; optax's ``mask``
is the weight-decay mask, which our optimizers keep) may be

* ``None``: every leaf with two or more axes (a batch of matrices) is projected;
* a pytree of bools with the structure of the parameters;
* a callable mapping the parameters (or arrays of the same shapes) to such a
  pytree.

A mask that selects a leaf with fewer than two axes raises a ``ValueError``
when the optimizer is initialised.

These helpers are public and stable: any transform of ``lowrank_jax.optim``
(SPAM included) may use them to route leaves.

>>> import jax.numpy as jnp
>>> params = {"kernel": jnp.zeros((4, 3)), "bias": jnp.zeros(3)}
>>> resolve_mask(None, params)
{'bias': False, 'kernel': True}
>>> resolve_mask(lambda p: {"kernel": False, "bias": True}, params)
Traceback (most recent call last):
...
ValueError: projection_mask selects leaf ['bias'] of shape (3,); only leaves with ndim >= 2 can be projected.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import jax
import optax

PROJECTED = "projected"
DENSE = "dense"

Mask = Any | Callable[[Any], Any] | None


def is_matrix(leaf: Any) -> bool:
  """True for an array (or ``ShapeDtypeStruct``) with two or more axes."""
  return len(getattr(leaf, "shape", ())) >= 2


def resolve_mask(mask: Mask, params: Any) -> Any:
  """Returns the pytree of bools that ``mask`` selects on ``params``.

  Args:
    mask: None, a pytree of bools, or a callable on ``params`` (see module doc).
    params: parameters, gradients, or ``jax.ShapeDtypeStruct`` with their shapes.

  Raises:
    ValueError: if a selected leaf has fewer than two axes.
  """
  if mask is None:
    return jax.tree.map(is_matrix, params)
  selected = mask(params) if callable(mask) else mask

  def check(path, leaf, chosen):
    if chosen and not is_matrix(leaf):
      raise ValueError(
          f"projection_mask selects leaf {jax.tree_util.keystr(path)} of shape {tuple(leaf.shape)}; "
          "only leaves with ndim >= 2 can be projected."
      )
    return bool(chosen)

  return jax.tree.map_with_path(check, params, selected)


def route(
    projected: optax.GradientTransformation,
    dense: optax.GradientTransformation,
    projection_mask: Mask = None,
) -> optax.GradientTransformation:
  """Applies ``projected`` to the leaves ``projection_mask`` selects and ``dense`` to the rest.

  Args:
    projected: transform for the selected leaves; it sees the others as
      ``optax.MaskedNode``.
    dense: transform for the remaining leaves.
    projection_mask: None, a pytree of bools, or a callable (see module doc).

  Returns:
    ``optax.partition`` of the two; its state is an ``optax.PartitionState``
    whose ``inner_states`` has the keys ``"projected"`` and ``"dense"``.
  """

  def labels(params):
    return jax.tree.map(
        lambda chosen: PROJECTED if chosen else DENSE, resolve_mask(projection_mask, params)
    )

  return optax.partition({PROJECTED: projected, DENSE: dense}, labels)
