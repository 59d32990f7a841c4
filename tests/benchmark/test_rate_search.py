"""The learning-rate search: grid checks, extensions past an edge, the edge mark, failures, and
the search over two rates at once (a matrix rate and a dense rate)."""

import math

import pytest

from lowrank_jax.benchmark.rate_search import check_rates, search, search_grid


def _parabola(optimum):
  return lambda rate: (math.log2(rate) - math.log2(optimum)) ** 2


def _run_to_the_end(rates, max_extensions, curve):
  """The search driven as the runner drives it: run every pending rate, ask again."""
  done = {}
  while True:
    state = search(rates, max_extensions, done.get)
    if not state.pending:
      return state, done
    done.update({rate: curve(rate) for rate in state.pending})


def test_a_best_rate_at_the_top_edge_is_extended_until_it_is_interior():
  state, done = _run_to_the_end((0.002, 0.004, 0.008), 3, _parabola(0.016))
  assert state.rates == (0.002, 0.004, 0.008, 0.016, 0.032) == tuple(sorted(done))
  assert (state.best, state.at_edge) == (0.016, False)


def test_a_best_rate_at_the_bottom_edge_is_extended_downwards_by_the_same_ratio():
  state, _ = _run_to_the_end((0.003, 0.006, 0.012), 3, _parabola(0.0014))
  assert state.rates == (0.00075, 0.0015, 0.003, 0.006, 0.012)
  assert (state.best, state.at_edge) == (0.0015, False)


def test_a_search_out_of_extensions_marks_its_best_at_the_edge():
  state, done = _run_to_the_end((0.01, 0.02), 2, _parabola(1.0))
  assert state.rates == (0.01, 0.02, 0.04, 0.08) and len(done) == 4
  assert (state.best, state.at_edge) == (0.08, True)
  # a single rate was never searched: it is at no edge, and it is not extended
  single = search((0.01,), 2, {0.01: 3.0}.get)
  assert (single.rates, single.best, single.at_edge) == ((0.01,), 0.01, False)


def test_a_failed_neighbour_brackets_the_best_and_all_failed_has_none():
  losses = {0.001: 3.0, 0.002: 2.5, 0.004: math.inf}
  state = search((0.001, 0.002), 2, losses.get)
  assert (state.rates, state.best, state.at_edge) == ((0.001, 0.002, 0.004), 0.002, False)
  assert search((0.001, 0.002), 2, {0.001: math.inf, 0.002: math.inf}.get).best is None


def test_the_decisions_depend_only_on_the_finished_runs():
  """A resumed grid reads the same runs and so makes the same extensions."""
  losses = {0.004: 2.0, 0.008: 1.9, 0.016: 1.8}
  first = search((0.004, 0.008, 0.016), 2, losses.get)
  assert first.pending == (0.032,) and first == search((0.016, 0.004, 0.008), 2, losses.get)
  losses[0.032] = 1.7
  assert search((0.004, 0.008, 0.016), 2, losses.get).pending == (0.064,)
  partial = {0.004: 2.0, 0.008: None, 0.016: 1.8}
  assert search((0.004, 0.008, 0.016), 2, partial.get).pending == (0.008,)


@pytest.mark.parametrize(
    "rates, message",
    [
        ((0.01, 0.03), "are 3x apart; at most 2x"),
        ((0.01, 0.01), "repeats 0.01"),
        ((), "must be positive numbers"),
        ((0.01, -0.02), "must be positive numbers"),
    ],
)
def test_a_bad_search_grid_is_a_one_line_error(rates, message):
  with pytest.raises(ValueError, match=message):
    check_rates("galore", rates)


def _bowl(matrix_optimum, dense_optimum):
  """A loss over (matrix rate, dense rate) whose minimum is at the two optima."""
  return lambda p: _parabola(matrix_optimum)(p[0]) + 0.5 * _parabola(dense_optimum)(p[1])


def _run_grid_to_the_end(axes, max_extensions, curve):
  done = {}
  while True:
    state = search_grid(axes, max_extensions, done.get)
    if not state.pending:
      return state, done
    done.update({point: curve(point) for point in state.pending})


def test_a_two_rate_search_brackets_each_axis_and_runs_every_combination():
  state, done = _run_grid_to_the_end(
      ((0.001, 0.002), (0.004, 0.008, 0.016)), 2, _bowl(0.004, 0.004)
  )
  assert state.axes == ((0.001, 0.002, 0.004, 0.008), (0.002, 0.004, 0.008, 0.016))
  assert set(done) == set(state.points) and len(done) == 16  # every combination ran
  assert (state.best, state.at_edge) == ((0.004, 0.004), (False, False))


def test_each_axis_of_a_two_rate_search_has_its_own_extensions_and_edge_mark():
  state, _ = _run_grid_to_the_end(((0.01, 0.02), (0.001, 0.002)), 1, _bowl(1.0, 0.0015))
  assert state.axes == ((0.01, 0.02, 0.04), (0.001, 0.002, 0.004))
  assert (state.best, state.at_edge) == ((0.04, 0.002), (True, False))
  fixed = search_grid(((0.01, 0.02), (None,)), 2, {(0.01, None): 2.0, (0.02, None): 1.0}.get)
  assert fixed.axes == ((0.01, 0.02, 0.04), (None,)) and fixed.pending == ((0.04, None),)


def test_one_axis_search_is_the_two_rate_search_with_a_fixed_second_rate():
  losses = {0.004: 2.0, 0.008: 1.9, 0.016: 1.8, 0.032: 1.85}
  alone = search((0.004, 0.008, 0.016), 2, losses.get)
  both = search_grid(((0.004, 0.008, 0.016), (0.5,)), 2, lambda p: losses.get(p[0]))
  assert both.axes[0] == alone.rates and both.best == (alone.best, 0.5)
  assert both.at_edge[0] == alone.at_edge
