"""Starting every linear kind from pretrained dense weights (``load_dense``), and reading an
HF directory: full-rank factorizations reproduce HF's logits, lower ranks are the truncated
SVD, LoRA keeps the weights as ``W0``, CoLA is exact to first order only."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax.models import LinearConfig
from lowrank_jax.models.hf import from_hf_llama, llama_config_from_hf
from lowrank_jax.models.hf_checkpoint import read_hf_config, read_hf_tensors
from linear_layer import linear_layer
from reference_packages import require

torch = require("torch")
transformers = require("transformers")

# every target linear is at least 32 x 32, so rank 32 is full rank for each of them
SQUARE = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_heads=2, num_hidden_layers=2)


def reference_model(kv_heads=2, tied=False):
  torch.manual_seed(0)
  sizes = {k: v for k, v in SQUARE.items() if k != "num_heads"}
  config = transformers.LlamaConfig(
      **sizes,
      num_attention_heads=SQUARE["num_heads"],
      num_key_value_heads=kv_heads,
      max_position_embeddings=16,
      rms_norm_eps=1e-6,
      tie_word_embeddings=tied,
      attn_implementation="eager",
  )
  return transformers.LlamaForCausalLM(config).eval()


IDS = np.random.default_rng(0).integers(0, 61, size=(2, 9))


def hf_logits(model):
  with torch.no_grad():
    return model(input_ids=torch.tensor(IDS)).logits.numpy()


def our_logits(model):
  return np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(IDS)))


@pytest.mark.parametrize("kind", ["dense", "lowrank", "sltrain", "lora"])
@pytest.mark.parametrize("scan_layers", [False, True])
def test_a_full_rank_start_reproduces_the_checkpoints_logits(kind, scan_layers):
  reference = reference_model()
  linear = LinearConfig(kind, rank=None if kind == "dense" else 32, alpha=8.0)
  config = llama_config_from_hf(reference.config, linear=linear, scan_layers=scan_layers)
  ours = from_hf_llama(reference, config)
  np.testing.assert_allclose(our_logits(ours), hf_logits(reference), atol=2e-4, rtol=1e-4)


def _layer(kind, rank, in_features=24, out_features=40, **options):
  return linear_layer(LinearConfig(kind, rank=rank, **options), in_features, out_features, seed=1)


KERNEL = np.random.default_rng(1).normal(size=(24, 40)).astype(np.float32)


def test_a_low_rank_start_is_the_truncated_svd():
  layer = _layer("lowrank", 5, alpha=3.0)
  layer.load_dense(jnp.asarray(KERNEL))
  singular = np.linalg.svd(KERNEL, compute_uv=False)
  error = np.linalg.norm(KERNEL - np.asarray(layer.dense_kernel()))
  assert error == pytest.approx(np.sqrt((singular[5:] ** 2).sum()), rel=1e-4)  # Eckart-Young
  # balanced factors: a and b carry the same singular values
  np.testing.assert_allclose(
      np.linalg.svd(np.asarray(layer.a[...]), compute_uv=False),
      np.linalg.svd(np.asarray(layer.b[...]), compute_uv=False),
      rtol=1e-4,
  )


def test_an_sltrain_start_puts_the_residual_on_the_support():
  layer = _layer("sltrain", 5, sparsity=0.2)
  layer.load_dense(jnp.asarray(KERNEL))
  low_rank = np.asarray(layer.low_rank_kernel())
  on_support = np.zeros(KERNEL.size, bool)
  on_support[np.asarray(layer.support[...])] = True
  on_support = on_support.reshape(KERNEL.shape)
  kernel = np.asarray(layer.dense_kernel())
  np.testing.assert_allclose(kernel[on_support], KERNEL[on_support], atol=1e-5)
  np.testing.assert_allclose(kernel[~on_support], low_rank[~on_support], atol=1e-6)
  singular = np.linalg.svd(KERNEL, compute_uv=False)
  assert np.linalg.norm(KERNEL - low_rank) == pytest.approx(
      np.sqrt((singular[5:] ** 2).sum()), rel=1e-4
  )


def test_a_lora_start_keeps_the_weights_as_w0_and_the_adapters_as_drawn():
  layer = _layer("lora", 5)
  drawn = np.asarray(layer.a[...])
  layer.load_dense(jnp.asarray(KERNEL))
  np.testing.assert_array_equal(np.asarray(layer.base[...]), KERNEL)
  np.testing.assert_array_equal(np.asarray(layer.a[...]), drawn)
  assert not np.asarray(layer.b[...]).any()


def test_a_cola_start_matches_the_kernel_to_first_order_only():
  layer = _layer("cola", 24)
  layer.load_dense(jnp.asarray(KERNEL))
  x = np.random.default_rng(2).normal(size=(8, 24)).astype(np.float32)

  def relative_error(scale):
    y = np.asarray(layer(jnp.asarray(scale * x)), np.float64)
    return np.linalg.norm(y - scale * x @ KERNEL) / np.linalg.norm(scale * x @ KERNEL)

  errors = [relative_error(scale) for scale in (1.0, 1e-2, 1e-3)]
  assert errors[0] > 0.1  # silu's curvature at ordinary activations: not the dense layer
  # the error is the second-order term: it shrinks in proportion to x (first order exact)
  assert errors[1] < errors[0] / 10 and errors[2] == pytest.approx(errors[1] / 10, rel=0.2)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_sharded_safetensors_directory_loads_as_transformers_wrote_it(tmp_path, dtype):
  reference = reference_model(kv_heads=1, tied=True).to(getattr(torch, dtype))
  reference.save_pretrained(tmp_path, max_shard_size="20KB")
  assert (tmp_path / "model.safetensors.index.json").exists()
  ours = from_hf_llama(read_hf_tensors(tmp_path), llama_config_from_hf(read_hf_config(tmp_path)))
  expected = hf_logits(reference.float())
  np.testing.assert_allclose(our_logits(ours), expected, atol=2e-4, rtol=1e-4)


def test_a_directory_without_weights_or_config_is_named(tmp_path):
  with pytest.raises(ValueError, match="has no config.json"):
    read_hf_config(tmp_path)
  with pytest.raises(ValueError, match="has neither model.safetensors nor"):
    read_hf_tensors(tmp_path)
