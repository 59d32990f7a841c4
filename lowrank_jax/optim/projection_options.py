"""The options every projected optimizer shares (GaLore, Fira, APOLLO, GoLore).

All have defaults; a method's own defaults (its refresh, its moment policy) fill the ``None``
ones. :func:`check_projection_options` validates them when an optimizer is built.

>>> check_projection_options(ProjectionOptions(side="in", refresh="randomized")).refresh
'randomized'
>>> check_projection_options(ProjectionOptions(side="top"))
Traceback (most recent call last):
ValueError: side must be one of ...
"""

from __future__ import annotations

from typing import Any, NamedTuple

from lowrank_jax.optim._projection import distributed_refresh
from lowrank_jax.optim._projection.projection import SIDES, DimensionNumbers
from lowrank_jax.optim._projection.projector_bases import REFRESHES
from lowrank_jax.optim._projection.projector_refresh import MOMENT_POLICIES
from lowrank_jax.optim._checks import check_choice, check_positive_int


class ProjectionOptions(NamedTuple):
  """Advanced options shared by every projected optimizer (all have defaults).

  Attributes:
    side: which axis is projected: ``"std"`` (smaller side, as the
      references), ``"larger"``, ``"in"``/``"right"``, ``"out"``/``"left"``.
    dimension_numbers: None (the last two axes are ``(in, out)``), one
      :class:`MatrixDimensionNumbers` for every leaf, a pytree of them with the
      params' structure, or a callable returning such a pytree from the params.
    refresh: how the projector is recomputed
      (:mod:`~lowrank_jax.optim._projection.projector_bases`):
      ``"svd"`` (the top-``r`` singular subspace, as the references; computed through the
      Gram matrix's eigendecomposition on CPUs and NVIDIA GPUs, where that is faster),
      ``"eigh"``, ``"randomized"``, ``"gaussian"`` or ``"orthonormal"``; None takes the
      method's default.
    oversample: extra columns of the randomized range finder.
    power_iterations: power iterations of the randomized range finder.
    moment_policy: ``"keep"``, ``"reset"``, ``"reproject"`` or ``"reproject_once"`` on a
      refresh (:mod:`~lowrank_jax.optim._projection.projector_refresh`); None takes the
      method's default.
    stagger: spread the matrices' refreshes over the gap.
    seed: seed of the random projections (folded with each matrix's index
      and its refresh number).
    projector_dtype: storage dtype of the projector; None keeps the
      parameter's dtype (as the references). Refreshes are float32 anyway.
    refresh_axes: mesh axes to spread the refreshes over, each device
      decomposing whole matrices of its slice of every leaf's batch (see
      :mod:`lowrank_jax.optim._projection.distributed_refresh`); None: where XLA puts them.
    refresh_mesh: the mesh of ``refresh_axes``; None takes the ambient one
      (``jax.set_mesh``). Without a mesh, or on one device, nothing is spread.
    group_leaves: run the leaves of equal layout as one stacked batch (see
      :mod:`lowrank_jax.optim._projection.leaf_groups`): fewer, larger kernels, for one copy of
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
