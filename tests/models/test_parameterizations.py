"""The factorized linears (Low-Rank, LoRA, SLTrain, CoLA): math, init, counts, trainability,
stacked layers, bf16, export."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from linear_layer import linear_layer
from lowrank_jax.models import DtypePolicy, Llama, LlamaConfig, LinearConfig, count_params, next_token_loss
from lowrank_jax.models.hf import from_hf_llama, to_hf_llama
from lowrank_jax.models.llama import MLP
from lowrank_jax.models.linear.lora import merge_lora_adapters
from lowrank_jax.models.linear.sltrain import SparseSupport

LINEAR_KINDS = ("lowrank", "lora", "sltrain")  # the kinds with a dense kernel
KINDS = LINEAR_KINDS + ("cola",)
TINY = dict(
    num_layers=2, vocab_size=32, hidden_size=16, intermediate_size=24, num_heads=2, max_seq_len=16
)


def layer(kind, in_features=12, out_features=10, *, rank=3, seed=0, dtype=jnp.float32, **options):
  config = LinearConfig(kind=kind, rank=rank, **options)
  return linear_layer(config, in_features, out_features, seed=seed, dtype=dtype)


def perturb(module, seed=1, scale=1.0):
  """Gives every trainable parameter a random N(0, scale^2) value (b starts at zero in LoRA and
  SLTrain)."""
  state = nnx.state(module, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  nnx.update(
      module,
      treedef.unflatten(
          [scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
      ),
  )
  return module


def tiny(kind, **overrides):
  linear = LinearConfig(kind=kind, rank=4, alpha=8.0, sparsity=0.1)
  return LlamaConfig.preset("nano", **{**TINY, "linear": linear, **overrides})


# --- one layer ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LINEAR_KINDS)
def test_output_is_the_input_times_the_dense_kernel(kind):
  module = perturb(layer(kind))
  x = jax.random.normal(jax.random.key(2), (4, 12))
  chex.assert_trees_all_close(module(x), x @ module.dense_kernel(), rtol=1e-5, atol=1e-5)


def test_dense_kernels_follow_the_formulas():
  x = jax.random.normal(jax.random.key(3), (4, 12))
  low_rank = perturb(layer("lowrank", alpha=6.0))
  a, b = np.asarray(low_rank.a[...]), np.asarray(low_rank.b[...])
  np.testing.assert_allclose(low_rank.dense_kernel(), 2.0 * a @ b, rtol=1e-5)  # alpha/r = 2
  lora = perturb(layer("lora", alpha=6.0))
  np.testing.assert_allclose(
      lora.dense_kernel(),
      lora.base[...] + 2.0 * np.asarray(lora.a[...]) @ lora.b[...],
      rtol=1e-5,
      atol=1e-6,
  )
  sltrain = perturb(layer("sltrain", alpha=6.0, sparsity=0.2))
  sparse = np.zeros(12 * 10, np.float32)
  sparse[np.asarray(sltrain.support[...])] = sltrain.values[...]
  expected = 2.0 * np.asarray(sltrain.a[...]) @ sltrain.b[...] + sparse.reshape(12, 10)
  np.testing.assert_allclose(sltrain(x), x @ expected, rtol=1e-5, atol=1e-5)


def test_cola_is_silu_of_x_a_times_b():
  module = perturb(layer("cola"))
  x = np.asarray(jax.random.normal(jax.random.key(4), (4, 12)))
  hidden = x @ np.asarray(module.a[...])
  expected = hidden / (1.0 + np.exp(-hidden)) @ np.asarray(module.b[...])
  np.testing.assert_allclose(module(jnp.asarray(x)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("only_lr_act", [False, True])
def test_cola_mlp_drops_its_silu_with_only_lr_act(only_lr_act):
  """alvin-zyl/CoLA@91ff0d1 ``cola/modeling_cola.py``: ``down(gate(x) * up(x))`` with
  ``only_lr_act``, else ``down(silu(gate(x)) * up(x))``."""
  config = tiny("cola", linear=LinearConfig(kind="cola", rank=4, only_lr_act=only_lr_act))
  mlp = MLP(config, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(5), (3, config.hidden_size))
  gate = mlp.gate_proj(x)
  expected = mlp.down_proj((gate if only_lr_act else jax.nn.silu(gate)) * mlp.up_proj(x))
  np.testing.assert_allclose(mlp(x), expected, rtol=1e-6)
  other = mlp.down_proj((jax.nn.silu(gate) if only_lr_act else gate) * mlp.up_proj(x))
  assert not np.allclose(mlp(x), other, rtol=1e-3)


def assert_uniform(values, bound):
  values = np.asarray(values, np.float64).ravel()
  assert np.abs(values).max() <= bound
  assert np.abs(values).max() > 0.95 * bound  # fills the interval
  np.testing.assert_allclose(values.std(), bound / math.sqrt(3), rtol=0.05)


def test_init_statistics():
  n, m, r = 256, 192, 16
  low_rank = layer("lowrank", n, m, rank=r)
  assert_uniform(low_rank.a[...], 1 / math.sqrt(n))
  assert_uniform(low_rank.b[...], 1 / math.sqrt(r))
  lora = layer("lora", n, m, rank=r)
  assert_uniform(lora.a[...], 1 / math.sqrt(n))
  assert not np.any(lora.b[...])
  np.testing.assert_allclose(np.std(lora.base[...]), 0.02, rtol=0.02)
  sltrain = layer("sltrain", n, m, rank=r, sparsity=0.03)
  assert_uniform(sltrain.a[...], 1 / math.sqrt(n))
  assert not np.any(sltrain.b[...])
  assert_uniform(sltrain.values[...], 1 / math.sqrt(n))
  cola = layer("cola", n, m, rank=r)
  std = r**-0.25 * (m + n) ** -0.25
  for factor in (cola.a[...], cola.b[...]):
    np.testing.assert_allclose(np.std(factor), std, rtol=0.05)
    assert abs(np.mean(factor)) < 0.05 * std


def test_sltrain_support_is_a_sorted_set_of_distinct_flat_indices():
  module = layer("sltrain", 40, 30, sparsity=0.1)
  support = np.asarray(module.support[...])
  assert support.dtype == np.int32 and support.shape == (120,)  # int(0.1 * 40 * 30)
  assert len(np.unique(support)) == 120 and np.all(np.diff(support) > 0)
  assert support.min() >= 0 and support.max() < 40 * 30


def test_parameter_counts_by_hand():
  d, f, r, vocab, layers = 16, 24, 4, 32, 2
  shapes = [(d, d)] * 4 + [(d, f)] * 2 + [(f, d)]  # q k v o, gate up, down
  others = 2 * vocab * d + (2 * layers + 1) * d  # embeddings, lm_head, norms
  low_rank = sum((m + n) * r for m, n in shapes)
  sparse = sum(int(0.1 * m * n) for m, n in shapes)
  expected = {"lowrank": low_rank, "lora": low_rank, "cola": low_rank, "sltrain": low_rank + sparse}
  for kind, per_block in expected.items():
    assert count_params(tiny(kind)) == others + layers * per_block, kind


def test_frozen_and_support_variables_are_not_params():
  lora = layer("lora")
  assert set(nnx.to_pure_dict(nnx.state(lora, nnx.Param))) == {"a", "b"}
  assert set(nnx.to_pure_dict(nnx.state(lora))) == {"a", "b", "base"}
  sltrain = layer("sltrain")
  assert set(nnx.to_pure_dict(nnx.state(sltrain, nnx.Param))) == {"a", "b", "values"}


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_exactly_the_trainable_factors(kind):
  module = perturb(layer(kind))
  x = jax.random.normal(jax.random.key(5), (4, 12))
  grads = nnx.grad(lambda mod: jnp.sum(mod(x) ** 2))(module)
  trainable = nnx.to_pure_dict(nnx.state(module, nnx.Param))
  grads = nnx.to_pure_dict(grads)
  assert set(grads) == set(trainable)
  for name, grad in grads.items():
    assert np.any(np.asarray(grad) != 0), name
  # The frozen parts do enter the function: a manual gradient with respect to them is nonzero.
  frozen = nnx.state(module, nnx.Not(nnx.Param))
  floats = [leaf for leaf in jax.tree.leaves(frozen) if jnp.issubdtype(leaf.dtype, jnp.floating)]
  assert len(floats) == (1 if kind == "lora" else 0)


def test_rank_and_options_are_validated():
  for bad in (
      dict(kind="lowrank"),
      dict(kind="lora", rank=0),
      dict(kind="cola", rank=2.5),
      dict(kind="lowrank", rank=2, alpha=0.0),
      dict(kind="sltrain", rank=2, sparsity=0),
      dict(kind="sltrain", rank=2, sparsity=1.5),
      dict(kind="nope"),
      dict(kind="lowrank", rank=2, only_lr_act=True),
  ):
    with pytest.raises(ValueError):
      LinearConfig(**bad)
  with pytest.raises(ValueError, match="rank <= min"):
    layer("lowrank", 12, 10, rank=11)


def test_cola_has_no_dense_kernel_and_cannot_be_exported():
  with pytest.raises(NotImplementedError, match="not linear"):
    layer("cola").dense_kernel()
  with pytest.raises(NotImplementedError, match="cannot be exported"):
    to_hf_llama(Llama(tiny("cola", num_layers=1), rngs=nnx.Rngs(0)))


# --- a whole model ----------------------------------------------------------------------------


def train_step(model, ids):
  """One jitted loss-and-gradient step on the model's params; returns (loss, grads, rest)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def step(params, rest):
    def loss(params):
      logits = nnx.merge(graphdef, params, rest)(ids)
      return next_token_loss(logits, ids, jnp.ones_like(ids))[0]

    return jax.value_and_grad(loss)(params)

  loss, grads = step(params, rest)
  return loss, grads, params


def supports(model):
  """Every SLTrain support of the model, one array per (layer, linear)."""
  found = []
  for _, variable in nnx.to_flat_state(nnx.state(model, SparseSupport)):
    values = np.asarray(variable.get_value())
    found += list(values) if model.config.scan_layers else [values]
  return found


# Looped layers run in bf16, stacked ones in float32: every kind meets both layouts and both
# dtypes while the test suite compiles eight models, not sixteen.
@pytest.mark.parametrize("scan_layers,dtype", [(False, "bf16"), (True, "fp32")])
@pytest.mark.parametrize("kind", KINDS)
def test_llama_runs_a_jitted_gradient_step(kind, scan_layers, dtype):
  model = Llama(
      tiny(kind, scan_layers=scan_layers, dtype=DtypePolicy.named(dtype)), rngs=nnx.Rngs(0)
  )
  ids = jax.random.randint(jax.random.key(1), (2, 8), 0, 32)
  before = supports(model)
  loss, grads, params = train_step(model, ids)
  assert np.isfinite(loss) and abs(float(loss) - math.log(32)) < 1.0
  chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)
  chex.assert_tree_all_finite(grads)
  floats = [
      leaf for leaf in jax.tree.leaves(nnx.state(model)) if jnp.issubdtype(leaf.dtype, jnp.floating)
  ]
  assert {leaf.dtype for leaf in floats} == {DtypePolicy.named(dtype).param}
  block = grads["layers"] if scan_layers else grads["layers"][1]
  factor = "a" if kind in ("lowrank", "cola") else "b"  # b = 0 leaves a without gradient
  assert np.any(np.asarray(block["mlp"]["down_proj"][factor][...]) != 0)
  specs = nnx.get_partition_spec(nnx.state(model.layers))
  layers_axis = ("layers",) if scan_layers else ()
  up_proj = specs["mlp"]["up_proj"] if scan_layers else specs[0]["mlp"]["up_proj"]
  assert tuple(up_proj["a"].get_value()) == layers_axis + ("embed", "rank")
  assert tuple(up_proj["b"].get_value()) == layers_axis + ("rank", "mlp")
  if kind == "sltrain":
    assert len(before) == 2 * 7
    by_shape = {}
    for support in before:
      by_shape.setdefault(support.shape, []).append(support.tobytes())
    for group in by_shape.values():  # no two linears, in any layers, share a support
      assert len(set(group)) == len(group)
    nnx.update(model, optax.apply_updates(params, grads))  # a training step
    for old, new in zip(before, supports(model)):
      np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize(
    "kind,scan_layers", [("lowrank", False), ("lora", True), ("sltrain", True)]
)
def test_a_dense_model_loaded_from_the_export_computes_the_same_function(kind, scan_layers):
  model = Llama(tiny(kind, scan_layers=scan_layers), rngs=nnx.Rngs(0))
  perturb(model.layers, seed=3, scale=0.1)  # give b (zero at init) a value
  tensors, _ = to_hf_llama(model)
  dense = from_hf_llama(tensors, LlamaConfig.preset("nano", **TINY))
  ids = jax.random.randint(jax.random.key(1), (2, 8), 0, 32)
  forward = nnx.jit(lambda module: module(ids))
  chex.assert_trees_all_close(forward(dense), forward(model), rtol=1e-4, atol=1e-4)


def test_relora_merge_keeps_the_function_and_restarts_the_adapter():
  module = perturb(layer("lora", 12, 10), scale=0.1)
  x = jax.random.normal(jax.random.key(6), (4, 12))
  before, kernel, old_a = module(x), module.dense_kernel(), np.asarray(module.a[...])
  module.merge_and_reinit(jax.random.key(7))
  chex.assert_trees_all_close(module(x), before, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(module.base[...], kernel, rtol=1e-6)
  assert not np.any(module.b[...])
  assert not np.allclose(module.a[...], old_a)
  assert np.abs(module.a[...]).max() <= 1 / math.sqrt(12)


def test_lora_zero_a_starts_both_factors_at_zero_until_a_merge():
  module = layer("lora", zero_a=True)
  assert not np.any(module.a[...]) and not np.any(module.b[...])
  module.merge_and_reinit(jax.random.key(7))  # the first merge draws a (Guitaricet/relora)
  assert np.all(np.abs(module.a[...]) > 0)
  with pytest.raises(ValueError, match="zero_a=True applies to linear kind 'lora', not 'lowrank'"):
    LinearConfig(kind="lowrank", rank=2, zero_a=True)


def test_relora_merges_every_adapter_of_a_stacked_model():
  model = Llama(tiny("lora", scan_layers=True), rngs=nnx.Rngs(0))
  perturb(model.layers, seed=4, scale=0.1)
  ids = jax.random.randint(jax.random.key(1), (2, 8), 0, 32)
  forward = nnx.jit(lambda module: module(ids))
  before = forward(model)
  merge_lora_adapters(model, jax.random.key(2))
  chex.assert_trees_all_close(forward(model), before, rtol=1e-4, atol=1e-5)
  b_leaves = [
      v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param)) if p[-1] == "b"
  ]
  assert len(b_leaves) == 7 and not any(np.any(b) for b in b_leaves)
  a = model.layers.mlp.up_proj.a[...]
  assert not np.allclose(a[0], a[1])  # each layer gets its own new adapter
