"""Pytree helpers shared by the optimizers.

>>> total, diff = map_unzip(2, lambda a, b: (a + b, a - b), {"x": 3.0}, {"x": 1.0})
>>> total, diff
({'x': 4.0}, {'x': 2.0})
"""

from __future__ import annotations

from typing import Any, Callable

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
