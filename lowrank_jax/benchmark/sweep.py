"""The learning-rate search of one method: a log-spaced grid, extended until the best is interior.

A method's rate is tuned the way the paper tuned every method (arXiv 2505.22922, experimental protocol: the
learning rate swept per method): runs at a grid of rates, each neighbour at most a factor 2
from the next, and the rate of lowest validation loss is chosen. A best rate at the lowest or
highest grid point is not known to be the optimum, so the search adds the next point beyond it,
one step of the same ratio as its neighbour,

.. math::  r_{\\text{new}} = r_0^2 / r_1 \\quad\\text{(below)}, \\qquad
           r_{\\text{new}} = r_k^2 / r_{k-1} \\quad\\text{(above)},

and goes on until the best is interior or ``max_extensions`` points were added; a search that
ends with its best at an edge says so (``at_edge``), and the report marks it. A failed run
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
    at_edge: the best is the lowest or highest rate and no extension is left (a single
      rate is at both edges: it was never searched).
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


def search(
    rates: Sequence[float],
    max_extensions: int,
    loss_of: Callable[[float], float | None],
) -> Search:
  """The state of the search that starts at ``rates``.

  Args:
    rates: the grid's rates (any order; :func:`check_rates` ones).
    max_extensions: how many rates the search may add beyond the grid's edges.
    loss_of: the validation loss of the run at a rate: ``None`` while it has not ended,
      ``math.inf`` for a failed run.

  Returns:
    A :class:`Search`.
  """
  tried = sorted(rates)
  while True:
    losses = [loss_of(rate) for rate in tried]
    pending = tuple(rate for rate, loss in zip(tried, losses) if loss is None)
    if pending:
      return Search(tuple(tried), pending, None, False)
    index = min(range(len(tried)), key=losses.__getitem__)
    if not math.isfinite(losses[index]):
      return Search(tuple(tried), (), None, False)
    low, high = index == 0, index == len(tried) - 1
    extend = len(tried) > 1 and (low or high) and len(tried) - len(rates) < max_extensions
    if not extend:
      return Search(tuple(tried), (), tried[index], low or high)
    tried = (
        [_beyond(tried[1], tried[0]), *tried] if low else [*tried, _beyond(tried[-2], tried[-1])]
    )
