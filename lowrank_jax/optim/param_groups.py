"""Parameter groups: one optimizer (and learning rate) per group of leaves.

PyTorch users write ``torch.optim.AdamW([{"params": matrices, "lr": 2e-3}, {"params": dense,
"lr": 1e-2}])``; in optax each group gets its own transform and ``optax.partition`` routes every
leaf to its group's. :func:`param_groups` is that recipe with the groups named from each leaf's
path: the seven target linears of a LLaMA block to a low-rank method at one rate, the
embeddings, lm_head and norms to AdamW at another (the two groups arXiv 2505.22922,
experimental protocol, trains at one tied rate). Every transform of :mod:`lowrank_jax.optim`
works as a group's: it sees the other groups' leaves as ``optax.MaskedNode`` (no array, no
state), so a projected method given only the matrices projects exactly them.

>>> import jax.numpy as jnp
>>> import optax
>>> from lowrank_jax import optim
>>> params = {"embed_tokens": jnp.ones((16, 4)), "norm": jnp.ones(4),
...           "q_proj": {"kernel": jnp.ones((4, 8))}}
>>> tx = param_groups(
...     {"matrices": optim.galore(2e-3, rank=2), "dense": optax.adamw(1e-2)},
...     lambda names, leaf: "matrices" if "q_proj" in names else "dense",
... )
>>> grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 1.0, p.size).reshape(p.shape), params)
>>> updates, state = tx.update(grads, tx.init(params), params)
>>> round(float(jnp.abs(updates["embed_tokens"]).max()), 6)  # Adam's first step: the rate
0.01
>>> alone, _ = optim.galore(2e-3, rank=2).update(grads["q_proj"], optim.galore(2e-3, rank=2)
...     .init(params["q_proj"]), params["q_proj"])
>>> bool(jnp.array_equal(updates["q_proj"]["kernel"], alone["kernel"]))
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax

from lowrank_jax.optim.tree_utils import path_names

GroupOf = Callable[[tuple, Any], str]


def param_groups(
    transforms: Mapping[str, optax.GradientTransformation], group_of: GroupOf
) -> optax.GradientTransformation:
  """One transform per named group of parameters (``optax.partition``).

  Args:
    transforms: ``{group name: its transform}``, e.g. a method at the matrices' rate and
      AdamW at the dense leaves' rate.
    group_of: ``group_of(names, leaf) -> group name``, from the leaf's path names (dict keys,
      attribute names, indices; an ``nnx.Variable``'s ``.value`` left out) and the leaf.

  Returns:
    The transform; its state is an ``optax.PartitionState`` holding each group's state.

  Raises:
    ValueError: ``transforms`` is empty (at once), or ``group_of`` names a group it has not
      (when the transform is initialised or updated).
  """
  if not transforms:
    raise ValueError("param_groups needs at least one group in transforms")

  def labels(params):
    def label(path, leaf):
      group = group_of(path_names(path), leaf)
      if group not in transforms:
        raise ValueError(
            f"group_of puts leaf {jax.tree_util.keystr(path)} in group {group!r}; "
            f"allowed: {sorted(transforms)}"
        )
      return group

    return jax.tree_util.tree_map_with_path(label, params)

  return optax.partition(dict(transforms), labels)
