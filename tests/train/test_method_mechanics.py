"""Each method's mechanics, as the trainer runs them, at the steps the records say.

One tiny run per method goes through the trainer's own jitted step (:meth:`Run.train_step`)
on the run's data; the host keeps the state after every step and the step's metrics. The
tests then check, against formulas written here:

* the logged ``lr`` is the paper's schedule (linear warmup, cosine to ``min_lr_ratio *
  peak``) with the quick recovery after each reset (or SPAM's re-warmup), and it is the rate
  the update applied: the embedding's change is ``-lr`` times its Adam direction rebuilt
  from the new state;
* every logged event happened at its step and at no other: resets leave zero moments and a
  restarted count, refactorizations and LoRO's manifold steps balanced factors, ReLoRA's
  merges zero adapters and a moved base, refreshes a new projector.
"""

import functools
import math

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from tiny_run import TINY

from lowrank_jax.data import load_tokenizer, make_train_iterator
from lowrank_jax.optim import (
    FoldedAdamState,
    LowRankAdamState,
    ScaleBySpamState,
    ScaleByStableSpamState,
)
from lowrank_jax.train.applied import EVENTS
from lowrank_jax.train.config import load_config
from lowrank_jax.train.loop import train
from lowrank_jax.train.metrics import read_metrics
from lowrank_jax.train.methods import METHODS
from lowrank_jax.train.run import Run
from lowrank_jax.train.state import init_train_state

STEPS, PERIOD, RECOVERY, PEAK, WARMUP, MIN_RATIO = 8, 3, 2, 1e-2, 0.25, 0.1
B1, B2, EPS = 0.9, 0.999, 1e-8  # the optimizer section's defaults
LAZY_SCALE = 0.5
RESTARTS = [
    f"optimizer.reset_every={PERIOD}",
    f"optimizer.refactorize_every={PERIOD}",
    f"optimizer.recovery_steps={RECOVERY}",
]
PROJECTED = ["optimizer.options.rank=4", f"optimizer.options.update_proj_gap={PERIOD}"]
OVERRIDES = {
    "low_rank_restarts": RESTARTS,
    "sltrain_restarts": RESTARTS,
    "galore": PROJECTED,
    "fira": PROJECTED,
    "apollo": [*PROJECTED, "optimizer.options.store_projector=true"],
    "apollo_mini": [
        f"optimizer.options.update_proj_gap={PERIOD}",
        "optimizer.options.projection.moment_policy=reset",
    ],
    "relora": [
        f"optimizer.reset_every={PERIOD}",
        f"optimizer.options.restart_warmup_steps={RECOVERY}",
    ],
    "golore": [*PROJECTED, f"optimizer.options.random_from_step={PERIOD}"],
    "loro": [
        f"optimizer.options.every={PERIOD}",
        f"optimizer.options.restart_warmup_steps={RECOVERY}",
        f"optimizer.options.lazy_scale={LAZY_SCALE}",
    ],
    "stable_spam": [f"optimizer.options.reset_interval={PERIOD}"],
    "spam": [
        f"optimizer.options.reset_interval={PERIOD}",
        "optimizer.options.warmup_steps=2",
        "optimizer.options.spike_grace_steps=2",
    ],
}
ADAM_FAMILY = [name for name, method in METHODS.items() if method.build.__name__ == "_adam_family"]
GALORE_FAMILY = ["galore", "fira", "apollo", "apollo_mini", "golore"]


def tiny_overrides(method: str) -> list[str]:
  factorized = METHODS[method].linear_kind != "dense"
  return TINY + [
      f"optimizer.method={method}",
      f"optimizer.learning_rate={PEAK}",
      f"schedule.total_steps={STEPS}",
      f"schedule.warmup_ratio={WARMUP}",
      f"schedule.min_lr_ratio={MIN_RATIO}",
      *(["model.linear.rank=4"] if factorized else []),
      *OVERRIDES.get(method, []),
  ]


@functools.cache
def traced(method: str):
  """``(run, states, metrics)``: host copies of the state before step 1 and after each step,
  and each step's metrics, of a tiny run of ``method`` through the trainer's step."""
  config = load_config(overrides=tiny_overrides(method) + ["run_dir=unused"])
  run = Run.without_data(config, jax.devices()[:1], load_tokenizer(config.data))
  step = run.train_step()
  batches = make_train_iterator(config.data, run.tokenizer, sharding=run.data_sharding)
  state = init_train_state(run.model_config, run.tx, run.mesh, config.seed)
  states, metrics = [jax.device_get(state)], []
  for _ in range(STEPS):
    state, step_metrics = step(state, next(batches))
    states.append(jax.device_get(state))
    metrics.append(jax.device_get(step_metrics))
  return run, states, metrics


def schedule_by_hand(count: int) -> float:
  """The paper's schedule at 0-based ``count``: warmup from 0, cosine to MIN_RATIO * PEAK."""
  warmup = int(WARMUP * STEPS)
  if count < warmup:
    return PEAK * count / warmup
  progress = (count - warmup) / (STEPS - warmup)
  return MIN_RATIO * PEAK + (1 - MIN_RATIO) * PEAK * 0.5 * (1 + math.cos(math.pi * progress))


def recovered_by_hand(count: int) -> float:
  """arXiv 2505.22922, weight refactorization and momentum reset: after the reset ending update kT, the rate climbs linearly
  from 0.001 times to the schedule's value at kT + R over R updates."""
  since = count % PERIOD
  if count < PERIOD or since >= RECOVERY:
    return schedule_by_hand(count)
  return schedule_by_hand(count - since + RECOVERY) * (0.001 + 0.999 * since / (RECOVERY - 1))


def jagged_by_hand(count: int) -> float:
  """ReLoRA's and LoRO's re-warmup: from 0, linearly over W updates after each restart, up to
  the schedule's value at kK + W."""
  since = count % PERIOD
  if count < PERIOD or since >= RECOVERY:
    return schedule_by_hand(count)
  return schedule_by_hand(count - since + RECOVERY) * since / RECOVERY


def spam_rewarmed_by_hand(count: int) -> float:
  """SPAM: after the first reset, the rate times 1 - 0.99 (1 + cos(pi j / (W + 1))) / 2 for
  the ``j < W`` updates since the last one (W = 2)."""
  n, warmup = count + 1, 2
  since = n % PERIOD
  if n < PERIOD or since >= warmup:
    return schedule_by_hand(count)
  return schedule_by_hand(count) * (1 - 0.99 * 0.5 * (1 + math.cos(math.pi * since / (warmup + 1))))


def expected_lr(method: str, count: int) -> float:
  if method in ("low_rank_restarts", "sltrain_restarts"):
    return recovered_by_hand(count)
  if method in ("relora", "loro"):
    return jagged_by_hand(count)
  if method == "spam":
    return spam_rewarmed_by_hand(count)
  return schedule_by_hand(count)


def expected_events(method: str) -> dict[str, list[int]]:
  """The 1-based updates each event of ``method`` happens in."""
  ends = [n for n in range(1, STEPS + 1) if n % PERIOD == 0]
  starts = [n for n in range(1, STEPS + 1) if (n - 1) % PERIOD == 0]
  merges = starts[1:]  # ReLoRA merges after update kK + 1, which its rate zeroes
  return {
      "low_rank_restarts": {"momentum_reset": ends, "refactorize": ends},
      "sltrain_restarts": {"momentum_reset": ends, "refactorize": ends},
      "relora": {"momentum_reset": merges, "merge": merges},
      "spam": {"momentum_reset": ends},
      "stable_spam": {"momentum_reset": ends},
      "loro": {"momentum_reset": ends, "manifold_step": ends},
      **{name: {"refresh": starts} for name in GALORE_FAMILY},
  }.get(method, {})


def states_of(tree, cls) -> list:
  is_state = lambda x: isinstance(x, cls)
  return [x for x in jax.tree.leaves(tree, is_leaf=is_state) if is_state(x)]


EMBEDDING = ("embed_tokens",)
FACTOR_A = ("q_proj", "['a']")


def leaf(tree, names=EMBEDDING) -> np.ndarray:
  """The one leaf of a params-shaped tree whose path names all of ``names``."""
  (found,) = [
      value
      for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]
      if all(name in jax.tree_util.keystr(path) for name in names)
  ]
  return np.asarray(found, np.float64)


def adam_direction(opt_state, names=EMBEDDING) -> np.ndarray:
  """A leaf's Adam direction in the update that left ``opt_state``'s moments."""
  classes = (optax.ScaleByAdamState, FoldedAdamState, ScaleBySpamState, ScaleByStableSpamState)
  (adam,) = states_of(opt_state, classes)
  c = int(adam.count)
  mu, nu = leaf(adam.mu, names), leaf(adam.nu, names)
  if isinstance(adam, ScaleByStableSpamState):  # its Adam count restarts with each reset
    c = c if c < PERIOD else c % PERIOD + 1
  if isinstance(adam, (optax.ScaleByAdamState, ScaleByStableSpamState)):  # eps added to the
    return (mu / (1 - B1**c)) / (np.sqrt(nu / (1 - B2**c)) + EPS)  # corrected sqrt(nu)
  return math.sqrt(1 - B2**c) / (1 - B1**c) * mu / (np.sqrt(nu) + EPS)  # the references' Adam


def applied_lr(before, after, names=EMBEDDING) -> float:
  """The rate of a step, fitted: ``-<moved, direction> / <direction, direction>``."""
  moved = leaf(after.params, names) - leaf(before.params, names)
  direction = adam_direction(after.opt_state, names)
  return -np.vdot(moved, direction) / np.vdot(direction, direction)


def moved_by_adam(before, after, names, lr: float) -> bool:
  """The leaf moved by exactly its Adam step at rate ``lr`` (nothing else touched it)."""
  moved = leaf(after.params, names) - leaf(before.params, names)
  step = lr * adam_direction(after.opt_state, names)
  return np.allclose(moved, -step, rtol=1e-2, atol=1e-3 * lr + 1e-7)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_logged_lr_is_the_schedule_with_its_recovery(method):
  _, _, metrics = traced(method)
  logged = [float(m["lr"]) for m in metrics]
  expected = [expected_lr(method, t) for t in range(STEPS)]
  np.testing.assert_allclose(logged, expected, rtol=1e-5)
  groups = {name for name in metrics[0] if name.startswith("lr/")}
  assert groups == ({"lr/factors"} if method == "loro" else set())
  if method == "loro":  # the lazy steps scale the factors' rate, the exact steps do not
    scales = [1.0 if (t + 1) % PERIOD == 0 else LAZY_SCALE for t in range(STEPS)]
    logged = [float(m["lr/factors"]) for m in metrics]
    np.testing.assert_allclose(logged, np.multiply(expected, scales), rtol=1e-5)


@pytest.mark.parametrize(
    "method", ADAM_FAMILY + GALORE_FAMILY + ["spam", "stable_spam", "relora", "loro"]
)
def test_each_update_applies_the_logged_lr(method):
  """The embedding moved by exactly ``-lr`` times its Adam direction (no weight decay); the
  updates that end with a reset left no moments to rebuild it from."""
  _, states, metrics = traced(method)
  for before, after, step_metrics in zip(states, states[1:], metrics):
    if int(step_metrics.get("momentum_reset", 0)):
      continue
    np.testing.assert_allclose(
        applied_lr(before, after), float(step_metrics["lr"]), rtol=2e-3, atol=1e-9
    )


@pytest.mark.parametrize("method", sorted(METHODS))
def test_events_are_logged_at_their_steps(method):
  _, _, metrics = traced(method)
  logged = {
      name: [n for n, m in enumerate(metrics, 1) if int(m[name])]
      for name in EVENTS
      if name in metrics[0]
  }
  expected = expected_events(method)
  assert {name: steps for name, steps in logged.items() if steps} == expected


@pytest.mark.parametrize("method", ["low_rank_restarts", "sltrain_restarts"])
def test_a_reset_leaves_zero_moments_and_a_restarted_count(method):
  _, states, metrics = traced(method)
  for after, step_metrics in zip(states[1:], metrics):
    (adam,) = states_of(after.opt_state, optax.ScaleByAdamState)
    moments = jax.tree.leaves((adam.mu, adam.nu))
    if int(step_metrics["momentum_reset"]):
      assert int(adam.count) == 0
      assert all(not np.any(m) for m in moments)
    else:
      assert int(adam.count) > 0
      assert any(np.any(m) for m in moments)


def factor_pairs(params):
  flat = {path: v.get_value() for path, v in nnx.to_flat_state(params)}
  return [(flat[p[:-1] + ("a",)], value) for p, value in flat.items() if p[-1] == "b"]


def balanced(params) -> bool:
  """Every factor pair ``a b`` has ``a^T a = b b^T`` (the balanced factors of an SVD)."""
  pairs = factor_pairs(params)
  assert pairs
  return all(
      np.allclose(
          np.einsum("...ir,...is->...rs", a, a), np.einsum("...ri,...si->...rs", b, b), atol=1e-5
      )
      for a, b in pairs
  )


@pytest.mark.parametrize("method", ["low_rank_restarts", "sltrain_restarts"])
def test_factors_are_balanced_after_each_refactorization_only(method):
  """Balanced after the flagged updates; after the others the factors moved by their Adam
  step alone (the updates after a refactorization recover from a rate near 0, so they stay
  nearly balanced)."""
  _, states, metrics = traced(method)
  for before, after, step_metrics in zip(states, states[1:], metrics):
    if int(step_metrics["refactorize"]):
      assert balanced(after.params)
    else:
      assert moved_by_adam(before, after, FACTOR_A, float(step_metrics["lr"]))


@pytest.mark.parametrize("method", ["galore", "fira", "apollo", "golore"])
def test_projectors_change_at_the_logged_refreshes_only(method):
  _, states, metrics = traced(method)
  for before, after, step_metrics in zip(states[1:], states[2:], metrics[1:]):
    (old,) = states_of(before.opt_state, LowRankAdamState)
    (new,) = states_of(after.opt_state, LowRankAdamState)
    changed = [not np.array_equal(a, b) for a, b in zip(*map(jax.tree.leaves, (old, new)))]
    projectors_changed = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(old.projector), jax.tree.leaves(new.projector))
    ]
    assert any(changed) and projectors_changed  # stored projectors, one per target linear
    assert all(projectors_changed) == bool(step_metrics["refresh"])
    assert any(projectors_changed) == bool(step_metrics["refresh"])


def fresh_moments(mu, nu) -> bool:
  """One update from zero moments: ``nu (1 - b1)^2 = (1 - b2) mu^2`` elementwise."""
  return all(
      np.allclose(
          np.asarray(v, np.float64) * (1 - B1) ** 2,
          (1 - B2) * np.asarray(m, np.float64) ** 2,
          rtol=1e-4,
          atol=1e-30,
      )
      for m, v in zip(jax.tree.leaves(mu), jax.tree.leaves(nu))
  )


def test_apollo_mini_moments_restart_at_the_logged_refreshes_only():
  """With ``moment_policy=reset`` a refresh shows as moments one update old."""
  _, states, metrics = traced("apollo_mini")
  for after, step_metrics in zip(states[1:], metrics):
    (projected,) = states_of(after.opt_state, LowRankAdamState)
    assert fresh_moments(projected.mu, projected.nu) == bool(step_metrics["refresh"])


@pytest.mark.parametrize(
    "method,state_class", [("spam", ScaleBySpamState), ("stable_spam", ScaleByStableSpamState)]
)
def test_spike_aware_moments_restart_at_the_logged_resets_only(method, state_class):
  _, states, metrics = traced(method)
  for after, step_metrics in zip(states[2:], metrics[1:]):  # step 1 starts from zero too
    (adam,) = states_of(after.opt_state, state_class)
    assert fresh_moments(adam.mu, adam.nu) == bool(step_metrics["momentum_reset"])


def test_the_schedule_ends_at_min_lr_ratio_times_the_peak():
  run, _, _ = traced("adamw")
  np.testing.assert_allclose(float(run.schedule(STEPS)), MIN_RATIO * PEAK, rtol=1e-6)
  np.testing.assert_allclose(float(run.schedule(int(WARMUP * STEPS))), PEAK, rtol=1e-6)


def test_relora_merges_and_prunes_the_adapters_moments_at_the_logged_steps_only():
  """After a merge: new adapters (``b = 0``), a moved frozen base, the adapters' moments
  pruned (random, 99.9%) while the embedding's and Adam's count run on."""
  run, states, metrics = traced("relora")
  bases = [run.model(state).layers.self_attn.q_proj.base[...] for state in states]
  for n, (after, step_metrics) in enumerate(zip(states[1:], metrics), 1):
    (adam,) = states_of(after.opt_state, optax.ScaleByAdamState)
    adapters = [
        value
        for path, value in jax.tree_util.tree_flatten_with_path(adam.mu)[0]
        if "q_proj" in jax.tree_util.keystr(path)
    ]
    zero_fraction = np.mean([np.mean(m == 0) for m in adapters])
    assert int(adam.count) == n and np.any(leaf(adam.mu))
    merged = bool(step_metrics["merge"])
    assert merged == all(not np.any(b) for _, b in factor_pairs(after.params)) or n == 1
    assert merged == (not np.array_equal(bases[n], bases[n - 1]))
    assert merged == (zero_fraction > 0.99)


def test_loro_exact_steps_balance_the_factors_and_restart_adam_at_the_logged_steps_only():
  """After an exact step: balanced factors, a fresh Adam state; after a lazy step the factors
  moved by their Adam step at the logged factor rate."""
  _, states, metrics = traced("loro")
  for before, after, step_metrics in zip(states, states[1:], metrics):
    (adam,) = states_of(after.opt_state, FoldedAdamState)
    if int(step_metrics["manifold_step"]):
      assert balanced(after.params)
      assert int(adam.count) == 0 and not any(np.any(m) for m in jax.tree.leaves(adam.mu))
    else:
      assert int(adam.count) > 0
      assert moved_by_adam(before, after, FACTOR_A, float(step_metrics["lr/factors"]))


def test_metrics_jsonl_logs_the_last_applied_lr_and_counts_the_events_of_each_window(tmp_path):
  """A run of the trainer logging every 4 steps (restarts at 3 and 6): each line holds the
  rate of its last update and how many resets and refactorizations its window saw."""
  run_dir = tmp_path / "run"
  train(
      load_config(
          overrides=tiny_overrides("low_rank_restarts")
          + [f"run_dir={run_dir}", "logging.every=4", "checkpoint.every=0", "eval.every=0"]
      )
  )
  lines = [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
  assert [r["step"] for r in lines] == [4, 8]
  for first, line in zip([1, 5], lines):
    window = range(first, line["step"] + 1)
    np.testing.assert_allclose(line["lr"], recovered_by_hand(line["step"] - 1), rtol=1e-5)
    assert line["momentum_reset"] == line["refactorize"] == sum(n % PERIOD == 0 for n in window)
