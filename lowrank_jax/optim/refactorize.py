r"""Weight refactorization: rebalance every factor pair of a low-rank model every T steps.

arXiv 2505.22922, weight refactorization and momentum reset. For a weight parameterized as a product of two factors,
:math:`W \propto L R` with :math:`L` of shape :math:`(p, r)` and :math:`R` of shape
:math:`(r, q)` (any scale such as :math:`\alpha / r` stays outside), every :math:`T` steps
replace the factors by the balanced factors of their product:

.. math::

  L R = U \Sigma V^\top \ \text{(rank } r\text{)}, \qquad
  L \leftarrow U \Sigma^{1/2}, \qquad R \leftarrow \Sigma^{1/2} V^\top.

The product is unchanged, and the factors become balanced, :math:`L^\top L = R R^\top =
\Sigma`, which the paper shows minimises the condition number of the problem. The SVD of
the :math:`p \times q` product is never formed: with :math:`L = Q_L R_L` and
:math:`R^\top = Q_R R_R` (reduced QR), :math:`L R = Q_L (R_L R_R^\top) Q_R^\top` and only the
:math:`r \times r` core is decomposed, :math:`R_L R_R^\top = U' \Sigma V'^\top`, giving
:math:`U = Q_L U'` and :math:`V = Q_R V'`. All of it runs in float32, batched over leading
(stacked-layer) axes.

Which parameters are factors: ``pairs`` labels each leaf with a :class:`Factor` (its pair
and side) or ``None``. The default, :func:`sibling_factors`, is the convention of
:mod:`lowrank_jax.models`: in every module the parameters named ``a`` (``(in, r)``) and
``b`` (``(r, out)``) form a pair with product ``a @ b`` (Low-Rank, LoRA, SLTrain; SLTrain's
sparse ``values`` are untouched). Other models pass their own names, e.g.
``sibling_factors("lora_B", "lora_A")`` for PyTorch-layout factors :math:`W = B A`, or any
callable from the params to a pytree of labels. Do not refactorize CoLA: its
``silu(x a) b`` is not a function of the product ``a b``.

Where it sits: :func:`refactorize` wraps the whole optimizer. It needs the parameters as
they will be after this step, which only exist once every other transform (learning rate
included) has produced its update; wrapping makes that order structural, whereas a
transform placed last in a chain would silently misbehave anywhere else. On a
refactorization step (the end of updates :math:`T, 2T, \dots`) it replaces each factor's
update :math:`u` by :math:`\tilde\theta - \theta`, where :math:`\tilde\theta` are the
balanced factors of :math:`\theta + u`, so that ``optax.apply_updates`` lands on them
(to the rounding of one addition in the parameters' dtype). On other steps it returns
the inner updates unchanged. The SVD sits behind ``lax.cond`` on a scalar predicate, so it
costs nothing on other steps.

A caveat of the method itself: directions in which the product has a zero singular value
are zero in both balanced factors, and such a direction receives no gradient afterwards.
Refactorizing LoRA or SLTrain before ``b`` has left its zero initialisation therefore
zeroes both factors for good; the paper's period (T = 200) is far from that.

>>> import jax
>>> import jax.numpy as jnp
>>> import optax
>>> key_a, key_b = jax.random.split(jax.random.key(0))
>>> params = {"q_proj": {"a": 3.0 * jax.random.normal(key_a, (6, 2)),
...                      "b": jax.random.normal(key_b, (2, 5)) / 3.0}}
>>> optimizer = refactorize(optax.sgd(0.0), every=1)
>>> updates, _ = optimizer.update(jax.tree.map(jnp.zeros_like, params),
...                               optimizer.init(params), params)
>>> new = optax.apply_updates(params, updates)["q_proj"]
>>> bool(jnp.allclose(new["a"] @ new["b"], params["q_proj"]["a"] @ params["q_proj"]["b"],
...                   atol=1e-5))
True
>>> bool(jnp.allclose(new["a"].T @ new["a"], new["b"] @ new["b"].T, atol=1e-5))
True
"""

from __future__ import annotations

import dataclasses
from typing import Any
from collections.abc import Callable, Hashable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from lowrank_jax.optim import linalg
from lowrank_jax.optim.periodic import every_nth_update
from lowrank_jax.optim.tree_utils import path_names

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class Factor:
  """The label of one factor of a pair whose product is ``left @ right``.

  Attributes:
    pair: any hashable naming the pair (the two factors share it).
    side: ``"left"`` (shape ``(..., p, r)``) or ``"right"`` (shape ``(..., r, q)``).
  """

  pair: Hashable
  side: str

  def __post_init__(self):
    if self.side not in ("left", "right"):
      raise ValueError(f"Factor side must be 'left' or 'right', got {self.side!r}.")


Labels = Any  # a pytree like the params with Factor or None leaves
PairLabels = Callable[[optax.Params], Labels]


def sibling_factors(left: str = "a", right: str = "b") -> PairLabels:
  """Labels as a pair the leaves named ``left`` and ``right`` that share a parent.

  Args:
    left: name of the left factor (shape ``(..., p, r)``), ``"a"`` in our models.
    right: name of the right factor (shape ``(..., r, q)``), ``"b"`` in our models.

  Returns:
    A function from params (nested dicts, ``nnx.State``, any pytree with named keys) to
    labels; a leaf named ``left`` without a ``right`` sibling (or the reverse) is not
    a factor.

  >>> labels = sibling_factors()({"mlp": {"a": 1.0, "b": 2.0}, "norm": {"a": 3.0}})
  >>> labels["mlp"]["a"], labels["norm"]["a"]
  (Factor(pair=('mlp',), side='left'), None)
  """
  if left == right:
    raise ValueError(f"sibling_factors needs two different names, got {left!r} twice.")
  sides = {left: "left", right: "right"}

  def labels(params):
    paths = {path_names(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}

    def label(path, _):
      names = path_names(path)
      if not names or names[-1] not in sides:
        return None
      other = left if names[-1] == right else right
      if names[:-1] + (other,) not in paths:
        return None
      return Factor(pair=names[:-1], side=sides[names[-1]])

    return jax.tree_util.tree_map_with_path(label, params)

  return labels


def _spec(x: jax.Array) -> tuple:
  """The sharding spec in ``x``'s type, one entry per axis (all None unless the array is
  sharded over an explicit mesh axis)."""
  spec = tuple(jax.typeof(x).sharding.spec)
  return spec + (None,) * (x.ndim - len(spec))


def _resharded_like(x: jax.Array, reference: jax.Array) -> jax.Array:
  """``x`` resharded to ``reference``'s explicit sharding (a no-op without one)."""
  return x if _spec(x) == _spec(reference) else jax.sharding.reshard(x, P(*_spec(reference)))


def _unsharded_matrix(x: jax.Array) -> jax.Array:
  """``x`` with its two matrix axes gathered, its batch axes still sharded: explicit
  sharding forbids QR and SVD over sharded matrix axes (automatic sharding inserts the
  same all-gather itself)."""
  spec = _spec(x)
  if spec[-2:] == (None, None):
    return x
  return jax.sharding.reshard(x, P(*spec[:-2], None, None))


def balanced_factors(left: jax.Array, right: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The balanced factors ``(U S^1/2, S^1/2 V^T)`` of ``left @ right`` (float32).

  Batched over leading axes: ``left`` is ``(..., p, r)`` and ``right`` ``(..., r, q)``
  with ``r <= min(p, q)``. Only QRs of the factors and an ``r x r`` SVD are computed.
  """
  left = _unsharded_matrix(left.astype(jnp.float32))
  right = _unsharded_matrix(right.astype(jnp.float32))
  q_left, r_left = linalg.qr(left)
  q_right, r_right = linalg.qr(jnp.swapaxes(right, -1, -2))
  core = jnp.matmul(r_left, jnp.swapaxes(r_right, -1, -2), precision=_HIGHEST)
  u, s, vt = linalg.svd(core)
  root = jnp.sqrt(s)
  new_left = jnp.matmul(q_left, u * root[..., None, :], precision=_HIGHEST)
  new_right = jnp.matmul(root[..., :, None] * vt, jnp.swapaxes(q_right, -1, -2), precision=_HIGHEST)
  return new_left, new_right


def _pair_indices(params: optax.Params, pairs: PairLabels | Labels) -> list[tuple[int, int]]:
  """``(left, right)`` positions in ``jax.tree.leaves(params)`` of every labelled pair,
  checked for completeness and shapes (a static, trace-time computation)."""
  labels = pairs(params) if callable(pairs) else pairs
  leaves, treedef = jax.tree.flatten(params)
  sides: dict[Hashable, dict[str, int]] = {}
  for index, label in enumerate(treedef.flatten_up_to(labels)):
    if label is None:
      continue
    if not isinstance(label, Factor):
      raise ValueError(f"pair labels must be Factor or None, got {label!r}.")
    if label.side in sides.setdefault(label.pair, {}):
      raise ValueError(f"pair {label.pair!r} has two {label.side} factors.")
    sides[label.pair][label.side] = index
  result = []
  for pair, found in sides.items():
    if set(found) != {"left", "right"}:
      raise ValueError(f"pair {pair!r} has only a {next(iter(found))} factor.")
    left, right = leaves[found["left"]].shape, leaves[found["right"]].shape
    if (
        len(left) < 2
        or len(right) != len(left)
        or left[:-2] != right[:-2]
        or left[-1] != right[-2]
        or left[-1] > min(left[-2], right[-1])
    ):
      raise ValueError(
          f"pair {pair!r}: factors of shapes {left} and {right} are not "
          f"(..., p, r) @ (..., r, q) with r <= min(p, q)."
      )
    result.append((found["left"], found["right"]))
  return result


Targets = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def steps_to_factor_targets(
    due: jax.Array,
    pairs: PairLabels | Labels,
    params: optax.Params,
    updates: optax.Updates,
    operands: optax.Updates,
    targets: Targets,
) -> optax.Updates:
  """``updates`` in which, when ``due``, every factor's entry moves its parameter to a target.

  Args:
    due: scalar bool; when false ``updates`` are returned as they are (``lax.cond``).
    pairs: which leaves are factors, as in :func:`refactorize`.
    params: the parameters before this step.
    updates: the updates to return, their factor entries replaced when ``due``.
    operands: a tree like the params; a pair's two entries are passed to ``targets``.
    targets: ``targets(left, right, left_operand, right_operand)`` gives the new
      ``(left, right)`` of a pair (float32).

  Returns:
    Updates such that ``optax.apply_updates`` lands each factor on its target (to the
    rounding of one addition in the parameters' dtype), in the dtype and sharding of
    ``updates``.
  """
  indices = [index for pair in _pair_indices(params, pairs) for index in pair]
  values = jax.tree.leaves(params)
  steps, treedef = jax.tree.flatten(updates)
  extra = treedef.flatten_up_to(operands)

  def landing(values, steps, extra):  # lists alternating left, right factor of each pair
    out = []
    for pair in range(0, len(values), 2):
      value, step = values[pair : pair + 2], steps[pair : pair + 2]
      new = targets(*value, *extra[pair : pair + 2])
      out += [
          _resharded_like((t - v.astype(jnp.float32)).astype(s.dtype), s)
          for t, v, s in zip(new, value, step)
      ]
    return out

  factor_steps = jax.lax.cond(
      due,
      landing,
      lambda _, steps, __: steps,
      *([leaves[i] for i in indices] for leaves in (values, steps, extra)),
  )
  for index, step in zip(indices, factor_steps):
    steps[index] = step
  return treedef.unflatten(steps)


def refactorize(
    inner: optax.GradientTransformation,
    every: int,
    *,
    pairs: PairLabels | Labels = sibling_factors(),
) -> optax.GradientTransformationExtraArgs:
  """Wraps an optimizer so that every ``every``-th step ends on balanced factors.

  Args:
    inner: the whole optimizer (learning rate included) whose updates are refactorized.
    every: the period :math:`T` (Python int >= 1): updates ``T, 2T, ...`` refactorize.
    pairs: which leaves are factors: a function from the params to labels (a pytree
      like the params with :class:`Factor` or ``None`` leaves), or the labels
      themselves. Default: :func:`sibling_factors` (``a @ b`` in each module).

  Returns:
    A transform whose ``update`` requires ``params`` and passes extra keyword arguments
    on to ``inner``; its state is a :class:`~lowrank_jax.optim.periodic.PeriodicState`.
    Pairs are checked (complete, shapes ``(..., p, r)`` and ``(..., r, q)`` with
    ``r <= min(p, q)``) in ``init``.
  """

  def refactorized(due, updates, inner_state, params):
    return (
        steps_to_factor_targets(
            due,
            pairs,
            params,
            updates,
            updates,
            lambda left, right, left_step, right_step: balanced_factors(
                left + left_step, right + right_step
            ),
        ),
        inner_state,
    )

  return every_nth_update(
      inner,
      every,
      "refactorize",
      refactorized,
      check_params=lambda params: _pair_indices(params, pairs),
  )
