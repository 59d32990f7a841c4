"""Parity with HF transformers' LlamaForCausalLM: import, export and from_pretrained."""

import json
import os
import stat

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax.models import Llama, LlamaConfig
from lowrank_jax.models.hf import (
    export_hf,
    from_hf_llama,
    hf_config_dict,
    llama_config_from_hf,
    to_hf_llama,
)
from reference_packages import require

torch = require("torch")
transformers = require("transformers")

CONFIG = dict(
    vocab_size=101, hidden_size=64, intermediate_size=96, num_heads=4, num_layers=2, max_seq_len=32
)


def hf_model(seed=0, kv_heads=4, tied=False):
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(
      vocab_size=101,
      hidden_size=64,
      intermediate_size=96,
      num_attention_heads=4,
      num_key_value_heads=kv_heads,
      num_hidden_layers=2,
      max_position_embeddings=32,
      rms_norm_eps=1e-6,
      rope_theta=10000.0,
      tie_word_embeddings=tied,
      attn_implementation="eager",
  )
  model = transformers.LlamaForCausalLM(config).eval()
  with torch.no_grad():  # HF initialises norms to 1; perturb them so their mapping is tested
    for name, p in model.named_parameters():
      if "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  return model


def right_padded_batch():
  rng = np.random.default_rng(0)
  ids = rng.integers(2, 101, size=(3, 12))
  lengths = np.array([12, 7, 3])
  mask = (np.arange(12)[None] < lengths[:, None]).astype(np.int64)
  return ids * mask, mask


def hf_logits(model, ids, mask):
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()


def assert_logits_match(ours, theirs, mask):
  real = mask.astype(bool)  # padded positions are not compared: HF masks them differently
  np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_imported_weights_give_hf_logits_on_a_right_padded_batch(scan_layers):
  reference = hf_model()
  ids, mask = right_padded_batch()
  ours = from_hf_llama(reference, LlamaConfig(**CONFIG, scan_layers=scan_layers))
  logits = np.asarray(nnx.jit(lambda m, x: m(x))(ours, jnp.asarray(ids)))
  assert_logits_match(logits, hf_logits(reference, ids, mask), mask)


GQA_AND_TIED = [(1, False), (2, False), (4, True), (2, True)]  # (key/value heads, tied)


@pytest.mark.parametrize("kv_heads, tied", GQA_AND_TIED)
def test_grouped_query_attention_and_tied_embeddings_give_hf_logits(kv_heads, tied):
  reference = hf_model(kv_heads=kv_heads, tied=tied)
  ids, mask = right_padded_batch()
  ours = from_hf_llama(reference)
  assert (ours.config.kv_heads, ours.config.tie_word_embeddings) == (kv_heads, tied)
  assert hasattr(ours, "lm_head") is not tied
  logits = np.asarray(nnx.jit(lambda m, x: m(x))(ours, jnp.asarray(ids)))
  assert_logits_match(logits, hf_logits(reference, ids, mask), mask)


@pytest.mark.parametrize("kv_heads, tied", GQA_AND_TIED)
def test_grouped_query_and_tied_exports_load_in_transformers(tmp_path, kv_heads, tied):
  config = LlamaConfig(**CONFIG, num_kv_heads=kv_heads, tie_word_embeddings=tied, scan_layers=True)
  ours = Llama(config, rngs=nnx.Rngs(3))
  export_hf(ours, tmp_path / "export")
  loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "export").eval()
  assert loaded.config.num_key_value_heads == kv_heads
  assert loaded.config.tie_word_embeddings == tied
  ids, mask = right_padded_batch()
  assert_logits_match(np.asarray(ours(jnp.asarray(ids))), hf_logits(loaded, ids, mask), mask)


def test_export_round_trips_through_from_pretrained(tmp_path):
  ours = Llama(LlamaConfig(**CONFIG, scan_layers=True), rngs=nnx.Rngs(4))
  export_hf(ours, tmp_path / "export")
  loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "export").eval()
  ids, mask = right_padded_batch()
  assert_logits_match(np.asarray(ours(jnp.asarray(ids))), hf_logits(loaded, ids, mask), mask)
  assert json.loads((tmp_path / "export" / "config.json").read_text())["num_hidden_layers"] == 2


def test_state_dict_round_trip_is_exact():
  reference = hf_model(seed=1)
  ours = from_hf_llama(reference.state_dict(), LlamaConfig(**CONFIG))
  tensors, _ = to_hf_llama(ours)
  expected = {k: v.numpy() for k, v in reference.state_dict().items()}
  assert tensors.keys() == expected.keys()
  for key, value in expected.items():
    np.testing.assert_array_equal(tensors[key], value, err_msg=key)


def test_export_records_the_tokenizers_special_ids(tmp_path):
  export_hf(Llama(LlamaConfig(**CONFIG), rngs=nnx.Rngs(0)), tmp_path, pad_id=3, eos_id=2)
  loaded = transformers.AutoConfig.from_pretrained(tmp_path)
  assert (loaded.pad_token_id, loaded.eos_token_id) == (3, 2)


def test_export_never_overwrites(tmp_path):
  (tmp_path / "keep.txt").write_text("precious")
  with pytest.raises(ValueError, match="not empty"):
    export_hf(Llama(LlamaConfig(**CONFIG), rngs=nnx.Rngs(0)), tmp_path)
  assert (tmp_path / "keep.txt").read_text() == "precious"


def test_import_names_missing_and_misshapen_tensors():
  state = {k: v.clone() for k, v in hf_model().state_dict().items()}
  config = LlamaConfig(**CONFIG)
  missing = dict(state)
  del missing["model.layers.1.mlp.up_proj.weight"]
  with pytest.raises(ValueError, match="model.layers.1.mlp.up_proj.weight"):
    from_hf_llama(missing, config)
  with pytest.raises(ValueError, match=r"embed_tokens.*shape \(101, 64\).*expects \(97, 64\)"):
    from_hf_llama(state, LlamaConfig(**{**CONFIG, "vocab_size": 97}))


def test_an_hf_config_converts_to_ours_and_back():
  reference = hf_model()
  ours = llama_config_from_hf(reference.config, scan_layers=True)
  assert ours == LlamaConfig(**CONFIG, scan_layers=True)
  again = llama_config_from_hf(transformers.LlamaConfig(**hf_config_dict(ours)), scan_layers=True)
  assert again == ours
  wide = LlamaConfig(**CONFIG, rope_theta=5e5, rms_norm_eps=1e-5, init_std=0.01)
  assert llama_config_from_hf(json.loads(json.dumps(hf_config_dict(wide)))) == wide


def test_a_model_imports_without_a_hand_written_config():
  reference = hf_model()
  ids, mask = right_padded_batch()
  logits = np.asarray(from_hf_llama(reference)(jnp.asarray(ids)))
  assert_logits_match(logits, hf_logits(reference, ids, mask), mask)
  with pytest.raises(ValueError, match="needs config= for a bare state dict"):
    from_hf_llama(reference.state_dict())


@pytest.mark.parametrize(
    "change, key",
    [
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"attention_bias": True}, "attention_bias=True"),
        ({"head_dim": 32}, "head_dim=32"),
        ({"rope_parameters": {"rope_type": "linear", "factor": 2.0}}, "rope_type='linear'"),
    ],
)
def test_an_hf_config_our_llama_cannot_represent_is_refused_by_key(change, key):
  values = {**hf_config_dict(LlamaConfig(**CONFIG)), **change}
  with pytest.raises(ValueError, match=f"HF config {key} is not supported"):
    llama_config_from_hf(values)


def test_exported_files_are_readable_as_the_umask_allows(tmp_path):
  previous = os.umask(0o022)
  try:
    export_hf(Llama(LlamaConfig(**CONFIG), rngs=nnx.Rngs(0)), tmp_path / "export")
  finally:
    os.umask(previous)
  for name in ("model.safetensors", "config.json"):
    assert stat.S_IMODE(os.stat(tmp_path / "export" / name).st_mode) == 0o644, name
