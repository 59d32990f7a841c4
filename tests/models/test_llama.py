"""The LLaMA itself: shapes, causality, parameter counts, dtype policy, jit, layer layouts."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax.models import (
    DtypePolicy,
    Llama,
    LlamaConfig,
    abstract_model,
    count_params,
    next_token_loss,
)

TINY = dict(
    num_layers=2, vocab_size=97, hidden_size=32, intermediate_size=48, num_heads=4, max_seq_len=64
)


def tiny(**overrides):
  return LlamaConfig.preset("nano", **{**TINY, **overrides})


@pytest.mark.parametrize("scan_layers", [False, True])
def test_output_shape_and_dtype(scan_layers):
  model = Llama(tiny(scan_layers=scan_layers), rngs=nnx.Rngs(0))
  logits = model(jnp.ones((3, 11), jnp.int32))
  chex.assert_shape(logits, (3, 11, 97))
  chex.assert_type(logits, jnp.float32)
  chex.assert_tree_all_finite(logits)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_changing_a_future_token_never_changes_an_earlier_logit(scan_layers):
  model = Llama(tiny(scan_layers=scan_layers), rngs=nnx.Rngs(1))
  ids = jax.random.randint(jax.random.key(0), (2, 16), 0, 97)
  base = model(ids)
  for position in (0, 7, 15):
    changed = ids.at[:, position].set((ids[:, position] + 1) % 97)
    out = model(changed)
    np.testing.assert_array_equal(out[:, :position], base[:, :position])
    assert not np.allclose(out[:, position], base[:, position])


def test_stacked_and_looped_layers_compute_the_same_function():
  looped = Llama(tiny(), rngs=nnx.Rngs(2))
  stacked = Llama(tiny(scan_layers=True), rngs=nnx.Rngs(3))
  # Copy the looped blocks' parameters into the stacked layout.
  blocks = [nnx.state(block, nnx.Param) for block in looped.layers]
  nnx.update(stacked.layers, jax.tree.map(lambda *xs: jnp.stack(xs), *blocks))
  for name in ("embed_tokens", "lm_head"):
    getattr(stacked, name)[...] = getattr(looped, name)[...]
  ids = jax.random.randint(jax.random.key(1), (2, 9), 0, 97)
  chex.assert_trees_all_close(stacked(ids), looped(ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "name,expected", [("60m", 58.1e6), ("130m", 134.1e6), ("350m", 368.0e6), ("1b", 1339e6)]
)
def test_parameter_counts_match_the_paper(name, expected):
  assert abs(count_params(LlamaConfig.preset(name)) - expected) / expected < 0.01


def test_7b_abstract_init_allocates_nothing():
  model = abstract_model(LlamaConfig.preset("7b", scan_layers=True))
  leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)
  assert abs(sum(leaf.size for leaf in leaves) - 6.74e9) / 6.74e9 < 0.01


def test_every_parameter_has_logical_axes_and_stacked_ones_lead_with_layers():
  for scan in (False, True):
    state = nnx.state(abstract_model(tiny(scan_layers=scan)), nnx.Param)
    specs = nnx.get_partition_spec(state)
    for path, spec in nnx.to_flat_state(specs):
      names = tuple(spec.get_value())
      assert names and all(isinstance(n, str) for n in names), path
      if scan and path[0] == "layers":
        assert names[0] == "layers", path
  shapes = {p: v.get_value().shape for p, v in nnx.to_flat_state(state)}
  assert shapes[("layers", "mlp", "gate_proj", "kernel")] == (2, 32, 48)


def test_bf16_policy_stores_and_computes_in_bf16():
  model = Llama(tiny(dtype=DtypePolicy.named("bf16")), rngs=nnx.Rngs(0))
  dtypes = {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))}
  assert dtypes == {jnp.dtype(jnp.bfloat16)}
  assert model(jnp.ones((1, 4), jnp.int32)).dtype == jnp.float32


def test_jitted_forward_and_loss_match_eager():
  model = Llama(tiny(), rngs=nnx.Rngs(0))
  ids = jax.random.randint(jax.random.key(2), (2, 10), 0, 97)
  mask = jnp.ones_like(ids).at[1, 6:].set(0)

  @nnx.jit
  def loss_fn(model, ids, mask):
    return next_token_loss(model(ids), ids, mask)

  loss, count = loss_fn(model, ids, mask)
  eager_loss, _ = next_token_loss(model(ids), ids, mask)
  assert int(count) == 9 + 5
  np.testing.assert_allclose(loss, eager_loss, rtol=1e-5)
  # An untrained model predicts roughly uniformly.
  assert abs(float(loss) - np.log(97)) < 0.5


def test_loss_ignores_padded_targets():
  logits = jax.random.normal(jax.random.key(0), (1, 5, 7))
  ids = jnp.array([[1, 2, 3, 0, 0]])
  mask = jnp.array([[1, 1, 1, 0, 0]])
  loss, count = next_token_loss(logits, ids, mask)
  logp = jax.nn.log_softmax(logits[0])
  expected = -(logp[0, 2] + logp[1, 3]) / 2
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert int(count) == 2
  changed = logits.at[0, 3:].set(100.0)  # predictions of padded targets do not count
  np.testing.assert_allclose(next_token_loss(changed, ids, mask)[0], loss, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_heads=5), "not divisible"),
        (dict(hidden_size=0), "hidden_size=0"),
        (dict(rms_norm_eps=0.0), "rms_norm_eps"),
    ],
)
def test_bad_config_is_rejected_with_the_value(kwargs, match):
  with pytest.raises(ValueError, match=match):
    tiny(**kwargs)


def test_unknown_preset_and_dtype_are_rejected():
  with pytest.raises(ValueError, match="'3b'"):
    LlamaConfig.preset("3b")
  with pytest.raises(ValueError, match="'fp8'"):
    DtypePolicy.named("fp8")
  with pytest.raises(ValueError, match="param_dtype='int8'"):
    DtypePolicy("int8")


def test_too_long_sequence_is_rejected():
  model = Llama(tiny(max_seq_len=8), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="sequence length 9"):
    model(jnp.zeros((1, 9), jnp.int32))
