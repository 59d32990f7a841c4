r"""The matrices of a parameter and the products that project them.

**Matrices.** Every parameter leaf with two or more axes is a *batch of
matrices*. :class:`MatrixDimensionNumbers` names its reduction (input) axis and
its output axis; every other axis is a batch axis, so stacked (scanned) layers
and 3-D attention kernels are projected matrix by matrix, never skipped. The
default follows the Flax kernel layout ``(..., in, out)`` (the transpose of a
PyTorch weight): the last two axes.

**Sides.** For a matrix with a projected axis of size ``p`` and a kept axis of
size ``k``, the projector ``P`` is ``p x r`` with orthonormal columns (random
Gaussian for APOLLO) and the low-rank gradient is ``R = P^T G``: ``r x k``.
``side`` picks the projected axis:

* ``"std"`` (the references): project the input axis when
  ``out >= in`` (ties included), else the output axis; i.e. the smaller side;
* ``"larger"``: the other one (the references' ``reverse_std``);
* ``"in"`` / ``"out"``: always that axis (``"right"`` / ``"left"`` are the
  references' names for them, stated on their ``(out, in)`` layout).

**Layouts.** Arrays keep the leaf's axis order: the projector is the leaf's
shape with the *kept* axis replaced by ``r``; a low-rank moment (and ``R``) is
the leaf's shape with the *projected* axis replaced by ``r``. A ``(d, f)``
kernel projected on ``d`` thus has a ``(d, r)`` projector and ``(r, f)``
moments, and a sharding rule can keep the mesh axis of every axis that kept its
size (see :mod:`lowrank_jax.optim.sharding`). A refresh sees the leaf as a flat
batch of matrices (:func:`to_matrices`).

The projector is computed by :mod:`~lowrank_jax.optim._projection.projector_bases`,
refreshed on the schedule of :mod:`~lowrank_jax.optim._projection.refresh_schedule` by
:mod:`~lowrank_jax.optim._projection.projector_refresh`;
:mod:`~lowrank_jax.optim.projection_options` holds the options users set.

>>> import jax.numpy as jnp
>>> layout = matrix_layout((16, 8), MatrixDimensionNumbers(), side="std", rank=2)
>>> layout.projected_axis, layout.projector_shape, layout.moment_shape
(1, (2, 8), (16, 2))
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

SIDES = ("std", "larger", "in", "out", "left", "right")


class MatrixDimensionNumbers(NamedTuple):
  """Which axes of a leaf form the matrix; all other axes are batch axes.

  Attributes:
    reduction_axis: the input axis (contracted with the activations),
      default ``-2`` as in a Flax kernel ``(..., in, out)``.
    output_axis: the output axis, default ``-1``.
  """

  reduction_axis: int = -2
  output_axis: int = -1


DimensionNumbers = MatrixDimensionNumbers | Any | Callable[[Any], Any] | None


class MatrixLayout(NamedTuple):
  """Static description of one projected leaf.

  Attributes:
    shape: the leaf's shape.
    projected_axis: the (non-negative) axis the projector contracts.
    kept_axis: the other matrix axis.
    rank: the projection rank ``r``.
  """

  shape: tuple[int, ...]
  projected_axis: int
  kept_axis: int
  rank: int

  @property
  def batch_shape(self) -> tuple[int, ...]:
    """Sizes of the batch axes, in leaf order (``()`` for a plain matrix)."""
    return tuple(n for i, n in enumerate(self.shape) if i not in self.matrix_axes)

  @property
  def matrix_axes(self) -> tuple[int, int]:
    return (self.projected_axis, self.kept_axis)

  @property
  def num_matrices(self) -> int:
    return math.prod(self.batch_shape)

  @property
  def projector_shape(self) -> tuple[int, ...]:
    """The leaf's shape with the kept axis replaced by the rank."""
    return _replace(self.shape, self.kept_axis, self.rank)

  @property
  def moment_shape(self) -> tuple[int, ...]:
    """The leaf's shape with the projected axis replaced by the rank."""
    return _replace(self.shape, self.projected_axis, self.rank)

  def subscripts(self) -> tuple[str, str, str]:
    """Einsum subscripts of (leaf, projector, moment)."""
    letters = "abcdefghijklmnopqrstuvwxy"[: len(self.shape)]
    return (
        letters,
        _replace(letters, self.kept_axis, "z"),
        _replace(letters, self.projected_axis, "z"),
    )


def _replace(seq, index, value):
  if isinstance(seq, str):
    return seq[:index] + value + seq[index + 1 :]
  return tuple(value if i == index else n for i, n in enumerate(seq))


def resolve_dimension_numbers(dimension_numbers: DimensionNumbers, params: Any) -> list:
  """One :class:`MatrixDimensionNumbers` per leaf of ``params`` (flattened order).

  A pytree (or a callable's result) is matched by key path, so it may hold
  entries (e.g. None) for leaves that ``params`` lacks or masks out.
  """
  paths = [path for path, _ in jax.tree.leaves_with_path(params)]
  if dimension_numbers is None:
    dimension_numbers = MatrixDimensionNumbers()
  if isinstance(dimension_numbers, MatrixDimensionNumbers):
    return [dimension_numbers] * len(paths)
  if callable(dimension_numbers):
    dimension_numbers = dimension_numbers(params)
  by_path = dict(
      jax.tree.leaves_with_path(
          dimension_numbers, is_leaf=lambda x: isinstance(x, MatrixDimensionNumbers)
      )
  )
  missing = [jax.tree_util.keystr(path) for path in paths if path not in by_path]
  if missing:
    raise ValueError(
        f"dimension_numbers has no MatrixDimensionNumbers for the projected " f"leaves {missing}."
    )
  return [by_path[path] for path in paths]


def matrix_layout(
    shape, dims: MatrixDimensionNumbers, *, side: str, rank: int, leaf: str = "a leaf"
) -> MatrixLayout:
  """The layout of a leaf of ``shape``; raises ``ValueError`` if it cannot be projected.

  ``leaf`` names it in errors (its key path), with the argument that leaves it out:

  >>> matrix_layout((4, 8), MatrixDimensionNumbers(), side="std", rank=6, leaf="['w']")
  Traceback (most recent call last):
  ...
  ValueError: rank=6 exceeds the smaller side (4) of the projected leaf ['w'] of shape (4, 8): use rank <= 4, or leave ['w'] out of the projection with projection_mask= (a pytree of bools or a callable).
  """
  shape = tuple(shape)
  ndim = len(shape)
  leave_out = (
      f"leave {leaf} out of the projection with projection_mask= (a pytree of bools or a "
      "callable)"
  )
  if ndim < 2:
    raise ValueError(
        f"only leaves with ndim >= 2 can be projected, got {leaf} of shape {shape}: {leave_out}."
    )
  reduction, output = (axis % ndim for axis in (dims.reduction_axis, dims.output_axis))
  if reduction == output:
    raise ValueError(
        f"reduction_axis and output_axis must differ, got {dims} for {leaf} of shape {shape}."
    )
  smaller = min(shape[reduction], shape[output])
  if rank > smaller:
    raise ValueError(
        f"rank={rank} exceeds the smaller side ({smaller}) of the projected leaf {leaf} of "
        f"shape {shape}: use rank <= {smaller}, or {leave_out}."
    )
  in_side = {
      "std": shape[output] >= shape[reduction],
      "larger": shape[output] < shape[reduction],
      "in": True,
      "right": True,
      "out": False,
      "left": False,
  }[side]
  projected, kept = (reduction, output) if in_side else (output, reduction)
  return MatrixLayout(shape, projected, kept, rank)


def project(grad: jax.Array, projector: jax.Array, layout: MatrixLayout) -> jax.Array:
  """``R = P^T G`` for every matrix, in float32 (moment layout).

  Under an explicit mesh the result keeps the gradient's mesh axes except on
  the projected axis (now the rank), which is replicated. On CPUs the projector
  is first transposed (a small copy behind an optimization barrier) so that the
  product takes row-major operands: XLA's CPU backend runs ``P^T G`` with a
  transposed ``P`` as a generic dot, which is slower.
  """
  leaf, proj, moment = layout.subscripts()
  spec = getattr(jax.typeof(grad).sharding, "spec", None)
  out_sharding = None
  if spec is not None and any(axes is not None for axes in spec):
    padded = tuple(spec) + (None,) * (grad.ndim - len(spec))
    out_sharding = jax.sharding.PartitionSpec(*_replace(padded, layout.projected_axis, None))
  product = functools.partial(
      jnp.einsum, preferred_element_type=jnp.float32, out_sharding=out_sharding
  )

  def transposed(grad, projector):
    return product(f"{leaf},{proj}->{moment}", grad, projector)

  def row_major(grad, projector):
    first, second = sorted(layout.matrix_axes)
    swapped = _replace(_replace(proj, first, proj[second]), second, proj[first])
    projector_t = lax.optimization_barrier(jnp.swapaxes(projector, first, second))
    if layout.projected_axis < layout.kept_axis:  # (r, p) (p, k)
      return product(f"{swapped},{leaf}->{moment}", projector_t, grad)
    return product(f"{leaf},{swapped}->{moment}", grad, projector_t)  # (k, p) (p, r)

  return lax.platform_dependent(
      grad, projector.astype(grad.dtype), cpu=row_major, default=transposed
  )


def project_back(low_rank: jax.Array, projector: jax.Array, layout: MatrixLayout) -> jax.Array:
  """``P N`` for every matrix: the leaf's shape, float32."""
  leaf, proj, moment = layout.subscripts()
  return jnp.einsum(
      f"{moment},{proj}->{leaf}", low_rank.astype(jnp.float32), projector.astype(jnp.float32)
  )


def rank_axis_norm(x: jax.Array, layout: MatrixLayout) -> jax.Array:
  """Norm over the rank axis of a moment-layout array (keeps the axis, size 1)."""
  return jnp.linalg.norm(x, axis=layout.projected_axis, keepdims=True)


def matrix_norm(x: jax.Array, layout: MatrixLayout, keepdims: bool = False) -> jax.Array:
  """Frobenius norm of every matrix of ``x`` (shape ``batch_shape``, or kept dims)."""
  return jnp.sqrt(
      jnp.sum(jnp.square(x.astype(jnp.float32)), axis=layout.matrix_axes, keepdims=keepdims)
  )


def to_matrices(x: jax.Array, layout: MatrixLayout) -> jax.Array:
  """Moves the matrix axes last and flattens the batch: ``(B, a, b)``."""
  moved = jnp.moveaxis(x, layout.matrix_axes, (-2, -1))
  return moved.reshape((layout.num_matrices,) + moved.shape[-2:])


def from_matrices(x: jax.Array, layout: MatrixLayout) -> jax.Array:
  """Inverse of :func:`to_matrices`."""
  return jnp.moveaxis(x.reshape(layout.batch_shape + x.shape[-2:]), (-2, -1), layout.matrix_axes)
