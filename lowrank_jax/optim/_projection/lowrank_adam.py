r"""The engine of the GaLore family: Adam on projected gradients.

For every projected matrix (see :mod:`lowrank_jax.optim._projection.projection`) one step is

.. math::
  P &\leftarrow \mathrm{refresh}(G) \quad \text{every } T \text{ steps (behind lax.cond)}, \\
  R &= P^\top G, \qquad
  M \leftarrow b_1 M + (1 - b_1) R, \qquad V \leftarrow b_2 V + (1 - b_2) R^2, \\
  N &= M / (\sqrt{V} + \epsilon), \qquad
  u = \frac{\sqrt{1 - b_2^t}}{1 - b_1^t}\, \mathrm{method}(G, R, N, P),

with the bias correction folded into the step size as in the references. The
``method`` hook is what distinguishes GaLore (``scale * P N``), Fira (adds a
scaled residual) and APOLLO (rescales the raw gradient). Methods may keep one
float32 norm per matrix for the norm-growth limiter.

:func:`scale_by_lowrank_adam` only handles the leaves it is given: every leaf
must be a batch of matrices. The public methods wrap it with
:func:`lowrank_jax.optim._projection.masking.route`, which sends the other leaves to
:func:`lowrank_jax.optim.adam.scale_by_folded_adam`.

>>> import jax.numpy as jnp, optax
>>> from lowrank_jax.optim.projection_options import ProjectionOptions
>>> tx = scale_by_lowrank_adam(lambda step: (step.project_back(step.direction), step.norm),
...                            rank=2, update_proj_gap=4, options=ProjectionOptions(refresh="svd",
...                            moment_policy="keep"))
>>> state = tx.init({"w": jnp.ones((6, 4))})
>>> state.projector["w"].shape, state.mu["w"].shape
((2, 4), (6, 2))
>>> [s.count for s in find_lowrank_states(optax.MultiSteps(tx, 2).init({"w": jnp.ones((6, 4))}))]
[Array(0, dtype=int32)]
"""

from __future__ import annotations

from typing import Any, NamedTuple
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lowrank_jax.optim._projection import leaf_groups
from lowrank_jax.optim.adam import (
    bias_correction,
    check_adam_hyperparameters,
    scale_by_folded_adam,
    update_moments,
)
from lowrank_jax.optim._projection.masking import Mask, route
from lowrank_jax.optim._projection.projection import (
    MatrixLayout,
    matrix_layout,
    project,
    project_back,
    resolve_dimension_numbers,
)
from lowrank_jax.optim.projection_options import ProjectionOptions, check_projection_options
from lowrank_jax.optim._projection.projector_bases import make_refresher
from lowrank_jax.optim._projection.projector_refresh import (
    REPROJECTING,
    LeafRefresh,
    refresh_projectors,
    regenerate_projector,
    stored_first_moment,
)
from lowrank_jax.optim._projection.refresh_schedule import (
    leaf_id,
    refresh_due,
    refresh_keys,
    stagger_offsets,
)
from lowrank_jax.optim.tree_utils import map_unzip
from lowrank_jax.optim._checks import check_positive_int


class ScaleByLowRankAdamState(NamedTuple):
  """State of :func:`scale_by_lowrank_adam` (one entry per projected leaf).

  Attributes:
    count: int32 scalar, number of updates applied so far.
    projector: the leaf's shape with the kept axis replaced by the rank,
      dtype ``projector_dtype`` (default: the parameter's). ``optax.MaskedNode``
      for data-independent projections, which are regenerated from their key.
    mu: first moment of ``R``: the leaf's shape with the projected axis
      replaced by the rank, dtype ``moment_dtype`` (default: the parameter's).
    nu: second moment, like ``mu``.
    norm: float32 array of the leaf's batch shape (``()`` for a matrix), the
      norm-growth limiter's last norm; ``optax.MaskedNode`` if the method has
      no limiter.
  """

  count: jax.Array
  projector: optax.Updates
  mu: optax.Updates
  nu: optax.Updates
  norm: optax.Updates


def find_lowrank_states(opt_state: Any) -> list[ScaleByLowRankAdamState]:
  """Every :class:`ScaleByLowRankAdamState` inside an optimizer state, in tree order.

  The public methods nest it as ``chain -> partition -> masked``; this finds
  it whatever the wrapping (``inject_hyperparams``, ``MultiSteps``, ...).
  """
  is_state = lambda x: isinstance(x, ScaleByLowRankAdamState)
  return [x for x in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(x)]


class LowRankStep(NamedTuple):
  """What a method hook sees for one projected leaf.

  Attributes:
    grad: the full gradient (leaf shape and dtype).
    projected: ``R = P^T G``, float32, moment layout.
    direction: ``N = M / (sqrt(V) + eps)`` without bias correction, float32.
    projector: ``P``.
    layout: the leaf's :class:`~lowrank_jax.optim.MatrixLayout`.
    count: int32 scalar, number of updates before this one.
    norm: the limiter's last norm per matrix, or ``optax.MaskedNode``.
  """

  grad: jax.Array
  projected: jax.Array
  direction: jax.Array
  projector: jax.Array
  layout: MatrixLayout
  count: jax.Array
  norm: Any

  def project_back(self, low_rank: jax.Array) -> jax.Array:
    """``P X`` in float32 with the leaf's shape."""
    return project_back(low_rank, self.projector, self.layout)


Method = Callable[[LowRankStep], tuple[jax.Array, Any]]


def norm_growth_factor(norm: jax.Array, step: LowRankStep, gamma) -> jax.Array:
  r"""Fira's norm-growth limiter: the divisor ``c`` of an update of norm ``||S||``.

  From the second step on, if ``||S|| > gamma ||S_prev||`` the update is to be
  rescaled to norm ``gamma ||S_prev||``:

  .. math::
    c = \max\left(\frac{\|S\|}{\|S_\text{prev}\| + 10^{-8}}, \gamma\right) / \gamma,
    \qquad S \leftarrow S / c, \qquad \|S_\text{prev}\| \leftarrow \|S\| / c.

  Returns:
    ``c`` per matrix (the leaf's batch shape); 1 at the first step.
  """
  factor = jnp.maximum(norm / (step.norm + 1e-8), gamma) / gamma
  return jnp.where(step.count == 0, 1.0, factor)


def scale_by_lowrank_adam(
    method: Method,
    *,
    rank: int,
    update_proj_gap: int,
    options: ProjectionOptions,
    b1=0.9,
    b2=0.999,
    eps=1e-6,
    moment_dtype=None,
    uses_norm: bool = False,
    random_from_step: int | None = None,
    store_projector: bool = False,
) -> optax.GradientTransformation:
  """Adam on projected gradients; ``method`` turns the step into an update.

  Args:
    method: the hook ``LowRankStep -> (update, new norm)``; the update is
      float32 with the leaf's shape, before bias correction.
    rank: projection rank, at most every matrix's smaller side.
    update_proj_gap: refresh the projectors every this many steps.
    options: a :class:`~lowrank_jax.optim.projection_options.ProjectionOptions` whose
      ``refresh`` and ``moment_policy`` are set.
    b1, b2, eps: Adam's hyperparameters.
    moment_dtype: storage dtype of the moments (default: the parameter's).
    uses_norm: whether ``method`` keeps a limiter norm per matrix.
    random_from_step: from this step on, refreshes draw random orthonormal
      projectors (GoLore); None never switches.
    store_projector: keep a Gaussian projector in the state (drawn at its
      refreshes) instead of regenerating it from its key at every step: ``p x r``
      more floats per matrix, no per-step random draw (on CPU, drawing the 60M
      model's projectors cost more than projecting its gradients).

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ScaleByLowRankAdamState`.
  """
  rank = check_positive_int("rank", rank)
  gap = check_positive_int("update_proj_gap", update_proj_gap)
  check_adam_hyperparameters(b1, b2, eps)
  options = check_projection_options(options)
  refresher = make_refresher(
      options.refresh, rank, options.oversample, options.power_iterations, random_from_step
  )
  stores_projector = (
      store_projector or options.refresh != "gaussian" or options.moment_policy in REPROJECTING
  )
  uses_keys = options.refresh != "svd" or random_from_step is not None
  group_leaves = (
      jax.default_backend() == "gpu" if options.group_leaves is None else options.group_leaves
  )

  def layouts_of(params):
    dims = resolve_dimension_numbers(options.dimension_numbers, params)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    return treedef.unflatten(
        [
            matrix_layout(p.shape, d, side=options.side, rank=rank, leaf=jax.tree_util.keystr(path))
            for (path, p), d in zip(leaves, dims)
        ]
    )

  def init_fn(params):
    def leaf_init(p, layout):
      projector_dtype = options.projector_dtype or p.dtype
      return (
          jnp.zeros(layout.projector_shape, projector_dtype)
          if stores_projector
          else optax.MaskedNode(),
          jnp.zeros(layout.moment_shape, moment_dtype or p.dtype),
          jnp.zeros(layout.moment_shape, moment_dtype or p.dtype),
          jnp.zeros(layout.batch_shape, jnp.float32) if uses_norm else optax.MaskedNode(),
      )

    parts = map_unzip(4, leaf_init, params, layouts_of(params))
    return ScaleByLowRankAdamState(jnp.zeros([], jnp.int32), *parts)

  def leaf_update(grad, projector, mu, nu, norm, plan: LeafRefresh, count, correction):
    layout = plan.layout
    if stores_projector:
      basis = projector
    else:
      basis = regenerate_projector(
          layout, plan.keys, refresher, options.projector_dtype or grad.dtype
      )
      if options.moment_policy == "reset":
        fresh = jnp.expand_dims(plan.due.reshape(layout.batch_shape), layout.matrix_axes)
        mu, nu = (jnp.where(fresh, 0, x).astype(x.dtype) for x in (mu, nu))
    projected = project(grad, basis, layout)
    direction, new_mu, new_nu = update_moments(projected, mu, nu, b1, b2, eps)
    step = LowRankStep(grad, projected, direction, basis, layout, count, norm)
    update, norm = method(step)
    return (
        (correction * update).astype(grad.dtype),
        projector if stores_projector else optax.MaskedNode(),
        new_mu.astype(mu.dtype),
        new_nu.astype(nu.dtype),
        norm,
    )

  def step_leaves(grads, projectors, mus, nus, norms, plans, count, correction):
    """The five output columns (update, projector, mu, nu, norm) of a list of leaves."""
    mus_before = mus
    if stores_projector:
      refreshed = refresh_projectors(
          grads,
          projectors,
          mus,
          nus,
          plans,
          count=count,
          refresher=refresher,
          moment_policy=options.moment_policy,
          stagger=options.stagger,
          refresh_axes=options.refresh_axes,
          refresh_mesh=options.refresh_mesh,
      )
      projectors, mus, nus = ([leaf[i] for leaf in refreshed] for i in range(3))
    outputs = [
        leaf_update(*leaf, count, correction)
        for leaf in zip(grads, projectors, mus, nus, norms, plans)
    ]
    columns = [[out[i] for out in outputs] for i in range(5)]
    columns[2] = [
        stored_first_moment(options.moment_policy, mu, before, plan, count)
        for mu, before, plan in zip(columns[2], mus_before, plans)
    ]
    return columns

  def update_fn(updates, state, params=None):
    del params
    count = state.count
    treedef = jax.tree.structure(updates)
    layouts = treedef.flatten_up_to(layouts_of(updates))
    sizes = [layout.num_matrices for layout in layouts]
    starts = np.cumsum([0] + sizes)[:-1].tolist()
    paths = [path for path, _ in jax.tree.leaves_with_path(updates)]
    plans = []
    for layout, start, path in zip(layouts, starts, paths):
      offsets = stagger_offsets(layout.num_matrices, start, sum(sizes), gap, options.stagger)
      keys = refresh_keys(options.seed, leaf_id(path), count, gap, offsets) if uses_keys else None
      plans.append(LeafRefresh(layout, refresh_due(count, gap, offsets), keys))
    columns = [
        treedef.flatten_up_to(tree)
        for tree in (updates, state.projector, state.mu, state.nu, state.norm)
    ]
    if group_leaves:
      groups = leaf_groups.group_by_layout(layouts, *columns)
      columns = [leaf_groups.stack(column, groups) for column in columns]
      plans = leaf_groups.stack_plans(plans, groups)
    outputs = step_leaves(*columns, plans, count, bias_correction(count, b1, b2))
    if group_leaves:
      outputs = [leaf_groups.unstack(column, groups) for column in outputs]
    new_updates, *parts = (treedef.unflatten(column) for column in outputs)
    return new_updates, ScaleByLowRankAdamState(optax.safe_increment(count), *parts)

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_projected_method(
    method: Method,
    *,
    rank: int,
    update_proj_gap: int,
    b1,
    b2,
    eps,
    projection_mask: Mask,
    moment_dtype,
    options: ProjectionOptions | None,
    default_refresh: str,
    default_moment_policy: str,
    uses_norm: bool = False,
    random_from_step: int | None = None,
    store_projector: bool = False,
) -> optax.GradientTransformation:
  """A method on the leaves ``projection_mask`` selects, the references' Adam on the others.

  This is what every public ``scale_by_<method>`` returns: an
  ``optax.partition`` (see :func:`lowrank_jax.optim._projection.masking.route`) of
  :func:`scale_by_lowrank_adam` and
  :func:`~lowrank_jax.optim.adam.scale_by_folded_adam` with the same ``b1``,
  ``b2``, ``eps`` and ``moment_dtype``. ``options`` fields left as None
  take the method's defaults; ``random_from_step`` and ``store_projector`` are
  passed on.
  """
  options = check_projection_options(options or ProjectionOptions())
  options = options._replace(
      refresh=options.refresh or default_refresh,
      moment_policy=options.moment_policy or default_moment_policy,
  )
  lowrank = scale_by_lowrank_adam(
      method,
      rank=rank,
      update_proj_gap=update_proj_gap,
      options=options,
      b1=b1,
      b2=b2,
      eps=eps,
      moment_dtype=moment_dtype,
      uses_norm=uses_norm,
      random_from_step=random_from_step,
      store_projector=store_projector,
  )
  dense = scale_by_folded_adam(b1=b1, b2=b2, eps=eps, moment_dtype=moment_dtype)
  return route(lowrank, dense, projection_mask)
