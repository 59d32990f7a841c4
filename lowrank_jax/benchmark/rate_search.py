"""The learning-rate search of one method: a log-spaced grid, extended until the best is interior.

A method's rate is tuned the way the paper tuned every method (arXiv 2505.22922, experimental protocol: the
learning rate swept per method): runs at a grid of rates, each neighbour at most a factor 2
from the next, and the rate of lowest validation loss is chosen. A best rate at the lowest or
highest grid point is not known to be the optimum, so the search adds the next point beyond it,
one step of the same ratio as its neighbour,

.. math::  r_{\\text{new}} = r_0^2 / r_1 \\quad\\text{(below)}, \\qquad
           r_{\\text{new}} = r_k^2 / r_{k-1} \\quad\\text{(above)},

and goes on until the best is interior or ``max_extensions`` points were added; a search that
ends with its best at an edge says so (``at_edge``), and the report marks it. A single rate
was never searched, so it is at no edge (the report says "one rate"). A failed run
(e.g. diverged) is worse than any finished one, so a diverged neighbour brackets the optimum.

Every decision is a function of the finished runs' losses alone, so a grid that resumes after
an interruption makes the same extensions as one that never stopped:

>>> losses = {0.001: 3.0, 0.002: 2.9, 0.004: 2.8}
>>> search((0.001, 0.002, 0.004), 2, losses.get)
Search(rates=(0.001, 0.002, 0.004, 0.008), pending=(0.008,), best=None, at_edge=False)
>>> losses[0.008] = 2.85
>>> search((0.001, 0.002, 0.004), 2, losses.get)
Search(rates=(0.001, 0.002, 0.004, 0.008), pending=(), best=0.004, at_edge=False)
>>> search((0.001, 0.002), 0, {0.001: 3.0, 0.002: 2.9}.get)
Search(rates=(0.001, 0.002), pending=(), best=0.002, at_edge=True)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

# Neighbouring rates of a search are at most this factor apart.
MAX_RATIO = 2.0


class Search(NamedTuple):
  """Where a method's learning-rate search stands.

  Attributes:
    rates: every rate of the search so far, ascending: the grid's and its extensions.
    pending: the rates whose runs have not ended; they run next.
    best: the rate of lowest validation loss once no run is pending (``None`` while some
      are, or when every run failed).
    at_edge: the best is the lowest or highest of two or more rates and no extension is
      left (a single rate was never searched: not at an edge).
  """

  rates: tuple[float, ...]
  pending: tuple[float, ...]
  best: float | None
  at_edge: bool


def check_rates(name: str, rates: Sequence[float]) -> tuple[float, ...]:
  """``rates`` ascending, or a one-line ``ValueError`` naming ``name`` when they are not a
  search grid: positive, distinct, neighbours at most :data:`MAX_RATIO` apart.

  >>> check_rates("galore", [0.02, 0.01])
  (0.01, 0.02)
  >>> check_rates("galore", [0.01, 0.03])
  Traceback (most recent call last):
  ...
  ValueError: learning_rates['galore']=[0.01, 0.03]: neighbours 0.01 and 0.03 are 3x apart; at most 2x
  """
  if not rates or not all(isinstance(r, (int, float)) and r > 0 for r in rates):
    raise ValueError(f"learning_rates[{name!r}]={list(rates)!r} must be positive numbers")
  ordered = tuple(sorted(float(r) for r in rates))
  for low, high in zip(ordered, ordered[1:]):
    if not high > low:
      raise ValueError(f"learning_rates[{name!r}]={list(rates)!r} repeats {low:g}")
    if high / low > MAX_RATIO * (1 + 1e-9):
      raise ValueError(
          f"learning_rates[{name!r}]={list(rates)!r}: neighbours {low:g} and {high:g} are "
          f"{high / low:.3g}x apart; at most {MAX_RATIO:g}x"
      )
  return ordered


def _beyond(inner: float, edge: float) -> float:
  """The next rate past ``edge``, as far from it (in ratio) as ``inner`` is; 4 digits."""
  return float(f"{edge * edge / inner:.4g}")


class GridSearch(NamedTuple):
  """Where a search over several rates at once stands (e.g. full rank's matrix and dense
  rates): every combination of the axes' rates is a run.

  Attributes:
    axes: each axis's rates so far, ascending: the grid's and its extensions.
    pending: the points (one rate per axis) whose runs have not ended; they run next.
    best: the point of lowest validation loss once none is pending (``None`` while some are,
      or when every run failed).
    at_edge: per axis, whether the best rate is the lowest or highest of its two or more
      rates and no extension is left (an axis of one rate was never searched: not at an edge).
  """

  axes: tuple[tuple[float, ...], ...]
  pending: tuple[tuple[float, ...], ...]
  best: tuple[float, ...] | None
  at_edge: tuple[bool, ...]

  @property
  def points(self) -> tuple[tuple[float, ...], ...]:
    """Every point of the search so far, in the order of the axes' product."""
    return tuple(itertools.product(*self.axes))


def search_grid(
    axes: Sequence[Sequence[float]],
    max_extensions: int,
    loss_of: Callable[[tuple[float, ...]], float | None],
) -> GridSearch:
  """The state of the search over every combination of ``axes``' rates.

  Each axis is bracketed on its own: while the best point's rate on an axis is that axis's
  lowest or highest, the axis gets the next rate beyond it (as in :func:`search`), up to
  ``max_extensions`` per axis, and every combination with the new rate runs.

  >>> loss = lambda p: (p[0] - 0.004) ** 2 + (p[1] - 0.01) ** 2
  >>> state = search_grid(((0.001, 0.002), (0.01, 0.02)), 2, loss)
  >>> state.axes, state.best, state.at_edge
  (((0.001, 0.002, 0.004, 0.008), (0.005, 0.01, 0.02)), (0.004, 0.01), (False, False))

  Args:
    axes: the grid's rates of each axis (any order; :func:`check_rates` ones).
    max_extensions: how many rates each axis may add beyond its grid's edges.
    loss_of: the validation loss of the run at a point (a rate per axis): ``None`` while it
      has not ended, ``math.inf`` for a failed run.

  Returns:
    A :class:`GridSearch`.
  """
  tried = [sorted(rates) for rates in axes]
  while True:
    points = list(itertools.product(*tried))
    losses = [loss_of(point) for point in points]
    pending = tuple(point for point, loss in zip(points, losses) if loss is None)
    if pending:
      return GridSearch(tuple(map(tuple, tried)), pending, None, (False,) * len(tried))
    best = points[min(range(len(points)), key=losses.__getitem__)]
    if not math.isfinite(min(losses)):
      return GridSearch(tuple(map(tuple, tried)), (), None, (False,) * len(tried))
    at_edge, extended = [], False
    for axis, (rates, grid_rates) in enumerate(zip(tried, axes)):
      low, high = best[axis] == rates[0], best[axis] == rates[-1]
      if len(rates) > 1 and (low or high) and len(rates) - len(grid_rates) < max_extensions:
        tried[axis] = (
            [_beyond(rates[1], rates[0]), *rates]
            if low
            else [*rates, _beyond(rates[-2], rates[-1])]
        )
        extended = True
      at_edge.append(len(rates) > 1 and (low or high))
    if not extended:
      return GridSearch(tuple(map(tuple, tried)), (), best, tuple(at_edge))


def search(
    rates: Sequence[float],
    max_extensions: int,
    loss_of: Callable[[float], float | None],
) -> Search:
  """The state of the search that starts at ``rates``: :func:`search_grid` on one axis.

  Args:
    rates: the grid's rates (any order; :func:`check_rates` ones).
    max_extensions: how many rates the search may add beyond the grid's edges.
    loss_of: the validation loss of the run at a rate: ``None`` while it has not ended,
      ``math.inf`` for a failed run.

  Returns:
    A :class:`Search`.
  """
  state = search_grid((rates,), max_extensions, lambda point: loss_of(point[0]))
  return Search(
      state.axes[0],
      tuple(point[0] for point in state.pending),
      None if state.best is None else state.best[0],
      state.at_edge[0],
  )
