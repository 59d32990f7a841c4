"""Pytree helpers shared by the optimizers.

>>> total, diff = map_unzip(2, lambda a, b: (a + b, a - b), {"x": 3.0}, {"x": 1.0})
>>> total, diff
({'x': 4.0}, {'x': 2.0})
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import jax


def map_unzip(n: int, fn: Callable[..., tuple], tree: Any, *rest: Any) -> tuple[Any, ...]:
  """Maps ``fn`` (returning an ``n``-tuple) over trees; returns ``n`` trees.

  The leaves are those of ``tree`` (the other trees must share its structure
  down to those leaves); subtrees without leaves such as ``optax.MaskedNode``
  are kept as they are in every output.
  """
  treedef = jax.tree.structure(tree)
  columns = [treedef.flatten_up_to(t) for t in (tree, *rest)]
  outputs = [fn(*leaves) for leaves in zip(*columns)]
  return tuple(treedef.unflatten([out[i] for out in outputs]) for i in range(n))


def path_names(path: tuple) -> tuple:
  """The plain names of a key path (dict keys, attribute names, sequence indices), without
  the trailing ``.value`` that an ``nnx.Variable`` adds.

  >>> import jax
  >>> path, _ = jax.tree_util.tree_flatten_with_path({"mlp": [{"kernel": 1.0}]})[0][0]
  >>> path_names(path)
  ('mlp', 0, 'kernel')
  """
  if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
    path = path[:-1]
  return tuple(
      next((getattr(key, a) for a in ("key", "name", "idx") if hasattr(key, a)), str(key))
      for key in path
  )
