"""Every named method trains, and the restarts do what the paper says inside the step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax.train import mesh as mesh_lib
from lowrank_jax.train.config import load_config
from lowrank_jax.train.methods import METHODS
from lowrank_jax.train.run import Run
from lowrank_jax.train.state import init_train_state
from lowrank_jax.train.step import make_train_step

TINY = [
    "model.overrides.num_layers=1",
    "model.overrides.hidden_size=32",
    "model.overrides.intermediate_size=64",
    "model.overrides.num_heads=2",
    "model.overrides.vocab_size=384",
    "data.vocab_size=384",
    "data.seq_len=16",
    "data.global_batch_size=8",
    "eval.batch_size=8",
    "schedule.total_steps=8",
]
OPTIONS = {
    "galore": ["optimizer.options.rank=4", "optimizer.options.update_proj_gap=2"],
    "fira": ["optimizer.options.rank=4", "optimizer.options.update_proj_gap=2"],
    "golore": [
        "optimizer.options.rank=4",
        "optimizer.options.update_proj_gap=2",
        "optimizer.options.random_from_step=2",
    ],
    "apollo": ["optimizer.options.rank=4", "optimizer.options.update_proj_gap=2"],
    "apollo_mini": ["optimizer.options.update_proj_gap=2"],
    "loro": ["optimizer.options.every=5"],
}  # four manifold steps in 20


# Adafactor's rate is relative to each weight's RMS (about 0.02 at this init), so its 0.5 moves
# the weights as far as the others' 0.01.
RATES = {"adafactor": 0.5}


def make_run(method, *extra):
  factorized = METHODS[method].linear_kind != "dense"
  overrides = TINY + [
      f"optimizer.method={method}",
      *OPTIONS.get(method, []),
      *(["model.linear.rank=4"] if factorized else []),
      *extra,
  ]
  return Run.build(load_config(overrides=overrides))


def train_steps(run, steps, vary_batch=True):
  step_fn = jax.jit(
      make_train_step(run.graphdef, run.tx, after_update=run.after_update()),
      in_shardings=(run.shardings, run.data_sharding),
      out_shardings=(run.shardings, mesh_lib.replicated(run.mesh)),
  )
  state = init_train_state(run.model_config, run.tx, run.mesh, seed=0)
  key = jax.random.key(0)
  losses = []
  for i in range(steps):
    ids = jax.random.randint(jax.random.fold_in(key, i if vary_batch else 0), (8, 16), 2, 384)
    state, metrics = step_fn(state, {"input_ids": ids, "loss_mask": jnp.ones_like(ids)})
    losses.append(float(metrics["loss"]))
  return state, losses


def compiled_step_text(run) -> str:
  step_fn = jax.jit(
      make_train_step(run.graphdef, run.tx),
      in_shardings=(run.shardings, run.data_sharding),
      out_shardings=(run.shardings, mesh_lib.replicated(run.mesh)),
  )
  batch = {k: jax.ShapeDtypeStruct((8, 16), jnp.int32) for k in ("input_ids", "loss_mask")}
  return step_fn.lower(run.abstract_state(), batch).compile().as_text()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_named_method_trains_20_steps_on_8_devices_with_the_loss_going_down(method):
  run = make_run(method, f"optimizer.learning_rate={RATES.get(method, 0.01)}")
  assert run.mesh.devices.size == 8
  _, losses = train_steps(run, 20, vary_batch=False)  # one batch, memorised
  assert np.isfinite(losses).all(), losses
  assert np.mean(losses[-3:]) < losses[0] - 0.1, losses


def test_galore_with_refreshes_spread_over_the_fsdp_devices_trains_as_without():
  fsdp = ["mesh.data=1", "mesh.fsdp=8", "model.overrides.num_layers=2"]
  spread = make_run("galore", *fsdp, "optimizer.options.projection.refresh_axes=[fsdp]")
  moves = lambda run: compiled_step_text(run).count(" all-to-all(")
  assert moves(spread) > moves(make_run("galore", *fsdp))  # stacks moved to whole matrices
  _, expected = train_steps(make_run("galore", *fsdp), 6)
  _, losses = train_steps(spread, 6)
  np.testing.assert_allclose(losses, expected, rtol=1e-5)
  with pytest.raises(ValueError, match="optimizer.options.projection has unknown key 'axes'"):
    make_run("galore", "optimizer.options.projection.axes=[fsdp]")
  with pytest.raises(ValueError, match="refresh_axes"):
    make_run("galore", "optimizer.options.projection.refresh_axes=[nope]")


def test_the_sltrain_support_survives_training_and_a_checkpoint_restore(tmp_path):
  from lowrank_jax.train.checkpoint import Checkpointer
  from lowrank_jax.train.config import CheckpointSection
  from lowrank_jax.data import make_train_iterator

  run = make_run("sltrain")
  start = init_train_state(run.model_config, run.tx, run.mesh, seed=0)
  trained, _ = train_steps(run, 3)
  supports = lambda state: [
      v.get_value() for p, v in nnx.to_flat_state(state.frozen) if p[-1] == "support"
  ]
  assert len(supports(trained)) == 7
  for before, after in zip(supports(start), supports(trained)):
    np.testing.assert_array_equal(before, after)
  data = make_train_iterator(run.config.data, run.tokenizer)
  checkpointer = Checkpointer(tmp_path, CheckpointSection(async_save=False))
  checkpointer.save(3, trained, data, {"tokens_seen": 0})
  checkpointer.wait()
  restored, _ = checkpointer.restore(3, run.abstract_state())
  for saved, loaded in zip(supports(trained), supports(restored)):
    np.testing.assert_array_equal(saved, loaded)


def factor_pairs(params):
  flat = {path: v.get_value() for path, v in nnx.to_flat_state(params)}
  return [(flat[p[:-1] + ("a",)], value) for p, value in flat.items() if p[-1] == "b"]


def test_low_rank_restarts_balance_the_factors_on_restart_steps():
  run = make_run(
      "low_rank_restarts",
      "optimizer.refactorize_every=2",
      "optimizer.reset_every=2",
      "optimizer.recovery_steps=2",
  )
  balanced, _ = train_steps(run, 2)
  pairs = factor_pairs(balanced.params)
  assert len(pairs) == 7
  for a, b in pairs:  # W = a b with a^T a = b b^T
    gram_a = jnp.einsum("...ir,...is->...rs", a, a)
    gram_b = jnp.einsum("...ri,...si->...rs", b, b)
    np.testing.assert_allclose(gram_a, gram_b, atol=1e-5)
  unbalanced, _ = train_steps(make_run("low_rank"), 2)  # control: no refactorization
  a, b = factor_pairs(unbalanced.params)[0]
  assert not np.allclose(
      jnp.einsum("...ir,...is->...rs", a, a), jnp.einsum("...ri,...si->...rs", b, b), atol=1e-5
  )


def test_loro_manifold_steps_land_on_balanced_factors():
  run = make_run("loro", "optimizer.options.every=2", "optimizer.options.restart_warmup_steps=1")
  state, _ = train_steps(run, 2)
  pairs = factor_pairs(state.params)
  assert len(pairs) == 7
  for a, b in pairs:  # the manifold step returns U_r S_r^1/2, S_r^1/2 V_r^T
    np.testing.assert_allclose(
        jnp.einsum("...ir,...is->...rs", a, a), jnp.einsum("...ri,...si->...rs", b, b), atol=1e-5
    )


def test_relora_merges_the_adapters_into_the_frozen_weights():
  run = make_run("relora", "optimizer.reset_every=2", "optimizer.options.restart_warmup_steps=2")
  state, _ = train_steps(run, 3)  # merged after update 3 = K + 1, which has rate 0
  for _, b in factor_pairs(state.params):
    np.testing.assert_array_equal(b, 0)  # re-initialised right after the merge
  model = run.model(state)
  start = run.model(init_train_state(run.model_config, run.tx, run.mesh, seed=0))
  base_now = model.layers.self_attn.q_proj.base[...]
  base_then = start.layers.self_attn.q_proj.base[...]
  assert not np.allclose(base_now, base_then)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["optimizer.method=galore", "optimizer.refactorize_every=5"],
            "needs a method with factors",
        ),
        (["optimizer.method=cola", "optimizer.refactorize_every=5"], "needs a method with factors"),
        (["optimizer.method=galore", "optimizer.reset_every=5"], "applies to Adam-based methods"),
        (
            ["optimizer.method=low_rank", "model.linear.kind=lora", "model.linear.rank=4"],
            "model.linear.kind='lora' does not fit optimizer.method='low_rank'",
        ),
        (["optimizer.method=low_rank"], "which need model.linear.rank"),
        (["optimizer.method=low_rank", "model.linear.rank=0"], "rank=0"),
        (["optimizer.method=nope"], "optimizer.method='nope' is unknown"),
        (
            [
                "optimizer.method=low_rank_restarts",
                "model.linear.rank=4",
                "optimizer.reset_every=4",
            ],
            "optimizer.recovery_steps=10 exceeds optimizer.reset_every=4",
        ),
    ],
)
def test_method_misconfigurations_are_one_line_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    load_config(overrides=overrides)
