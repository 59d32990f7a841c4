"""Weights both ways between our LLaMA and HF transformers' ``LlamaForCausalLM``.

HF stores each linear as ``weight`` of shape ``(out, in)`` under names such as
``model.layers.3.self_attn.q_proj.weight``; we store the ``(in, out)`` kernel under the
same module path (our modules are named after HF's), with the blocks either in a list or
stacked on a leading axis. Both use RoPE's rotate-half convention, so q and k need no
permutation. The lm_head is untied.

>>> from flax import nnx
>>> from lowrank_jax.models import Llama, LlamaConfig
>>> config = LlamaConfig.preset("nano", num_layers=1, vocab_size=32)
>>> tensors, hf_config = to_hf_llama(Llama(config, rngs=nnx.Rngs(0)))
>>> tensors["model.layers.0.mlp.down_proj.weight"].shape, hf_config["intermediate_size"]
((128, 352), 352)
>>> restored = from_hf_llama(tensors, config)
>>> bool((restored.lm_head[...] == tensors["lm_head.weight"].T).all())
True

An HF config (a ``transformers.LlamaConfig`` or its ``config.json`` as a dict) converts to
ours, refusing what our LLaMA cannot represent:

>>> llama_config_from_hf(hf_config) == config
True
>>> llama_config_from_hf({**hf_config, "num_key_value_heads": 2})
Traceback (most recent call last):
...
ValueError: HF config num_key_value_heads=2 is not supported: our LLaMA has num_key_value_heads = num_attention_heads (4; no grouped-query attention).
"""

from __future__ import annotations

import json
import os
from typing import Any
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx

from lowrank_jax.models.config import LlamaConfig
from lowrank_jax.models.llama import Llama, RMSNorm
from lowrank_jax.models.params import abstract_model

Path = tuple[Any, ...]


def _hf_key(module_path: Path) -> str:
  """HF tensor name of the module at ``module_path`` (layer index included)."""
  name = ".".join(str(part) for part in module_path) + ".weight"
  return name if module_path == ("lm_head",) else "model." + name


def _is_stacked(module_path: Path, config: LlamaConfig) -> bool:
  return config.scan_layers and module_path[0] == "layers"


def _layer_paths(module_path: Path, config: LlamaConfig) -> list[Path]:
  """The per-block paths of a stacked ``layers`` entry, in stacking order; else the path."""
  if _is_stacked(module_path, config):
    return [("layers", index) + module_path[1:] for index in range(config.num_layers)]
  return [module_path]


def hf_config_dict(config: LlamaConfig) -> dict[str, Any]:
  """The ``config.json`` of the equivalent ``LlamaForCausalLM``."""
  return {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "intermediate_size": config.intermediate_size,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_heads,
      "num_hidden_layers": config.num_layers,
      "head_dim": config.head_dim,
      "max_position_embeddings": config.max_seq_len,
      "rms_norm_eps": config.rms_norm_eps,
      "rope_theta": config.rope_theta,
      "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
      "hidden_act": "silu",
      "attention_bias": False,
      "mlp_bias": False,
      "tie_word_embeddings": False,
      "initializer_range": config.init_std,
      "pad_token_id": 0,
      "eos_token_id": 1,
      "torch_dtype": "float32",
  }


def _hf_rope_theta(values: Mapping[str, Any]) -> float:
  """The RoPE base of an HF config; refuses RoPE scaling (ours is plain RoPE)."""
  parameters = values.get("rope_parameters") or values.get("rope_scaling") or {}
  rope_type = parameters.get("rope_type", parameters.get("type", "default"))
  if rope_type != "default":
    raise ValueError(
        f"HF config rope_type={rope_type!r} is not supported: our LLaMA has plain RoPE ('default')"
    )
  return float(parameters.get("rope_theta", values.get("rope_theta", 10000.0)))


def llama_config_from_hf(hf_config, **overrides: Any) -> LlamaConfig:
  """Our :class:`LlamaConfig` of the architecture an HF ``LlamaConfig`` describes.

  The inverse of :func:`hf_config_dict`: ``from_hf_llama(model, llama_config_from_hf(model.config))``
  imports a ``LlamaForCausalLM`` without writing our config by hand.

  Args:
    hf_config: a ``transformers.LlamaConfig`` (anything with ``to_dict()``) or the mapping
      of a ``config.json``.
    **overrides: fields of ours that HF does not describe (``scan_layers``, ``remat``,
      ``dtype``, ``linear``) or that should differ.

  Raises:
    ValueError: a feature our LLaMA lacks (grouped-query attention, tied embeddings,
      biases, another activation or head size, scaled RoPE), naming the HF key.
  """
  values = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
  heads, hidden = values["num_attention_heads"], values["hidden_size"]
  required = {
      "model_type": ("llama", "'llama'"),
      "num_key_value_heads": (heads, f"num_attention_heads ({heads}; no grouped-query attention)"),
      "head_dim": (hidden // heads, f"hidden_size // num_attention_heads ({hidden // heads})"),
      "hidden_act": ("silu", "'silu' (SwiGLU)"),
      "tie_word_embeddings": (False, "False (our lm_head is untied)"),
      "attention_bias": (False, "False (no biases)"),
      "mlp_bias": (False, "False (no biases)"),
  }
  for key, (expected, meaning) in required.items():
    value = values.get(key)
    if value is not None and value != expected:
      raise ValueError(
          f"HF config {key}={value!r} is not supported: our LLaMA has {key} = {meaning}."
      )
  return LlamaConfig(
      **{
          "vocab_size": values["vocab_size"],
          "hidden_size": hidden,
          "intermediate_size": values["intermediate_size"],
          "num_heads": heads,
          "num_layers": values["num_hidden_layers"],
          "max_seq_len": values["max_position_embeddings"],
          "rms_norm_eps": float(values["rms_norm_eps"]),
          "rope_theta": _hf_rope_theta(values),
          "init_std": float(values.get("initializer_range", LlamaConfig.init_std)),
          **overrides,
      }
  )


def to_hf_llama(model: Llama) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Returns ``(state_dict, hf_config_dict)`` in ``LlamaForCausalLM``'s layout (float32 numpy).

  Linears of any parameterization are exported as their effective dense weight.
  """
  config = model.config
  # (module path, value, whether it is an (in, out) kernel that HF stores transposed)
  entries: list[tuple[Path, Any, bool]] = [
      (("embed_tokens",), model.embed_tokens[...], False),
      (("lm_head",), model.lm_head[...], True),
  ]
  for path, node in nnx.iter_graph(model):
    if isinstance(node, RMSNorm):
      entries.append((tuple(path), node.weight[...], False))
    elif callable(getattr(node, "dense_kernel", None)):
      entries.append((tuple(path), node.dense_kernel(), True))
  tensors = {}
  for path, value, is_kernel in entries:
    value = np.asarray(value, np.float32)
    values = value if _is_stacked(path, config) else [value]
    for layer_path, layer_value in zip(_layer_paths(path, config), values):
      tensors[_hf_key(layer_path)] = (
          np.ascontiguousarray(layer_value.T) if is_kernel else layer_value
      )
  return tensors, hf_config_dict(config)


def _as_numpy(value) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor, possibly bf16
    return value.detach().float().cpu().numpy()
  return np.asarray(value, np.float32)


def from_hf_llama(state_dict_or_model, config: LlamaConfig | None = None) -> Llama:
  """Builds our model from an HF ``LlamaForCausalLM`` or its state dict.

  Args:
    state_dict_or_model: a ``LlamaForCausalLM`` (anything with ``state_dict()``) or a mapping
      from HF tensor names to torch tensors or arrays.
    config: our config of the same architecture; its dtype policy sets the parameter dtype.
      Default: converted from the model's ``config`` (:func:`llama_config_from_hf`), which a
      bare state dict lacks.

  Raises:
    ValueError: a tensor is missing, unexpected, or of the wrong shape, the config's
      linears are not dense, or a state dict comes without a config.
  """
  if config is None:
    if not hasattr(state_dict_or_model, "config"):
      raise ValueError(
          "from_hf_llama needs config= for a bare state dict: "
          "llama_config_from_hf(transformers.LlamaConfig.from_pretrained(...)) gives it"
      )
    config = llama_config_from_hf(state_dict_or_model.config)
  if config.linear.kind != "dense":
    raise ValueError(
        f"from_hf_llama loads dense weights; config.linear.kind="
        f"{config.linear.kind!r} is not 'dense'"
    )
  source: Mapping[str, Any] = (
      state_dict_or_model.state_dict()
      if hasattr(state_dict_or_model, "state_dict")
      else state_dict_or_model
  )
  source = {k: v for k, v in source.items() if not k.endswith("rotary_emb.inv_freq")}
  graphdef, params, rest = nnx.split(abstract_model(config), nnx.Param, ...)
  used = set()

  def load(param_path: Path, abstract: jax.ShapeDtypeStruct):
    module_path = param_path[:-1] if param_path[-1] in ("kernel", "weight") else param_path
    is_kernel = param_path[-1] == "kernel" or param_path == ("lm_head",)
    per_layer = []
    for layer_path in _layer_paths(module_path, config):
      key = _hf_key(layer_path)
      if key not in source:
        raise ValueError(f"HF state dict has no tensor {key!r} needed for {param_path}")
      used.add(key)
      value = _as_numpy(source[key])
      per_layer.append(value.T if is_kernel else value)
    value = np.stack(per_layer) if _is_stacked(module_path, config) else per_layer[0]
    if value.shape != abstract.shape:
      raise ValueError(
          f"tensor for {param_path} has shape {value.shape}; the config expects "
          f"{abstract.shape}"
      )
    return jax.numpy.asarray(value, abstract.dtype)

  flat = nnx.to_flat_state(params)
  loaded = nnx.from_flat_state(
      [(path, var.replace(load(path, var.get_value()))) for path, var in flat]
  )
  unexpected = sorted(set(source) - used)
  if unexpected:
    raise ValueError(f"HF state dict has tensors the config does not use: {unexpected[:5]}")
  return nnx.merge(graphdef, loaded, rest)


def _readable_as_umask_allows(path: str) -> None:
  """Gives ``path`` the permissions of a file made by ``open`` (``0o666`` less the umask):
  safetensors writes its file owner-only (``0o600``), which others sharing a model can't read."""
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, 0o666 & ~umask)


def export_hf(
    model: Llama, out_dir: str | os.PathLike, *, pad_id: int = 0, eos_id: int = 1
) -> None:
  """Writes ``config.json`` and ``model.safetensors`` loadable by ``LlamaForCausalLM.from_pretrained``.

  Refuses to write into an existing non-empty directory, so nothing saved is overwritten.
  Files get the usual permissions (``0o666`` less the umask).

  Args:
    model: the model to export (any parameterization with dense kernels).
    out_dir: a new or empty directory.
    pad_id, eos_id: the tokenizer's padding and end-of-document ids, recorded in
      ``config.json`` (``generate`` stops at ``eos_id``); default t5-base's.
  """
  try:
    from safetensors.numpy import save_file
  except ImportError as error:
    raise ImportError("export_hf needs safetensors: pip install 'lowrank_jax[hf]'") from error
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    raise ValueError(f"export directory {os.fspath(out_dir)!r} is not empty; choose a new one")
  tensors, config = to_hf_llama(model)
  os.makedirs(out_dir, exist_ok=True)
  weights = os.path.join(out_dir, "model.safetensors")
  save_file(tensors, weights, metadata={"format": "pt"})
  _readable_as_umask_allows(weights)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump({**config, "pad_token_id": pad_id, "eos_token_id": eos_id}, f, indent=2)
