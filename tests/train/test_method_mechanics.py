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

import dataclasses
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
    ScaleByFoldedAdamState,
    ScaleByLowRankAdamState,
    ScaleBySpamState,
    ScaleByStableSpamState,
)
from lowrank_jax.train.update_records import EVENTS
from lowrank_jax.train.config import load_config
from lowrank_jax.train.loop import train
from lowrank_jax.train.metrics import read_metrics
from lowrank_jax.train.methods import METHODS
from lowrank_jax.train.run import Run
from lowrank_jax.train.step import make_loss
from lowrank_jax.train.state import init_train_state

STEPS, PERIOD, RECOVERY, PEAK, WARMUP, MIN_RATIO = 8, 3, 2, 1e-2, 0.25, 0.1
B1, B2, EPS = 0.9, 0.999, 1e-8  # the Adam family's defaults, set for every method below
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
ADAM_FAMILY = [name for name, method in METHODS.items() if method.adam_family]
GALORE_FAMILY = ["galore", "fira", "apollo", "apollo_mini", "golore"]


def tiny_overrides(method: str) -> list[str]:
  factorized = METHODS[method].linear_kind != "dense"
  return TINY + [
      f"optimizer.method={method}",
      f"optimizer.learning_rate={PEAK}",
      f"optimizer.eps={EPS}",
      f"schedule.total_steps={STEPS}",
      f"schedule.warmup_ratio={WARMUP}",
      f"schedule.min_lr_ratio={MIN_RATIO}",
      *(["model.linear.rank=4"] if factorized else []),
      *OVERRIDES.get(method, []),
  ]


def train_batches(run: Run):
  """The batches of ``run``'s steps, in order (the same on every call)."""
  return make_train_iterator(run.config.data, run.tokenizer, sharding=run.data_sharding)


@functools.cache
def traced(method: str, extra: tuple[str, ...] = ()):
  """``(run, states, metrics)``: host copies of the state before step 1 and after each step,
  and each step's metrics, of a tiny run of ``method`` (with the ``extra`` overrides last)
  through the trainer's step."""
  config = load_config(overrides=tiny_overrides(method) + [*extra, "run_dir=unused"])
  run = Run.without_data(config, jax.devices()[:1], load_tokenizer(config.data))
  step = run.train_step()
  batches = train_batches(run)
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


def leaves_named(tree, names) -> list[np.ndarray]:
  """The leaves of a params-shaped tree whose paths name all of ``names``."""
  return [
      np.asarray(value, np.float64)
      for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]
      if all(name in jax.tree_util.keystr(path) for name in names)
  ]


def leaf(tree, names=EMBEDDING) -> np.ndarray:
  """The one leaf of a params-shaped tree whose path names all of ``names``."""
  (found,) = leaves_named(tree, names)
  return found


def adam_direction(opt_state, names=EMBEDDING) -> np.ndarray:
  """A leaf's Adam direction in the update that left ``opt_state``'s moments."""
  classes = (
      optax.ScaleByAdamState,
      ScaleByFoldedAdamState,
      ScaleBySpamState,
      ScaleByStableSpamState,
  )
  (adam,) = states_of(opt_state, classes)
  c = int(adam.count)
  mu, nu = leaf(adam.mu, names), leaf(adam.nu, names)
  if isinstance(adam, ScaleByStableSpamState):  # its Adam count restarts with each reset
    c = c if c < PERIOD else c % PERIOD + 1
  folded = not isinstance(adam, (optax.ScaleByAdamState, ScaleByStableSpamState))
  return adam_from_moments(mu, nu, c, folded)


def adam_from_moments(mu, nu, count: int, folded: bool) -> np.ndarray:
  """Adam's direction from its moments after ``count`` updates: optax's ``scale_by_adam`` adds
  eps to the corrected ``sqrt(nu)``; the references' Adam (``folded``) adds it to the raw one
  and folds both corrections into the step."""
  if folded:
    return math.sqrt(1 - B2**count) / (1 - B1**count) * mu / (np.sqrt(nu) + EPS)
  return (mu / (1 - B1**count)) / (np.sqrt(nu / (1 - B2**count)) + EPS)


def adam_by_hand(gradients, folded: bool) -> np.ndarray:
  """Adam's direction after one update per gradient of ``gradients``, from zero moments."""
  mu = nu = 0.0
  for gradient in gradients:
    mu = B1 * mu + (1 - B1) * gradient
    nu = B2 * nu + (1 - B2) * gradient**2
  return adam_from_moments(mu, nu, len(gradients), folded)


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


def gradients_by_hand(run: Run, states) -> list:
  """The loss gradient each update of ``states`` started from, on its batch (the mean over
  the batch's targets, as the trainer's step takes it)."""
  loss = make_loss(run.graphdef)

  @jax.jit
  def gradient(params, frozen, batch):
    summed, count = jax.grad(lambda p: loss(p, frozen, batch, 1.0), has_aux=True)(params)
    return jax.tree.map(lambda g: g / count, summed)

  batches = train_batches(run)
  return [jax.device_get(gradient(s.params, s.frozen, next(batches))) for s in states[:-1]]


def projector_of(opt_state, names):
  """A projected leaf's projector ``P`` in ``opt_state``; ``None`` for a leaf Adam takes whole."""
  projected = states_of(opt_state, ScaleByLowRankAdamState)
  found = leaves_named(projected[0].projector, names) if projected else []
  return found[0] if found else None


DECAY = 0.1
KERNEL = (("gate_proj", "kernel"),)
FACTORS = (("gate_proj", "['a']"), ("gate_proj", "['b']"))
DENSE_LEAVES = (EMBEDDING, ("['norm']",))  # the embedding and the final norm's scale


@dataclasses.dataclass(frozen=True)
class DecayCase:
  """A method under weight decay, the target-linear leaves it trains, and the peak rate of
  each group of leaves (one schedule for all unless the case's overrides split them).

  Attributes:
    method: the training method.
    targets: names of the target linear's leaves (gate_proj: wide, so a projection is on the
      left, ``R = P^T G``).
    overrides: the case's own config overrides.
    projection_scale: the projected-back direction's scale where the targets are projected
      (the projector is read from the state; it must stay fixed over the run).
    dense_peak: peak rate of the embedding and norm leaves.
    target_peak: peak rate of the target leaves.
  """

  method: str
  targets: tuple[tuple[str, ...], ...]
  overrides: tuple[str, ...] = ()
  projection_scale: float | None = None
  dense_peak: float = PEAK
  target_peak: float = PEAK

  def direction(self, gradients, folded: bool, projector=None) -> np.ndarray:
    """Adam's direction of a leaf after the updates of ``gradients``, through ``projector``
    (``scale * P adam(P^T G)``) where one is given."""
    if projector is None:
      return adam_by_hand(gradients, folded)
    projected = [np.swapaxes(projector, -1, -2) @ g for g in gradients]
    return self.projection_scale * projector @ adam_by_hand(projected, folded)


GALORE_SCALE = 0.5
DECAY_CASES = [
    DecayCase("full_rank", KERNEL),
    DecayCase(
        "galore",
        KERNEL,
        (f"optimizer.options.scale={GALORE_SCALE}", f"optimizer.options.update_proj_gap={STEPS}"),
        projection_scale=GALORE_SCALE,
    ),
    DecayCase("low_rank", FACTORS),
    DecayCase("cola", FACTORS),
    DecayCase(  # per-group rates: each group decays at its own rate
        "low_rank", FACTORS, (f"optimizer.dense_learning_rate={3 * PEAK}",), dense_peak=3 * PEAK
    ),
]


@pytest.mark.parametrize(
    "case",
    DECAY_CASES,
    ids=lambda case: case.method
    + ("_dense" if case.overrides[-1:] and "dense" in case.overrides[-1] else ""),
)
def test_each_update_decays_every_leaf_decoupled(case):
  """AdamW's decoupled decay reaches the embedding, the norms and the target linears (kernels
  or model-side factors) alike, as in the references: every update is
  ``after - before = -lr (u + wd before)``, with ``u`` Adam's direction rebuilt here from the
  loss gradients (through a projected method's projector) and ``lr`` the constant peak of
  the leaf's group."""
  run, states, _ = traced(
      case.method, (f"optimizer.weight_decay={DECAY}", "schedule.kind=constant", *case.overrides)
  )
  gradients = gradients_by_hand(run, states)
  folded = bool(states_of(states[0].opt_state, ScaleByFoldedAdamState))  # the references' Adam
  checked = [(names, case.dense_peak) for names in DENSE_LEAVES]
  checked += [(names, case.target_peak) for names in case.targets]
  for names, peak in checked:
    projector = projector_of(states[-1].opt_state, names)
    history = [leaf(g, names) for g in gradients]
    for n, (before, after) in enumerate(zip(states, states[1:]), 1):
      weights = leaf(before.params, names)
      expected = -peak * (case.direction(history[:n], folded, projector) + DECAY * weights)
      moved = leaf(after.params, names) - weights
      # Relative to the decay's own size: 1 if the decay is missing; about 1e-2 at most from
      # the few entries whose gradient is near 0, where the float32 Adam direction is noise.
      error = np.linalg.norm(moved - expected) / np.linalg.norm(peak * DECAY * weights)
      assert error < 0.1, (names, n, error)


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
    (old,) = states_of(before.opt_state, ScaleByLowRankAdamState)
    (new,) = states_of(after.opt_state, ScaleByLowRankAdamState)
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
    (projected,) = states_of(after.opt_state, ScaleByLowRankAdamState)
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
    (adam,) = states_of(after.opt_state, ScaleByFoldedAdamState)
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
