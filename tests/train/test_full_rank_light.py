"""Muon, Adafactor and Lion in the trainer: optax's transforms, routed as documented, with the
state their memory formulas count.

* Over three updates of a nano model's parameters, the trainer's transform moves each leaf as
  optax's own optimizer built by hand: ``optax.contrib.muon`` on the target matrices,
  ``optax.lion`` and ``optax.adafactor`` on every leaf (``dense_leaves: own``) or on the
  target matrices only, ``optax.adamw`` on the dense leaves (Muon, ``dense_leaves: adamw``).
* The analytic count of the state equals the abstract train state's at 60m, where Adafactor
  factors every matrix (its sides are at least 128), dense leaves included.
"""

import jax
import numpy as np
import optax
import pytest
from optax import contrib

from lowrank_jax.memory.analytic import analytic_memory
from lowrank_jax.memory.measured import measure_state, memory_run
from lowrank_jax.memory.report import case_config
from lowrank_jax.train.config import load_config
from lowrank_jax.train.methods import build_optimizer, target_mask
from lowrank_jax.train.run import Run
from lowrank_jax.train.schedule import make_schedule

PEAK, WD, B1, B2, EPS, STEPS = 1e-2, 0.1, 0.8, 0.95, 1e-7, 3
FACTOR_FROM = 16  # Adafactor factors the nano model's 32 x 64 matrices from this side


def section_and_params(method: str, *options: str):
  config = load_config(
      overrides=[
          "model.preset=nano",
          "model.overrides.num_layers=2",
          f"optimizer.method={method}",
          f"optimizer.learning_rate={PEAK}",
          f"optimizer.weight_decay={WD}",
          f"optimizer.b1={B1}",
          f"optimizer.b2={B2}",
          f"optimizer.eps={EPS}",
          "schedule.total_steps=10",
          "schedule.warmup_ratio=0.2",
          "run_dir=unused",
          *(f"optimizer.options.{option}" for option in options),
      ]
  )
  shapes = Run.without_data(config, jax.devices()[:1]).abstract_state().params
  keys = iter(jax.random.split(jax.random.key(0), len(jax.tree.leaves(shapes))))
  params = jax.tree.map(lambda s: 0.02 * jax.random.normal(next(keys), s.shape), shapes)
  return config.optimizer_section(), make_schedule(PEAK, config.schedule), params


def moved(tx, params) -> list:
  """The parameters after ``STEPS`` updates on gradients drawn from the step and the weights."""
  state = tx.init(params)
  for step in range(STEPS):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(step + 1), len(leaves))
    grads = treedef.unflatten(
        [jax.random.normal(k, p.shape) + p for k, p in zip(keys, leaves, strict=True)]
    )
    updates, state = jax.jit(tx.update)(grads, state, params)
    params = optax.apply_updates(params, updates)
  return jax.tree.leaves(params)


def per_matrix(params):
  return jax.tree.map(
      lambda t: contrib.MuonDimensionNumbers(-2, -1) if t else None, target_mask(params)
  )


def optax_by_hand(method: str, schedule, options: dict):
  """``(on the target matrices, on the dense leaves)``: optax's own optimizers."""
  adamw = optax.adamw(schedule, B1, B2, EPS, weight_decay=WD)
  if method == "muon":
    matrices = contrib.muon(
        schedule,
        weight_decay=WD,
        consistent_rms=None if options.get("consistent_rms") == "null" else 0.2,
        muon_weight_dimension_numbers=per_matrix,
    )
  elif method == "lion":
    matrices = optax.lion(schedule, weight_decay=WD)
  else:
    matrices = optax.adafactor(
        schedule, min_dim_size_to_factor=FACTOR_FROM, weight_decay_rate=lambda c: WD * schedule(c)
    )
  return matrices, matrices if options.get("dense_leaves") == "own" else adamw


@pytest.mark.parametrize(
    "method, options",
    [
        ("muon", {}),
        ("muon", {"consistent_rms": "null"}),  # modded-nanogpt's width scale
        ("lion", {"dense_leaves": "own"}),
        ("lion", {"dense_leaves": "adamw"}),
        ("adafactor", {"dense_leaves": "own", "min_dim_size_to_factor": FACTOR_FROM}),
        ("adafactor", {"dense_leaves": "adamw", "min_dim_size_to_factor": FACTOR_FROM}),
    ],
)
def test_the_trainers_transform_is_optax_routed_as_documented(method, options):
  section, schedule, params = section_and_params(
      method, *(f"{key}={value}" for key, value in options.items())
  )
  ours = moved(build_optimizer(section, schedule), params)
  on_matrices, on_dense = (moved(tx, params) for tx in optax_by_hand(method, schedule, options))
  targets = jax.tree.leaves(target_mask(params))
  assert any(targets) and not all(targets)
  for target, got, matrices, dense in zip(targets, ours, on_matrices, on_dense, strict=True):
    np.testing.assert_allclose(got, matrices if target else dense, rtol=1e-6, atol=1e-7)


def test_muon_has_no_dense_leaves_option():
  with pytest.raises(ValueError, match="unknown option optimizer.options.dense_leaves"):
    section_and_params("muon", "dense_leaves=own")


@pytest.mark.parametrize("method", ["muon", "adafactor", "lion"])
def test_the_memory_formula_counts_the_state_at_60m(method):
  config = case_config("60m", method, "fp32", devices=1, fsdp=1)
  measured = measure_state(memory_run(config))
  analytic = analytic_memory(config.model_config(), method, rank=128)
  assert measured.weights == analytic.weight_bytes
  assert measured.optimizer == analytic.optimizer_bytes
  adam = analytic_memory(config.model_config(), "full_rank", rank=128).optimizer_bytes
  assert measured.optimizer < adam
