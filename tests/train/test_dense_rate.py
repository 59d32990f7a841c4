"""Per-group learning rates: the dense leaves at ``optimizer.dense_learning_rate``, the target
group at ``optimizer.learning_rate``, exactly, for every method.

A tiny run of each method trains through the trainer's own step with the two rates (and weight
decay, which the dense leaves' update must scale with); the host keeps the state before and
after every step and recomputes the step's gradients. Then

* for every method, each group moved by what the method's own optimizer, replayed on the same
  gradients and weights, applies at that group's rate;
* for full rank, Low-Rank and GaLore, the moves are checked against Adam written out here from
  the gradients: ``-lr_t (m_hat / (sqrt(v_hat) + eps) + wd w)`` with the hand schedule;
* ``lr/dense`` is logged as the dense leaves' applied rate, ``lr`` staying the matrices'.
"""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_method_mechanics import (
    B1,
    B2,
    EPS,
    FACTOR_A,
    PEAK,
    STEPS,
    expected_lr,
    leaf,
    tiny_overrides,
)

from lowrank_jax.data import load_tokenizer, make_train_iterator
from lowrank_jax.optim.tree_utils import path_names
from lowrank_jax.train.commented_config import annotated_yaml
from lowrank_jax.train.config import load_config
from lowrank_jax.train.dense_rate import target_group
from lowrank_jax.train.methods import METHODS, build_optimizer
from lowrank_jax.train.schedule import make_schedule
from lowrank_jax.train.run import Run
from lowrank_jax.train.state import init_train_state
from lowrank_jax.train.step import make_loss

DENSE, WEIGHT_DECAY = 3e-2, 0.1


def overrides(method: str, dense=DENSE) -> list[str]:
  return tiny_overrides(method) + [
      f"optimizer.dense_learning_rate={dense}",
      f"optimizer.weight_decay={WEIGHT_DECAY}",
      "run_dir=unused",
  ]


@functools.cache
def traced(method: str, dense=DENSE):
  """``(config, states, grads, metrics)``: host copies of the state before step 1 and after
  each step, the gradients of each step (recomputed at its state and batch) and its metrics."""
  config = load_config(overrides=overrides(method, dense))
  run = Run.without_data(config, jax.devices()[:1], load_tokenizer(config.data))
  step = run.train_step()
  loss = make_loss(run.graphdef)

  @jax.jit
  def grad_of(state, batch):
    denominator = jnp.maximum(batch["loss_mask"][:, 1:].sum(), 1).astype(jnp.float32)
    return jax.grad(lambda p: loss(p, state.frozen, batch, denominator)[0])(state.params)

  batches = make_train_iterator(config.data, run.tokenizer, sharding=run.data_sharding)
  state = init_train_state(run.model_config, run.tx, run.mesh, config.seed)
  states, grads, metrics = [jax.device_get(state)], [], []
  for _ in range(STEPS):
    batch = next(batches)
    grads.append(jax.device_get(grad_of(state, batch)))
    state, step_metrics = step(state, batch)
    states.append(jax.device_get(state))
    metrics.append(jax.device_get(step_metrics))
  return config, states, grads, metrics


def replayed_params(config, states, grads, peaks: tuple[float, ...]) -> list[list]:
  """For each peak in ``peaks``, the parameters after each step had the method's own optimizer
  at that peak taken it from the run's weights, with the run's gradients. The schedule is
  linear in its peak, so the peak is an argument of the jitted update: one compile serves all."""
  unit = make_schedule(1.0, config.schedule)
  optimizer = lambda peak: build_optimizer(
      config.optimizer_section(), lambda count: peak * unit(count)
  )
  update = jax.jit(
      lambda grad, opt_state, params, peak: optimizer(peak).update(grad, opt_state, params)
  )
  replays = []
  for peak in peaks:
    opt_state, moved = optimizer(peak).init(states[0].params), []
    for before, grad in zip(states, grads):
      updates, opt_state = update(grad, opt_state, before.params, peak)
      moved.append(jax.device_get(optax.apply_updates(before.params, updates)))
    replays.append(moved)
  return replays


def close(actual, expected) -> bool:
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return np.allclose(actual, expected, rtol=1e-4, atol=1e-5 * max(np.abs(expected).max(), 1e-3))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_group_takes_the_methods_update_at_its_own_rate(method):
  config, states, grads, metrics = traced(method)
  at_peak, at_dense = replayed_params(config, states, grads, (PEAK, DENSE))
  groups = jax.tree.leaves(target_group(states[0].params))
  assert any(groups) and not all(groups)
  for t, after in enumerate(states[1:]):
    merged = int(metrics[t].get("merge", 0))  # ReLoRA's merge moved its adapters after the update
    for target, got, peak, dense in zip(
        groups, *map(jax.tree.leaves, (after.params, at_peak[t], at_dense[t]))
    ):
      if not (target and merged):
        assert close(got, peak if target else dense), (method, t + 1, target)
    np.testing.assert_allclose(float(metrics[t]["lr"]), expected_lr(method, t), rtol=1e-5)
    np.testing.assert_allclose(
        float(metrics[t]["lr/dense"]), expected_lr(method, t) * DENSE / PEAK, rtol=1e-5
    )


def schedule(peak: float, count: int) -> float:
  return expected_lr("full_rank", count) * peak / PEAK  # the plain schedule of the run


def moved_by_hand(states, grads, names, peak: float, folded: bool) -> None:
  """The leaf moved by AdamW at ``peak``, its moments summed here from the gradients: optax's
  Adam (eps outside the corrected sqrt(v)), or the references' folded one."""
  mu = nu = 0.0
  for t, (before, after, grad) in enumerate(zip(states, states[1:], grads)):
    g, w, c = leaf(grad, names), leaf(before.params, names), t + 1
    mu, nu = B1 * mu + (1 - B1) * g, B2 * nu + (1 - B2) * g * g
    if folded:
      direction = math.sqrt(1 - B2**c) / (1 - B1**c) * mu / (np.sqrt(nu) + EPS)
    else:
      direction = (mu / (1 - B1**c)) / (np.sqrt(nu / (1 - B2**c)) + EPS)
    expected = w - schedule(peak, t) * (direction + WEIGHT_DECAY * w)
    assert close(leaf(after.params, names), expected), (names, t + 1)


@pytest.mark.parametrize(
    "method, target, folded",
    [
        ("full_rank", ("q_proj", "['kernel']"), False),
        ("low_rank", FACTOR_A, False),
        ("galore", None, True),  # its dense leaves' Adam is the references'
    ],
)
def test_two_groups_move_by_adam_at_their_rates_by_hand(method, target, folded):
  _, states, grads, _ = traced(method)
  moved_by_hand(states, grads, ("embed_tokens",), DENSE, folded)
  moved_by_hand(states, grads, ("['norm']",), DENSE, folded)
  if target is not None:
    moved_by_hand(states, grads, target, PEAK, folded)
  with pytest.raises(AssertionError):  # the dense leaves did not take the matrices' rate
    moved_by_hand(states, grads, ("embed_tokens",), PEAK, folded)


def test_sltrain_sparse_values_and_every_leaf_under_a_linear_are_the_target_group():
  # Unstacked layers: the sparse values are vectors, in the target group all the same.
  config = load_config(overrides=overrides("sltrain") + ["model.scan_layers=false"])
  params = Run.without_data(config, jax.devices()[:1]).abstract_state().params
  flat = jax.tree_util.tree_flatten_with_path(target_group(params))[0]
  grouped = {path_names(path)[-1]: target for path, target in flat}
  assert {name for name, target in grouped.items() if target} == {"a", "b", "values"}
  assert jax.tree.leaves(params)[0].ndim == 2 and any(
      leaf_.ndim == 1
      for path, leaf_ in jax.tree_util.tree_flatten_with_path(params)[0]
      if path_names(path)[-1] == "values"
  )


def test_a_dense_rate_equal_to_the_rate_changes_nothing():
  # The scale is then 1: the run is bitwise the one without a dense rate (the default's).
  _, tied, _, tied_metrics = traced("galore", PEAK)
  config = load_config(overrides=tiny_overrides("galore") + ["run_dir=unused"])
  run = Run.without_data(config, jax.devices()[:1], load_tokenizer(config.data))
  batches = make_train_iterator(config.data, run.tokenizer, sharding=run.data_sharding)
  state, step = init_train_state(run.model_config, run.tx, run.mesh, config.seed), run.train_step()
  state, metrics = step(state, next(batches))
  for a, b in zip(jax.tree.leaves(tied[1]), jax.tree.leaves(jax.device_get(state))):
    np.testing.assert_array_equal(a, b)
  assert "lr/dense" not in metrics and float(tied_metrics[0]["lr/dense"]) == float(metrics["lr"])


@pytest.mark.parametrize(
    "overrides_, message",
    [
        (["optimizer.dense_learning_rate=-1"], "optimizer.dense_learning_rate=-1.0 must be a"),
        (["optimizer.dense_learning_rate=0"], "must be a finite number > 0 or null"),
        (["optimizer.dense_learning_rate=.inf"], "optimizer.dense_learning_rate=inf must be"),
        (["optimizer.dense_learning_rate=fast"], "optimizer.dense_learning_rate='fast' is not"),
        (["optimizer.dense_learning_rates=[1,-1]"], "must be a list of finite numbers > 0"),
        (
            ["optimizer.dense_learning_rates=[0.01]"],
            "optimizer.dense_learning_rates=[0.01] needs one rate per entry of "
            "optimizer.learning_rates=[]",
        ),
        (
            ["optimizer.learning_rates=[0.001,0.002]", "optimizer.dense_learning_rates=[0.01]"],
            "needs one rate per entry of optimizer.learning_rates=[0.001, 0.002]",
        ),
        (
            [
                "optimizer.learning_rates=[0.001,0.002]",
                "optimizer.dense_learning_rates=[0.01,0.02]",
                "optimizer.dense_learning_rate=0.01",
            ],
            "optimizer.dense_learning_rate=0.01 and optimizer.dense_learning_rates=[0.01, 0.02] "
            "both set the dense rate; keep one",
        ),
        (
            [
                "optimizer.learning_rates=[0.001,0.001]",
                "optimizer.dense_learning_rates=[0.01,0.01]",
            ],
            "optimizer.learning_rates=[0.001, 0.001] with optimizer.dense_learning_rates=[0.01, "
            "0.01] repeats a rate",
        ),
    ],
)
def test_bad_dense_rates_fail_in_one_line(overrides_, message):
  with pytest.raises(ValueError, match=re.escape(message)) as error:
    load_config(overrides=overrides_)
  assert "\n" not in str(error.value)


def test_a_sweep_may_pair_each_rate_with_its_own_dense_rate():
  # Two copies at one matrix rate: only their dense rates tell them apart.
  config = load_config(
      overrides=["optimizer.learning_rates=[0.001,0.001]", "optimizer.dense_learning_rates=[1,2]"]
  )
  assert config.optimizer.copy_rates() == [(0.001, 1.0), (0.001, 2.0)]


def test_print_config_describes_the_dense_rates():
  text = annotated_yaml(load_config(overrides=["optimizer.dense_learning_rate=0.01"]))
  lines = {line.split(":")[0].strip(): line for line in text.splitlines()}
  assert "dense_learning_rate: 0.01  # peak learning rate of the dense leaves" in text
  assert "paired element by element" in lines["dense_learning_rates"]
