r"""Weights both ways between our LLaMA and HF transformers' ``LlamaForCausalLM``.

HF stores each linear as ``weight`` of shape ``(out, in)`` under names such as
``model.layers.3.self_attn.q_proj.weight``; we store the ``(in, out)`` kernel under the
same module path (our modules are named after HF's), with the blocks either in a list or
stacked on a leading axis. Both use RoPE's rotate-half convention, so q and k need no
permutation. Grouped-query attention (``num_key_value_heads``) and tied embeddings
(``tie_word_embeddings``, no ``lm_head.weight`` written) map both ways.

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
>>> llama_config_from_hf({**hf_config, "num_key_value_heads": 2}).num_kv_heads
2
>>> llama_config_from_hf({**hf_config, "hidden_act": "gelu"})
Traceback (most recent call last):
...
ValueError: HF config hidden_act='gelu' is not supported: our LLaMA has hidden_act = 'silu' (SwiGLU).

Starting a run from a checkpoint (``model.init_from=DIR``): a local HF LLaMA directory
(``config.json`` and ``model.safetensors`` or sharded ``model.safetensors.index.json``, read
by :mod:`lowrank_jax.models.hf_checkpoint`; bf16 is read as float32) is loaded before step 0,
for any method (:func:`load_hf_weights`). The architecture is the checkpoint's
``config.json`` (grouped-query attention and tied embeddings included), not
``model.preset``; ``model.overrides`` may only change ``max_seq_len``, any other differing
value is a one-line error. Full rank and the projected methods load the dense weights. The
factorized methods start from the truncated SVD :math:`W \approx U_r S_r V_r^T` of each
pretrained matrix (each kind's ``load_dense``, :mod:`lowrank_jax.models.linear`):

* Low-Rank (and LoRO): :math:`a = U_r \sqrt{S_r / s}`, :math:`b = \sqrt{S_r / s}\, V_r^T`
  with :math:`s = \alpha / r`, so :math:`s\, a b` is the best rank-:math:`r` approximation,
  exact at full rank;
* SLTrain: the same low-rank part plus the residual at its fixed random support;
* LoRA and ReLoRA: the weights kept as the frozen :math:`W_0`, the adapters as LoRA draws
  them (:math:`b = 0`: the pretrained function at step 0, as ReLoRA's warm start; not
  PiSSA);
* CoLA: the SVD factors with :math:`b` doubled for silu's slope 1/2 at 0, which matches
  :math:`x W` to first order only: :math:`\mathrm{silu}(x a)\, b` cannot equal a dense
  layer, so a CoLA run starts near, not at, the checkpoint's loss.

A run directory that holds a run refuses a new ``init_from`` (its checkpoint wins).
"""

from __future__ import annotations

import json
import os
from typing import Any
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from lowrank_jax.models.config import LlamaConfig
from lowrank_jax.models.llama import Llama, RMSNorm

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
      "num_key_value_heads": config.kv_heads,
      "num_hidden_layers": config.num_layers,
      "head_dim": config.head_dim,
      "max_position_embeddings": config.max_seq_len,
      "rms_norm_eps": config.rms_norm_eps,
      "rope_theta": config.rope_theta,
      "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
      "hidden_act": "silu",
      "attention_bias": False,
      "mlp_bias": False,
      "tie_word_embeddings": config.tie_word_embeddings,
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
    ValueError: a feature our LLaMA lacks (biases, another activation or head size, scaled
      RoPE), naming the HF key.
  """
  values = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
  heads, hidden = values["num_attention_heads"], values["hidden_size"]
  kv_heads = values.get("num_key_value_heads") or heads
  required = {
      "model_type": ("llama", "'llama'"),
      "head_dim": (hidden // heads, f"hidden_size // num_attention_heads ({hidden // heads})"),
      "hidden_act": ("silu", "'silu' (SwiGLU)"),
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
          "num_kv_heads": None if kv_heads == heads else kv_heads,
          "tie_word_embeddings": bool(values.get("tie_word_embeddings", False)),
          "max_seq_len": values["max_position_embeddings"],
          "rms_norm_eps": float(values["rms_norm_eps"]),
          "rope_theta": _hf_rope_theta(values),
          "init_std": float(values.get("initializer_range", LlamaConfig.init_std)),
          **overrides,
      }
  )


def to_hf_llama(model: Llama) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Returns ``(state_dict, hf_config_dict)`` in ``LlamaForCausalLM``'s layout (float32 numpy).

  Linears of any parameterization are exported as their effective dense weight. With tied
  embeddings there is no ``lm_head.weight`` (HF ties it to the embedding on load).
  """
  config = model.config
  # (module path, value, whether it is an (in, out) kernel that HF stores transposed)
  entries: list[tuple[Path, Any, bool]] = [(("embed_tokens",), model.embed_tokens[...], False)]
  if not config.tie_word_embeddings:
    entries.append((("lm_head",), model.lm_head[...], True))
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


def as_float32_numpy(value) -> np.ndarray:
  """A torch tensor (any dtype, bf16 included) or array as a float32 numpy array."""
  if hasattr(value, "detach"):
    return value.detach().float().cpu().numpy()
  return np.asarray(value, np.float32)


def load_hf_weights(model: Llama, tensors: Mapping[str, Any]) -> None:
  """Sets every parameter of ``model`` from HF tensors, in place; traceable (``jax.jit``).

  Embedding, norms and lm_head are copied; each target linear gets its HF kernel through
  its kind's ``load_dense`` (dense copies it; the factorized kinds set their factors from
  its truncated SVD, see :mod:`lowrank_jax.models.linear`). What a kind draws at random
  (LoRA's ``a``, SLTrain's support) keeps the model's initialisation. With tied embeddings
  an ``lm_head.weight`` (HF's ``state_dict()`` lists the shared tensor twice) is ignored.

  Args:
    model: a model of the checkpoint's architecture, any linear kind.
    tensors: HF tensor names to arrays (``as_float32_numpy`` of a torch state dict).

  Raises:
    ValueError: a tensor is missing, unexpected or of the wrong shape, naming it.
  """
  config = model.config
  used = set()

  def hf_value(module_path: Path, is_kernel: bool, expected: tuple[int, ...]):
    per_layer = []
    for layer_path in _layer_paths(module_path, config):
      key = _hf_key(layer_path)
      if key not in tensors:
        raise ValueError(f"HF state dict has no tensor {key!r} needed for {module_path}")
      used.add(key)
      value = jnp.asarray(tensors[key])
      per_layer.append(value.T if is_kernel else value)
    value = jnp.stack(per_layer) if _is_stacked(module_path, config) else per_layer[0]
    if value.shape != tuple(expected):
      raise ValueError(
          f"tensor for {module_path} has shape {value.shape}; the config expects {expected}"
      )
    return value

  def copy_into(variable, module_path: Path, is_kernel: bool):
    current = variable[...]
    variable[...] = hf_value(module_path, is_kernel, current.shape).astype(current.dtype)

  copy_into(model.embed_tokens, ("embed_tokens",), False)
  if config.tie_word_embeddings:
    used.add("lm_head.weight")
  else:
    copy_into(model.lm_head, ("lm_head",), True)
  for path, node in nnx.iter_graph(model):
    if isinstance(node, RMSNorm):
      copy_into(node.weight, tuple(path), False)
    elif callable(getattr(node, "load_dense", None)):
      layers = (config.num_layers,) if _is_stacked(tuple(path), config) else ()
      node.load_dense(hf_value(tuple(path), True, layers + config.target_linears[path[-1]]))
  unexpected = sorted(set(tensors) - used)
  if unexpected:
    raise ValueError(f"HF state dict has tensors the config does not use: {unexpected[:5]}")


def from_hf_llama(
    state_dict_or_model, config: LlamaConfig | None = None, *, seed: int = 0
) -> Llama:
  """Builds our model from an HF ``LlamaForCausalLM`` or its state dict.

  Args:
    state_dict_or_model: a ``LlamaForCausalLM`` (anything with ``state_dict()``) or a mapping
      from HF tensor names to torch tensors or arrays.
    config: our config of the same architecture; its dtype policy sets the parameter dtype
      and its ``linear`` the parameterization (:func:`load_hf_weights`). Default: converted
      from the model's ``config`` (:func:`llama_config_from_hf`), which a bare state dict lacks.
    seed: draws what the linear kind initialises at random (LoRA's ``a``, SLTrain's support).

  Raises:
    ValueError: a tensor is missing, unexpected, or of the wrong shape, or a state dict
      comes without a config.
  """
  if config is None:
    if not hasattr(state_dict_or_model, "config"):
      raise ValueError(
          "from_hf_llama needs config= for a bare state dict: "
          "llama_config_from_hf(transformers.LlamaConfig.from_pretrained(...)) gives it"
      )
    config = llama_config_from_hf(state_dict_or_model.config)
  source: Mapping[str, Any] = (
      state_dict_or_model.state_dict()
      if hasattr(state_dict_or_model, "state_dict")
      else state_dict_or_model
  )
  tensors = {
      k: as_float32_numpy(v) for k, v in source.items() if not k.endswith("rotary_emb.inv_freq")
  }
  model = Llama(config, rngs=nnx.Rngs(seed))
  load_hf_weights(model, tensors)
  return model


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
