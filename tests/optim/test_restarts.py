"""The paper's restarts: weight refactorization, momentum reset, quick-recovery schedule."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lowrank_jax.models import Llama, LlamaConfig, LinearConfig
from lowrank_jax.optim.momentum_reset import momentum_reset
from lowrank_jax.optim.relora import relora, relora_schedule
from lowrank_jax.optim.refactorize import Factor, balanced_factors, refactorize, sibling_factors
from lowrank_jax.optim.restart_schedule import restart_schedule
from reference_packages import require


def random_pair(key, lead, p, r, q):
  """Unbalanced factors: the left one large, the right one small."""
  key_a, key_b = jax.random.split(key)
  return (
      10.0 * jax.random.normal(key_a, lead + (p, r)),
      0.1 * jax.random.normal(key_b, lead + (r, q)),
  )


def relative_error(x, y):
  return float(jnp.linalg.norm(x - y) / jnp.linalg.norm(y))


# --- refactorization ------------------------------------------------------------------------


@pytest.mark.parametrize("lead", [(), (3,)])
def test_balanced_factors_keep_the_product_and_balance_it_like_a_full_svd(lead):
  a, b = random_pair(jax.random.key(0), lead, 9, 3, 7)
  new_a, new_b = balanced_factors(a, b)
  assert relative_error(new_a @ new_b, a @ b) < 1e-5
  # Reference: the singular values of the full product, in float64.
  singular = np.linalg.svd(np.asarray(a, np.float64) @ np.asarray(b, np.float64), compute_uv=False)[
      ..., :3
  ]
  gram_a = jnp.swapaxes(new_a, -1, -2) @ new_a
  gram_b = new_b @ jnp.swapaxes(new_b, -1, -2)
  expected = np.zeros(lead + (3, 3))
  expected[..., np.arange(3), np.arange(3)] = singular
  np.testing.assert_allclose(gram_a, expected, atol=1e-4 * singular.max(), rtol=1e-5)
  np.testing.assert_allclose(gram_b, expected, atol=1e-4 * singular.max(), rtol=1e-5)


def factor_params(key):
  key_1, key_2, key_3 = jax.random.split(key, 3)
  a, b = random_pair(key_1, (), 8, 2, 6)
  stacked_a, stacked_b = random_pair(key_2, (4,), 6, 3, 5)
  return {
      "q_proj": {"a": a, "b": b},
      "mlp": {"a": stacked_a, "b": stacked_b},
      "norm": jax.random.normal(key_3, (6,)),
  }


def test_refactorize_lands_on_balanced_factors_of_the_updated_params():
  params = factor_params(jax.random.key(1))
  grads = jax.tree.map(jnp.ones_like, params)
  inner = optax.sgd(0.01)
  optimizer = refactorize(inner, every=1)
  updates, _ = jax.jit(optimizer.update)(grads, optimizer.init(params), params)
  new = optax.apply_updates(params, updates)
  plain = optax.apply_updates(params, inner.update(grads, inner.init(params))[0])
  np.testing.assert_array_equal(new["norm"], plain["norm"])  # not a factor: inner update
  for name in ("q_proj", "mlp"):
    a, b = new[name]["a"], new[name]["b"]
    assert relative_error(a @ b, plain[name]["a"] @ plain[name]["b"]) < 1e-5
    gram_a, gram_b = jnp.swapaxes(a, -1, -2) @ a, b @ jnp.swapaxes(b, -1, -2)
    assert relative_error(gram_a, gram_b) < 1e-4
    assert relative_error(gram_a, jnp.swapaxes(plain[name]["a"], -1, -2) @ plain[name]["a"]) > 0.5


def alongside(optimizer, inner, params, steps, reset_every=None):
  """Runs ``optimizer`` (jitted) and the ``inner`` transform it wraps on the same gradients,
  applying the wrapper's updates; ``inner``'s state is re-initialised after the updates that
  are multiples of ``reset_every``. Yields (step, updates, state, inner updates, inner state)."""
  state, inner_state = optimizer.init(params), inner.init(params)
  update = jax.jit(optimizer.update)
  for step in range(1, steps + 1):
    grads = jax.tree.map(lambda p: jnp.full_like(p, step), params)
    updates, state = update(grads, state, params)
    expected, inner_state = inner.update(grads, inner_state, params)
    yield step, updates, state, expected, inner_state
    if reset_every and step % reset_every == 0:
      inner_state = inner.init(params)
    params = optax.apply_updates(params, updates)


def test_refactorize_is_a_no_op_between_its_steps():
  inner = optax.adam(1e-2)
  for step, updates, state, expected, inner_state in alongside(
      refactorize(inner, every=3), inner, factor_params(jax.random.key(2)), 6
  ):
    if step % 3:
      chex.assert_trees_all_close(updates, expected, rtol=1e-6, atol=0)
    else:
      chex.assert_trees_all_close(updates["norm"], expected["norm"], rtol=1e-6, atol=0)
      assert not np.allclose(updates["q_proj"]["a"], expected["q_proj"]["a"])
    chex.assert_trees_all_close(state.inner_state, inner_state, rtol=1e-6, atol=0)


def test_refactorize_pairs_the_factors_of_a_low_rank_llama():
  # The tiny model of tests/models/test_parameterizations.py (shared compiled ops).
  config = LlamaConfig.preset(
      "nano",
      num_layers=2,
      vocab_size=32,
      hidden_size=16,
      intermediate_size=24,
      num_heads=2,
      max_seq_len=16,
      scan_layers=True,
      linear=LinearConfig(kind="sltrain", rank=4, alpha=8.0, sparsity=0.1),
  )
  model = Llama(config, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  labels = [
      label
      for label in jax.tree.leaves(
          sibling_factors()(params), is_leaf=lambda x: isinstance(x, Factor)
      )
  ]
  assert len(labels) == 2 * 7 and {label.side for label in labels} == {"left", "right"}
  params = jax.tree.map(lambda p: p + 0.1, params)  # b leaves its zero init
  optimizer = refactorize(optax.sgd(0.0), every=1)
  updates, _ = jax.jit(optimizer.update)(
      jax.tree.map(jnp.zeros_like, params), optimizer.init(params), params
  )
  new = optax.apply_updates(params, updates)
  for module in ("q_proj", "o_proj"):
    old_proj, new_proj = params["layers"]["self_attn"][module], new["layers"]["self_attn"][module]
    assert (
        relative_error(
            new_proj["a"][...] @ new_proj["b"][...], old_proj["a"][...] @ old_proj["b"][...]
        )
        < 1e-5
    )
  np.testing.assert_array_equal(
      new["layers"]["mlp"]["up_proj"]["values"][...],
      params["layers"]["mlp"]["up_proj"]["values"][...],
  )


def test_refactorize_accepts_custom_pair_names():
  key_b, key_a = jax.random.split(jax.random.key(3))
  params = {
      "lora": {
          "B": jax.random.normal(key_b, (7, 2)),  # PyTorch layout: W = B @ A
          "A": jax.random.normal(key_a, (2, 9)),
      }
  }
  optimizer = refactorize(optax.sgd(0.0), every=1, pairs=sibling_factors("B", "A"))
  updates, _ = optimizer.update(
      jax.tree.map(jnp.zeros_like, params), optimizer.init(params), params
  )
  new = optax.apply_updates(params, updates)["lora"]
  assert relative_error(new["B"] @ new["A"], params["lora"]["B"] @ params["lora"]["A"]) < 1e-5
  assert relative_error(new["B"].T @ new["B"], new["A"] @ new["A"].T) < 1e-4


def test_refactorize_rejects_bad_arguments():
  params = factor_params(jax.random.key(4))
  optimizer = refactorize(optax.sgd(0.1), every=2)
  with pytest.raises(ValueError, match="needs params"):
    optimizer.update(params, optimizer.init(params))
  with pytest.raises(ValueError, match="every"):
    refactorize(optax.sgd(0.1), every=0)
  with pytest.raises(ValueError, match="only a left"):
    refactorize(optax.sgd(0.1), 2, pairs={"x": Factor("p", "left"), "y": None}).init(
        {"x": jnp.ones((4, 2)), "y": jnp.ones((2, 4))}
    )
  with pytest.raises(ValueError, match="r <= min"):
    refactorize(optax.sgd(0.1), 2).init({"m": {"a": jnp.ones((4, 3)), "b": jnp.ones((3, 2))}})


# --- momentum reset ---------------------------------------------------------------------------


def test_momentum_reset_zeroes_the_state_exactly_on_its_steps():
  params = {"w": jnp.ones((3, 2)), "v": jnp.ones(4, jnp.bfloat16)}
  inner = optax.adam(1e-2)
  for step, updates, state, expected, inner_state in alongside(
      momentum_reset(inner, every=3), inner, params, 7, reset_every=3
  ):
    # The update itself is never altered (up to jit's float reassociation).
    chex.assert_trees_all_close(updates, expected, rtol=1e-6, atol=0)
    if step % 3 == 0:
      chex.assert_trees_all_equal(state.inner_state, inner.init(params))  # exactly
    else:
      chex.assert_trees_all_close(state.inner_state, inner_state, rtol=1e-6, atol=0)
    assert int(state.count) == step


def test_the_step_after_a_reset_is_a_fresh_adams_first_step():
  params = {"w": jnp.arange(6.0).reshape(3, 2)}
  optimizer = momentum_reset(optax.adam(0.1), every=2)
  state = optimizer.init(params)
  for step in range(2):
    _, state = optimizer.update({"w": jnp.full((3, 2), step + 1.0)}, state, params)
  grads = {"w": jnp.array([[0.5, -1.0], [2.0, 0.0], [-3.0, 1.0]])}
  after_reset, _ = optimizer.update(grads, state, params)
  fresh = optax.adam(0.1)
  first, _ = fresh.update(grads, fresh.init(params), params)
  chex.assert_trees_all_close(after_reset, first, rtol=1e-6)
  np.testing.assert_allclose(after_reset["w"][0], [-0.1, 0.1], rtol=1e-5)  # Adam's first step


def test_momentum_reset_needs_params_and_a_positive_period():
  optimizer = momentum_reset(optax.adam(0.1), every=2)
  params = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="needs params"):
    optimizer.update(params, optimizer.init(params))
  with pytest.raises(ValueError, match="every"):
    momentum_reset(optax.adam(0.1), every=1.5)


# --- quick-recovery schedule ------------------------------------------------------------------


def test_restart_schedule_equals_the_papers_formula():
  every, recovery = 20, 5
  base = optax.warmup_cosine_decay_schedule(0.0, 1.0, 6, 100, end_value=0.1)
  schedule = jax.jit(restart_schedule(base, every, recovery))
  for t in range(0, 95):
    k, since = divmod(t, every)
    if k >= 1 and since < recovery:
      expected = float(base(k * every + recovery)) * (0.001 + 0.999 * since / (recovery - 1))
    else:
      expected = float(base(t))
    np.testing.assert_allclose(float(schedule(t)), expected, rtol=1e-6, atol=1e-9, err_msg=t)
  # The boundaries by name: no recovery in the first cycle, 0.001x at a restart, the base
  # value again on the last recovering step and after it.
  assert float(schedule(0)) == float(base(0))
  assert math.isclose(float(schedule(40)), 0.001 * float(base(45)), rel_tol=1e-6)
  assert math.isclose(float(schedule(44)), float(base(45)), rel_tol=1e-6)
  for t in (39, 45):
    assert math.isclose(float(schedule(t)), float(base(t)), rel_tol=1e-6)


def test_restart_schedule_accepts_a_constant_and_validates():
  schedule = restart_schedule(0.5, every=4, recovery_steps=2)
  assert [float(schedule(t)) for t in range(7)] == pytest.approx(
      [0.5, 0.5, 0.5, 0.5, 0.0005, 0.5, 0.5]
  )
  for bad in (dict(every=0), dict(every=4, recovery_steps=1), dict(every=4, recovery_steps=5)):
    with pytest.raises(ValueError):
      restart_schedule(0.5, **bad)


def test_the_low_rank_restarts_recipe_trains_under_jit():
  params = factor_params(jax.random.key(5))
  schedule = restart_schedule(optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 20), 4, 2)
  optimizer = refactorize(
      optax.chain(
          momentum_reset(optax.scale_by_adam(), every=4), optax.scale_by_learning_rate(schedule)
      ),
      every=4,
  )
  state = optimizer.init(params)

  @jax.jit
  def step(params, state):
    grads = jax.grad(lambda p: jnp.sum((p["q_proj"]["a"] @ p["q_proj"]["b"] - 1.0) ** 2))(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(8):
    params, state = step(params, state)
  chex.assert_tree_all_finite(params)
  adam_state = state.inner_state[0].inner_state
  assert int(adam_state.count) == 0  # reset at the end of step 8
  a, b = params["q_proj"]["a"], params["q_proj"]["b"]
  assert relative_error(a.T @ a, b @ b.T) < 1e-4  # refactorized at the end of step 8


# --- ReLoRA -----------------------------------------------------------------------------------


def reference_relora_multiplier(step, total, warmup, every, rewarm, min_ratio):
  """The ReLoRA reference's jagged cosine multiplier (adjust_step = 0), restated."""
  if step < warmup:
    return step / max(1, warmup)
  since, restarts = step % every, step // every
  if since < rewarm and step >= every:
    progress = (restarts * every + rewarm - warmup) / max(1, total - warmup)
    return (
        since
        / max(1, rewarm)
        * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    )
  progress = (step - warmup) / max(1, total - warmup)
  return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def test_relora_schedule_matches_the_reference():
  total, warmup, every, rewarm, ratio = 120, 7, 30, 5, 0.1
  base = optax.warmup_cosine_decay_schedule(0.0, 3e-3, warmup, total, end_value=ratio * 3e-3)
  schedule = jax.jit(relora_schedule(base, every, rewarm))
  for t in range(total):
    expected = 3e-3 * reference_relora_multiplier(t, total, warmup, every, rewarm, ratio)
    np.testing.assert_allclose(float(schedule(t)), expected, rtol=1e-5, atol=1e-10, err_msg=t)
  with pytest.raises(ValueError, match="restart_warmup_steps=31 must be <= restart_every=30"):
    relora_schedule(base, every, 31)


def torch_magnitude_pruning_(tensor, ratio):
  """Guitaricet/relora ``training_utils.magnitude_pruning_``, restated."""
  threshold = tensor.abs().flatten().float().quantile(ratio).to(tensor.dtype)
  tensor.mul_((tensor.abs() > threshold).to(tensor.dtype))


def torch_relora(params, grads, steps, every, rewarm, lr, ratio, adapters):
  """Guitaricet/relora's loop around ``torch.optim.AdamW``: ``optimizer.step()``, then after
  update ``kK + 1`` (``(update_step - start) % cycle_length == 1``) the adapters' moments pruned
  (``optimizer_reset``); the step count is kept; the rate from ``LambdaLR`` of its jagged
  multiplier (no warmup, constant base, so the multiplier is the re-warm ramp alone). Needs torch
  (a skip without it, a failure under ``CI=true``); the rest of this file runs without it."""
  torch = require("torch")
  weights = {k: torch.nn.Parameter(torch.tensor(np.asarray(v))) for k, v in params.items()}
  optimizer = torch.optim.AdamW(list(weights.values()), lr=lr, weight_decay=0.1)

  def multiplier(step):
    since = step % every
    return since / rewarm if step >= every and since < rewarm else 1.0

  scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
  for update_step in range(steps):
    for name, weight in weights.items():
      weight.grad = torch.tensor(np.asarray(grads(update_step)[name]))
    optimizer.step()
    scheduler.step()
    if update_step + 1 > every and (update_step + 1) % every == 1:
      for name in adapters:
        for key in ("exp_avg", "exp_avg_sq"):
          torch_magnitude_pruning_(optimizer.state[weights[name]][key], ratio)
  return {k: w.detach().numpy() for k, w in weights.items()}


def test_relora_matches_the_reference_loop_across_two_merges():
  """Magnitude pruning of half the adapters' moments after updates 5 and 9 (K = 4, W = 2);
  the other parameters' moments and the step count run on."""
  every, rewarm, steps, lr, ratio = 4, 2, 11, 1e-2, 0.5
  rng = np.random.default_rng(0)
  params = {name: rng.normal(size=(6, 4)).astype(np.float32) for name in ("a", "b", "w")}
  all_grads = [
      {k: rng.normal(size=(6, 4)).astype(np.float32) for k in params} for _ in range(steps)
  ]
  adapters = {"a": True, "b": True, "w": False}
  theirs = torch_relora(params, all_grads.__getitem__, steps, every, rewarm, lr, ratio, ("a", "b"))
  optimizer = relora(
      relora_schedule(lr, every, rewarm),
      every,
      weight_decay=0.1,
      prune_ratio=ratio,
      pruning="magnitude",
      adapters=adapters,
  )
  ours = jax.tree.map(jnp.asarray, params)
  state = optimizer.init(ours)
  for grads in all_grads:
    updates, state = optimizer.update(jax.tree.map(jnp.asarray, grads), state, ours)
    ours = optax.apply_updates(ours, updates)
  for name in params:
    np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-6, err_msg=name)
  unpruned = torch_relora(params, all_grads.__getitem__, steps, every, rewarm, lr, ratio, ())
  assert not np.allclose(unpruned["a"], theirs["a"], rtol=1e-4)  # the pruning mattered


def test_relora_random_pruning_drops_about_the_ratio_and_only_the_adapters():
  params = {"a": jnp.ones((64, 64)), "w": jnp.ones((64, 64))}
  optimizer = relora(0.0, restart_every=2, prune_ratio=0.75, adapters={"a": True, "w": False})
  state = optimizer.init(params)
  for _ in range(3):  # pruned after update 3 (count 2)
    _, state = optimizer.update(jax.tree.map(jnp.ones_like, params), state, params)
  adam = state[0].adam
  assert int(adam.count) == 3  # kept
  kept = float(jnp.mean(adam.mu["a"] != 0))
  assert 0.2 < kept < 0.3 and bool(jnp.all(adam.nu["w"] != 0))
  assert bool(jnp.all((adam.mu["a"] != 0) == (adam.mu["a"] == adam.mu["w"])))


# --- optax's trio and checkpointing, for the composed recipe and ReLoRA ----------------------


def recipe(every=1):
  """The paper's Low-Rank-restarts optimizer (refactorize, momentum reset, quick recovery)."""
  schedule = restart_schedule(optax.cosine_decay_schedule(1e-2, 10), every + 1, 2)
  return refactorize(
      optax.chain(
          momentum_reset(optax.scale_by_adam(), every=every), optax.scale_by_learning_rate(schedule)
      ),
      every=every,
  )


OPTIMIZERS = {
    "recipe": recipe,
    "relora": lambda: relora(1e-2, restart_every=1),
}  # prunes from update 2


def sharded_factor_params(dtype):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  shardings = {
      "m": {"a": NamedSharding(mesh, P("data", None)), "b": NamedSharding(mesh, P(None, "data"))},
      "norm": NamedSharding(mesh, P()),
  }
  a, b = random_pair(jax.random.key(6), (), 16, 2, 8)
  params = {"m": {"a": a.astype(dtype), "b": b.astype(dtype)}, "norm": jnp.ones(8, dtype)}
  return mesh, jax.device_put(params, shardings)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_state_types_unchanged_by_update_under_sharding(name, dtype):
  """Shapes, dtypes, weak types and shardings (``jax.typeof``), eager and jitted, on steps
  that refactorize and reset."""
  mesh, params = sharded_factor_params(dtype)
  optimizer = OPTIMIZERS[name]()
  types = lambda tree: jax.tree.map(jax.typeof, tree)
  with jax.set_mesh(mesh):
    state = optimizer.init(params)
    updates, updated = optimizer.update(params, state, params)
    jitted_updates, jitted_updated = jax.jit(optimizer.update)(params, state, params)
  assert types(updated) == types(state) == types(jitted_updated)
  assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(lambda p: p.dtype, params)
  chex.assert_trees_all_equal_shapes_and_dtypes(jitted_updates, params)
  chex.assert_tree_all_finite(jitted_updates)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_init_on_abstract_inputs(name):
  optimizer = OPTIMIZERS[name]()
  params = factor_params(jax.random.key(7))
  abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
  expected = jax.tree.map(lambda x: (x.shape, x.dtype), optimizer.init(params))
  assert (
      jax.tree.map(lambda x: (x.shape, x.dtype), jax.eval_shape(optimizer.init, abstract))
      == expected
  )


def test_orbax_round_trip_restores_the_recipe_state(tmp_path):
  params = factor_params(jax.random.key(8))
  optimizer = recipe(every=3)
  state = optimizer.init(params)
  for _ in range(2):  # a state with nonzero moments and counts
    _, state = optimizer.update(params, state, params)
  checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())
  checkpointer.save(tmp_path / "state", args=ocp.args.StandardSave(state))
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = checkpointer.restore(tmp_path / "state", args=ocp.args.StandardRestore(abstract))
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  assert type(restored) is type(state) and type(restored.inner_state[0]) is type(
      state.inner_state[0]
  )
  chex.assert_trees_all_equal(restored, state)
