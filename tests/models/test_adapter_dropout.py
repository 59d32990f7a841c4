"""LoRA's adapter input dropout (``LinearConfig.dropout``), as Guitaricet/relora@176f376's
``ReLoRaLinear.forward`` (``relora.py``): ``x W0 + scale * lora_B(lora_A(dropout(x)))``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linear_layer import linear_layer
from reference_packages import require

from lowrank_jax.models import Llama, LlamaConfig, LinearConfig
from lowrank_jax.models.dropout import dropout
from lowrank_jax.models.llama import MLP
from lowrank_jax.models.linear.lora import LoRALinear

TINY = dict(
    num_layers=2, vocab_size=32, hidden_size=16, intermediate_size=24, num_heads=2, max_seq_len=16
)


def lora_layer(dropout, in_features=12, out_features=10):
  config = LinearConfig(kind="lora", rank=3, alpha=6.0, dropout=dropout)
  layer = linear_layer(config, in_features, out_features)
  layer.b[...] = jax.random.normal(jax.random.key(1), layer.b[...].shape)  # b = 0 at init
  return layer


def with_trained_adapters(model):
  """Every ``b`` (zero at init, so the adapters would compute nothing) drawn at random."""
  layers = [node for _, node in nnx.iter_graph(model) if isinstance(node, LoRALinear)]
  for index, layer in enumerate(layers):
    layer.b[...] = 0.5 * jax.random.normal(jax.random.key(index), layer.b[...].shape)
  return model


def tiny_lora(dropout, scan_layers=True):
  linear = LinearConfig(kind="lora", rank=4, alpha=8.0, dropout=dropout)
  config = LlamaConfig.preset("nano", **TINY, linear=linear, scan_layers=scan_layers)
  return with_trained_adapters(Llama(config, rngs=nnx.Rngs(0)))


IDS = jax.random.randint(jax.random.key(7), (2, 9), 0, 32)


def test_lora_dropout_drops_only_the_adapter_input():
  """The mask is Bernoulli(1 - p) drawn from the key alone, the kept entries scaled by
  1 / (1 - p) (torch's ``nn.Dropout``); ``W0``'s path sees ``x`` whole."""
  p, key = 0.5, jax.random.key(3)
  layer = lora_layer(p)
  x = jax.random.normal(jax.random.key(2), (64, 12))
  keep = jax.random.bernoulli(key, 1 - p, x.shape)
  dropped = np.where(keep, np.asarray(x) * np.float32(1 / (1 - p)), 0.0)
  expected = x @ layer.base[...] + layer.scale * (dropped @ layer.a[...]) @ layer.b[...]
  np.testing.assert_allclose(layer(x, dropout_key=key), expected, rtol=1e-5, atol=1e-6)
  assert 0.4 < 1 - keep.mean() < 0.6
  layer.b[...] = jnp.zeros_like(layer.b[...])  # no adapter: what is left is W0's path, whole
  np.testing.assert_array_equal(layer(x, dropout_key=key), x @ layer.base[...])


def test_kept_entries_are_torch_dropouts_to_the_bit():
  """``torch.nn.functional.dropout`` (what relora.py's ``nn.Dropout`` runs) keeps ``x`` times
  its float32 ``1 / (1 - p)``; its masks come from torch's generator, so only where both
  keep an entry can the values be compared, and the dropped fractions agree."""
  torch = require("torch")
  x, p = np.random.default_rng(0).standard_normal(20000).astype(np.float32), 0.1
  theirs = torch.nn.functional.dropout(torch.from_numpy(x), p, training=True).numpy()
  ours = np.asarray(dropout(jnp.asarray(x), p, jax.random.key(0)))
  both = (theirs != 0) & (ours != 0)
  np.testing.assert_array_equal(ours[both], theirs[both])
  assert abs((ours == 0).mean() - (theirs == 0).mean()) < 0.01


def test_without_a_key_or_at_rate_zero_the_forward_is_the_undropped_one_bitwise():
  """Evaluation passes no key; ``dropout: 0`` ignores training's: both are the forward of a
  LoRA without the option, to the bit."""
  x = jax.random.normal(jax.random.key(2), (5, 12))
  undropped = lora_layer(0.0)(x)
  np.testing.assert_array_equal(lora_layer(0.0)(x, dropout_key=jax.random.key(3)), undropped)
  np.testing.assert_array_equal(lora_layer(0.3)(x), undropped)
  assert not np.allclose(lora_layer(0.3)(x, dropout_key=jax.random.key(3)), undropped)
  model = tiny_lora(0.0)
  np.testing.assert_array_equal(model(IDS, dropout_key=jax.random.key(4)), model(IDS))


def test_each_linear_of_a_block_draws_its_own_mask():
  """The ``i``-th target linear of a block (q, k, v, o, gate, up, down) drops with
  ``fold_in(key, i)``: the MLP's gate, up and down with 4, 5, 6."""
  config = LlamaConfig.preset("nano", **TINY, linear=LinearConfig(kind="lora", rank=4, dropout=0.5))
  mlp = with_trained_adapters(MLP(config, rngs=nnx.Rngs(0)))
  x, key = jax.random.normal(jax.random.key(5), (3, config.hidden_size)), jax.random.key(6)
  project = lambda linear, h, i: linear(h, dropout_key=jax.random.fold_in(key, i))
  expected = project(
      mlp.down_proj, jax.nn.silu(project(mlp.gate_proj, x, 4)) * project(mlp.up_proj, x, 5), 6
  )
  np.testing.assert_array_equal(mlp(x, key), expected)
  same_mask = lambda linear, h, i: linear(h, dropout_key=key)
  shared = same_mask(
      mlp.down_proj, jax.nn.silu(same_mask(mlp.gate_proj, x, 4)) * same_mask(mlp.up_proj, x, 5), 6
  )
  assert not np.allclose(mlp(x, key), shared)


def test_scanned_and_listed_layers_draw_the_same_masks_and_each_layer_its_own():
  """Block ``l`` drops with ``fold_in(key, l)`` whether the blocks are scanned or a list."""
  key = jax.random.key(8)
  scanned, listed = tiny_lora(0.1, scan_layers=True), tiny_lora(0.1, scan_layers=False)
  blocks = [nnx.state(block) for block in listed.layers]  # W0 too, not only the parameters
  nnx.update(scanned.layers, jax.tree.map(lambda *xs: jnp.stack(xs), *blocks))
  for name in ("embed_tokens", "lm_head"):
    getattr(scanned, name)[...] = getattr(listed, name)[...]
  np.testing.assert_allclose(listed(IDS), scanned(IDS), rtol=1e-5, atol=1e-6)
  trained = scanned(IDS, dropout_key=key)
  np.testing.assert_allclose(listed(IDS, dropout_key=key), trained, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      blocks_by_hand(listed, lambda layer: jax.random.fold_in(key, layer)),
      trained,
      rtol=1e-5,
      atol=1e-6,
  )
  assert not np.allclose(blocks_by_hand(listed, lambda layer: key), trained, atol=1e-4)
  assert not np.allclose(trained, scanned(IDS), atol=1e-4)


def blocks_by_hand(model, layer_key):
  """The forward of a listed model, block ``l`` given the dropout key ``layer_key(l)``."""
  positions = jnp.broadcast_to(jnp.arange(IDS.shape[-1]), IDS.shape)
  x = model.embed_tokens[...][IDS]
  for layer, block in enumerate(model.layers):
    x = block(x, positions, layer_key(layer))
  return model.norm(x) @ model.lm_head[...]


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(kind="lora", rank=2, dropout=1.0), "dropout=1.0 must be a number in [0, 1)"),
        (dict(kind="lora", rank=2, dropout=-0.1), "dropout=-0.1 must be a number in [0, 1)"),
        (dict(kind="lora", rank=2, dropout="0.1"), "dropout='0.1' must be a number in [0, 1)"),
        (dict(kind="lora", rank=2, dropout=True), "dropout=True must be a number in [0, 1)"),
        (
            dict(kind="lowrank", rank=2, dropout=0.1),
            "dropout=0.1 applies to linear kind 'lora', not 'lowrank'",
        ),
    ],
)
def test_bad_dropouts_are_one_line_errors(options, message):
  with pytest.raises(ValueError) as error:
    LinearConfig(**options)
  assert str(error.value) == message
