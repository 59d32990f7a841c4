r"""Shared core of the GaLore family: matrices, sides, projectors and refreshes.

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
size (see :mod:`lowrank_jax.optim.sharding`).

**Refreshes.** Every ``update_proj_gap`` steps (step 0 included) a new
projector is computed from the current gradient, in float32:

* ``"svd"``: the top-``r`` singular vectors of ``G`` (as the references; on CPUs and
  NVIDIA GPUs computed as ``"eigh"``, 2-13x faster there with the same subspace: see
  :func:`lowrank_jax.optim.linalg.left_singular_vectors`);
* ``"eigh"``: the top-``r`` eigenvectors of the ``p x p`` Gram matrix
  ``G G^T``: the same subspace as the SVD's (up to the precision lost by
  squaring the singular values), through a symmetric eigensolver, usually
  much cheaper than an SVD on accelerators;
* ``"randomized"``: a randomized range finder (Halko et al. 2011):
  ``Y = (G G^T)^q G Omega`` with ``r + oversample`` Gaussian columns,
  re-orthonormalised after each power iteration, then an SVD of the small
  ``Q^T G``;
* ``"gaussian"``: i.i.d. ``N(0, 1/r)`` entries (APOLLO), drawn from a
  per-matrix key (:func:`~lowrank_jax.optim.threefry_normal.standard_normal`),
  so the projector need not be stored;
* ``"orthonormal"``: a uniformly random orthonormal basis (GoLore), the Q of
  the QR of a Gaussian matrix.

Singular vectors are only defined up to sign; each column of an SVD-based
projector is flipped so that its largest-magnitude entry is positive. That
makes the optimizer reproducible across backends (and comparable with the
references, whose moments survive a refresh).

The refresh runs inside ``lax.cond`` on a scalar predicate, outside any
``vmap`` (a batched predicate would become a select and pay the SVD every
step). With ``stagger=True`` the matrices (all leaves, each layer of a stack)
get offsets spread over the gap, so that no single step pays every SVD; step 0
still refreshes all of them.

**Moments on a refresh** (``moment_policy``): ``"keep"`` carries them over
unchanged (the references), ``"reset"`` zeroes the refreshed matrix's moments
(the bias-correction step keeps counting), ``"reproject"`` maps the first moment into the new basis,
``M <- P_new^T P_old M``, and keeps the second (GoLore).

>>> import jax.numpy as jnp
>>> layout = matrix_layout((16, 8), MatrixDimensionNumbers(), side="std", rank=2)
>>> layout.projected_axis, layout.projector_shape, layout.moment_shape
(1, (2, 8), (16, 2))
"""

from __future__ import annotations

import functools
import math
import zlib
from typing import Any, NamedTuple
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lowrank_jax.optim import distributed_refresh, linalg
from lowrank_jax.optim.threefry_normal import standard_normal
from lowrank_jax.optim.validation import check_choice, check_positive_int

SIDES = ("std", "larger", "in", "out", "left", "right")
REFRESHES = ("svd", "eigh", "randomized", "gaussian", "orthonormal")
MOMENT_POLICIES = ("keep", "reset", "reproject")


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


class ProjectionOptions(NamedTuple):
  """Advanced options shared by every projected optimizer (all have defaults).

  Attributes:
    side: which axis is projected: ``"std"`` (smaller side, as the
      references), ``"larger"``, ``"in"``/``"right"``, ``"out"``/``"left"``.
    dimension_numbers: None (the last two axes are ``(in, out)``), one
      :class:`MatrixDimensionNumbers` for every leaf, a pytree of them with the
      params' structure, or a callable returning such a pytree from the params.
    refresh: how the projector is recomputed: ``"svd"``, ``"eigh"``,
      ``"randomized"``, ``"gaussian"`` or ``"orthonormal"``; None takes the
      method's default.
    oversample: extra columns of the randomized range finder.
    power_iterations: power iterations of the randomized range finder.
    moment_policy: ``"keep"``, ``"reset"`` or ``"reproject"`` on a refresh;
      None takes the method's default.
    stagger: spread the matrices' refreshes over the gap.
    seed: seed of the random projections (folded with each matrix's index
      and its refresh number).
    projector_dtype: storage dtype of the projector; None keeps the
      parameter's dtype (as the references). Refreshes are float32 anyway.
    refresh_axes: mesh axes to spread the refreshes over, each device
      decomposing whole matrices of its slice of every leaf's batch (see
      :mod:`lowrank_jax.optim.distributed_refresh`); None: where XLA puts them.
    refresh_mesh: the mesh of ``refresh_axes``; None takes the ambient one
      (``jax.set_mesh``). Without a mesh, or on one device, nothing is spread.
    group_leaves: run the leaves of equal layout as one stacked batch (see
      :mod:`lowrank_jax.optim.leaf_groups`): fewer, larger kernels, for one copy of
      the gradients; None groups when JAX's default backend is a GPU.
  """

  side: str = "std"
  dimension_numbers: DimensionNumbers = None
  refresh: str | None = None
  oversample: int = 8
  power_iterations: int = 1
  moment_policy: str | None = None
  stagger: bool = False
  seed: int = 0
  projector_dtype: Any = None
  refresh_axes: tuple[str, ...] | None = None
  refresh_mesh: Any = None
  group_leaves: bool | None = None


def check_projection_options(options: ProjectionOptions) -> ProjectionOptions:
  """Validates the options; raises ``ValueError`` naming the bad one."""
  if not isinstance(options, ProjectionOptions):
    raise ValueError(f"projection must be a ProjectionOptions, got {type(options).__name__}.")
  check_choice("side", options.side, SIDES)
  if options.refresh is not None:
    check_choice("refresh", options.refresh, REFRESHES)
  if options.moment_policy is not None:
    check_choice("moment_policy", options.moment_policy, MOMENT_POLICIES)
  check_positive_int("power_iterations + 1", options.power_iterations + 1)
  check_positive_int("oversample + 1", options.oversample + 1)
  distributed_refresh.check_placement(options.refresh_axes, options.refresh_mesh)
  if options.group_leaves not in (None, True, False):
    raise ValueError(f"group_leaves must be None, True or False, got {options.group_leaves!r}.")
  return options


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


def matrix_layout(shape, dims: MatrixDimensionNumbers, *, side: str, rank: int) -> MatrixLayout:
  """The layout of a leaf of ``shape``; raises ``ValueError`` if it cannot be projected."""
  shape = tuple(shape)
  ndim = len(shape)
  if ndim < 2:
    raise ValueError(f"only leaves with ndim >= 2 can be projected, got shape {shape}.")
  reduction, output = (axis % ndim for axis in (dims.reduction_axis, dims.output_axis))
  if reduction == output:
    raise ValueError(f"reduction_axis and output_axis must differ, got {dims} for shape {shape}.")
  smaller = min(shape[reduction], shape[output])
  if rank > smaller:
    raise ValueError(
        f"rank must be at most the smaller side of every projected matrix, "
        f"got rank {rank} for a matrix of shape {shape}."
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
  transposed ``P`` as a generic dot, 10-20% slower on the 60M matrices.
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


# --------------------------------------------------------------------------- #
# Projector refreshes: each maps (matrix (p, k) float32, key, count) -> (p, r).
# --------------------------------------------------------------------------- #

Refresher = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def canonical_signs(basis: jax.Array) -> jax.Array:
  """Flips each column of ``basis`` so that its largest-magnitude entry is positive."""
  largest = jnp.take_along_axis(basis, jnp.argmax(jnp.abs(basis), axis=0)[None], axis=0)
  return basis * jnp.where(largest < 0, -1.0, 1.0).astype(basis.dtype)


def svd_basis(matrix: jax.Array, rank: int) -> jax.Array:
  """Top-``rank`` left singular vectors of ``matrix``, sign-canonicalised."""
  return canonical_signs(linalg.left_singular_vectors(matrix)[:, :rank])


def eigh_basis(matrix: jax.Array, rank: int) -> jax.Array:
  """Top-``rank`` eigenvectors of ``matrix @ matrix.T``, sign-canonicalised."""
  return canonical_signs(linalg.gram_eigenvectors(matrix)[:, :rank])


def randomized_basis(
    matrix: jax.Array, key: jax.Array, rank: int, oversample: int, power_iterations: int
) -> jax.Array:
  """Approximate top-``rank`` left singular vectors by a randomized range finder.

  The products run at full float32 precision (no TF32 on GPUs).
  """
  rows, cols = matrix.shape
  width = min(rank + oversample, rows, cols)
  dot = functools.partial(jnp.matmul, precision=lax.Precision.HIGHEST)
  sketch = standard_normal(key, (cols, width)).astype(matrix.dtype)
  basis, _ = linalg.qr(dot(matrix, sketch))
  for _ in range(power_iterations):
    basis, _ = linalg.qr(dot(matrix, dot(matrix.T, basis)))
  small_u = linalg.left_singular_vectors(dot(basis.T, matrix))
  return canonical_signs(dot(basis, small_u[:, :rank]))


def gaussian_basis(rows: int, key: jax.Array, rank: int) -> jax.Array:
  """A ``rows x rank`` matrix of i.i.d. ``N(0, 1/rank)`` entries (APOLLO).

  Drawn as its ``rank x rows`` transpose, the operand :func:`project` multiplies
  on CPUs for a matrix projected on its rows: there the transposes cancel, and
  the draw is written row by row.
  """
  return (standard_normal(key, (rank, rows)) / math.sqrt(rank)).T


def orthonormal_basis(rows: int, key: jax.Array, rank: int) -> jax.Array:
  """A uniformly random ``rows x rank`` matrix with orthonormal columns (GoLore)."""
  q, r = linalg.qr(standard_normal(key, (rows, rank)))
  return q * jnp.sign(jnp.diagonal(r))


def make_refresher(
    kind: str,
    rank: int,
    oversample: int = 8,
    power_iterations: int = 1,
    random_from_step: int | None = None,
) -> Refresher:
  """The refresh function ``(matrix, key, count) -> projector`` of ``kind``.

  With ``random_from_step``, refreshes at steps ``>= random_from_step`` draw
  a random orthonormal basis instead (GoLore); the switch is a ``lax.cond``
  on the scalar step count.
  """
  basis_fns = {
      "svd": lambda matrix, key: svd_basis(matrix, rank),
      "eigh": lambda matrix, key: eigh_basis(matrix, rank),
      "randomized": lambda matrix, key: randomized_basis(
          matrix, key, rank, oversample, power_iterations
      ),
      "gaussian": lambda matrix, key: gaussian_basis(matrix.shape[0], key, rank),
      "orthonormal": lambda matrix, key: orthonormal_basis(matrix.shape[0], key, rank),
  }
  basis = basis_fns[kind]
  if random_from_step is None:
    return lambda matrix, key, count: basis(matrix, key)
  return lambda matrix, key, count: lax.cond(
      count >= random_from_step, basis_fns["orthonormal"], basis, matrix, key
  )


# --------------------------------------------------------------------------- #
# Schedule: which matrices refresh at which step, and their random keys.
# --------------------------------------------------------------------------- #


def stagger_offsets(
    num_matrices: int, start: int, total: int, gap: int, stagger: bool
) -> np.ndarray:
  """Refresh offsets (in ``[0, gap)``) of matrices ``start .. start + num_matrices``.

  Without staggering every offset is 0; with it, matrix ``j`` of ``total``
  refreshes at the steps ``t`` with ``t % gap == (j * gap) // total``.
  """
  indices = np.arange(start, start + num_matrices)
  return (indices * gap) // max(total, 1) if stagger else np.zeros_like(indices)


def refresh_due(count: jax.Array, gap: int, offsets: np.ndarray) -> jax.Array:
  """Bool vector: which matrices refresh at step ``count`` (all of them at step 0)."""
  return (count % gap == jnp.asarray(offsets, jnp.int32)) | (count == 0)


def leaf_id(path) -> int:
  """A stable 31-bit id of a leaf's key path (independent of the other leaves)."""
  return zlib.crc32(jax.tree_util.keystr(tuple(path)).encode()) & 0x7FFFFFFF


def refresh_keys(
    seed: int, leaf: int, count: jax.Array, gap: int, offsets: np.ndarray
) -> jax.Array:
  """One key per matrix of a leaf, fixed between two of that matrix's refreshes.

  The key folds the seed with the leaf's id (:func:`leaf_id`, so masking or
  adding other parameters does not change it), the matrix's index in the leaf
  and its refresh number ``(count + gap - offset) // gap``, which increases
  exactly at its refreshes.
  """
  base = jax.random.fold_in(jax.random.key(seed), leaf)
  refresh_number = (count + gap - jnp.asarray(offsets, jnp.int32)) // gap
  return jax.vmap(lambda i, n: jax.random.fold_in(jax.random.fold_in(base, i), n))(
      jnp.arange(len(offsets)), refresh_number
  )


# --------------------------------------------------------------------------- #
# The refresh itself, behind lax.cond.
# --------------------------------------------------------------------------- #


def to_matrices(x: jax.Array, layout: MatrixLayout) -> jax.Array:
  """Moves the matrix axes last and flattens the batch: ``(B, a, b)``."""
  moved = jnp.moveaxis(x, layout.matrix_axes, (-2, -1))
  return moved.reshape((layout.num_matrices,) + moved.shape[-2:])


def from_matrices(x: jax.Array, layout: MatrixLayout) -> jax.Array:
  """Inverse of :func:`to_matrices`."""
  return jnp.moveaxis(x.reshape(layout.batch_shape + x.shape[-2:]), (-2, -1), layout.matrix_axes)


def gather_matrices(x: jax.Array) -> jax.Array:
  """Replicates the two matrix axes of ``x`` (B, a, b) under an explicit mesh.

  An SVD needs whole matrices: with ``Explicit`` mesh axes JAX refuses a
  sharded input, so the matrices are gathered (the batch axis stays sharded).
  Under ``Auto`` axes (or no mesh) this is a no-op and XLA decides.
  """
  spec = getattr(jax.typeof(x).sharding, "spec", None)
  if spec is None or all(axes is None for axes in tuple(spec)[-2:]):
    return x
  return jax.sharding.reshard(x, jax.sharding.PartitionSpec(*tuple(spec)[:-2], None, None))


def like_sharding(x: jax.Array, like: jax.Array) -> jax.Array:
  """``x`` resharded as ``like`` under an explicit mesh (a no-op otherwise)."""
  spec = getattr(jax.typeof(like).sharding, "spec", None)
  if spec is None or getattr(jax.typeof(x).sharding, "spec", None) == spec:
    return x
  return jax.sharding.reshard(x, spec)


def batch_like(x, matrices: jax.Array):
  """``x`` (one entry per matrix) sharded like the batch axis of ``matrices``."""
  spec = getattr(jax.typeof(matrices).sharding, "spec", None)
  if x is None or spec is None or not tuple(spec) or tuple(spec)[0] is None:
    return x
  return jax.sharding.reshard(x, jax.sharding.PartitionSpec(tuple(spec)[0]))


def carry_moments(policy: str, new_basis, old_basis, mu, nu):
  """Applies the moment policy to one matrix's moments ``(r, k)`` on a refresh."""
  if policy == "reset":
    return jnp.zeros_like(mu), jnp.zeros_like(nu)
  if policy == "reproject":
    dot = functools.partial(jnp.matmul, precision=lax.Precision.HIGHEST)
    change = dot(new_basis.T, old_basis.astype(jnp.float32))
    return dot(change, mu.astype(jnp.float32)).astype(mu.dtype), nu
  return mu, nu


class LeafRefresh(NamedTuple):
  """One leaf's refresh plan: its layout, which of its matrices are ``due`` (bool per
  matrix) and their random ``keys`` (None when the refresher ignores them)."""

  layout: MatrixLayout
  due: jax.Array
  keys: jax.Array | None


def refresh_projectors(
    grads: list,
    projectors: list,
    mus: list,
    nus: list,
    plans: list[LeafRefresh],
    *,
    count: jax.Array,
    refresher: Refresher,
    moment_policy: str,
    stagger: bool,
    refresh_axes=None,
    refresh_mesh=None,
) -> list[tuple]:
  """Recomputes the projectors of the matrices that are due, in every leaf.

  All leaves refresh under one ``lax.cond`` on whether any matrix is due, so a
  step without a refresh costs one scalar test (on a GPU each ``cond`` waits for
  its predicate to reach the host: one per step, not one per leaf). A leaf's
  matrices refresh together (one batched decomposition) unless ``stagger``, in
  which case each matrix has its own ``lax.cond`` inside a ``lax.map``.
  ``refresh_axes`` and ``refresh_mesh`` (see :class:`ProjectionOptions`)
  spread the matrices over devices.

  Returns:
    ``(projector, mu, nu)`` per leaf, with the input dtypes.
  """

  def refresh_one(matrix, old_basis, m, v, key):
    new_basis = refresher(matrix, key, count)
    m, v = carry_moments(moment_policy, new_basis, old_basis, m, v)
    return new_basis.astype(old_basis.dtype), m, v

  def refresh_batch(matrix_due, g, p, m, v, matrix_keys):
    if stagger:

      def maybe_refresh(args):
        is_due, *rest = args
        return lax.cond(is_due, refresh_one, lambda *a: tuple(a[1:4]), *rest)

      return lax.map(maybe_refresh, (matrix_due, g, p, m, v, matrix_keys))
    return jax.vmap(refresh_one)(g, p, m, v, matrix_keys)

  def refresh_leaf(operands, plan: LeafRefresh):
    g, p, m, v = (to_matrices(x, plan.layout) for x in operands)
    g = g.astype(jnp.float32)
    mesh = distributed_refresh.active_mesh(refresh_mesh, refresh_axes)
    if mesh is None:
      g = gather_matrices(g)
      new = refresh_batch(batch_like(plan.due, g), g, p, m, v, batch_like(plan.keys, g))
    else:
      new = distributed_refresh.spread_over_devices(
          refresh_batch, (plan.due, g, p, m, v, plan.keys), mesh=mesh, axes=refresh_axes
      )
    return tuple(
        like_sharding(from_matrices(x, plan.layout), old) for x, old in zip(new, operands[1:])
    )

  leaves = list(zip(grads, projectors, mus, nus))
  if not leaves:
    return []
  any_due = jnp.any(jnp.stack([jnp.any(plan.due) for plan in plans]))
  return lax.cond(
      any_due,
      lambda operands: [refresh_leaf(x, plan) for x, plan in zip(operands, plans)],
      lambda operands: [tuple(x[1:]) for x in operands],
      leaves,
  )


def regenerate_projector(
    layout: MatrixLayout, keys: jax.Array, refresher: Refresher, dtype
) -> jax.Array:
  """A data-independent projector rebuilt from the keys (never stored)."""
  rows = layout.shape[layout.projected_axis]
  dummy = jnp.zeros((rows, 0), jnp.float32)
  bases = jax.vmap(lambda key: refresher(dummy, key, None))(keys)
  return from_matrices(bases.astype(dtype), layout)
