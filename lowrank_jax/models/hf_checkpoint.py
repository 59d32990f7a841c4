"""Reading an HF LLaMA directory: ``config.json`` and its safetensors weights, sharded or not.

A directory written by ``save_pretrained`` (or ``lowrank-jax export``) holds ``config.json``
and either one ``model.safetensors`` or shards listed by ``model.safetensors.index.json``
(its ``weight_map`` names the shard of every tensor). Tensors are read as float32 numpy
arrays (bf16 and fp16 checkpoints included), ready for
:func:`lowrank_jax.models.hf.load_hf_weights`. Nothing is downloaded: the directory must be
local.

>>> import tempfile
>>> from flax import nnx
>>> from lowrank_jax.models import Llama, LlamaConfig
>>> from lowrank_jax.models.hf import export_hf
>>> directory = tempfile.mkdtemp()
>>> export_hf(Llama(LlamaConfig.preset("nano", num_layers=1, vocab_size=32), rngs=nnx.Rngs(0)),
...           directory)
>>> read_hf_config(directory)["num_hidden_layers"]
1
>>> read_hf_tensors(directory)["model.norm.weight"].shape
(128,)
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

SINGLE_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"


def read_hf_config(directory: str | os.PathLike) -> dict[str, Any]:
  """The ``config.json`` of ``directory`` as a dict; a one-line error if there is none."""
  path = os.path.join(directory, "config.json")
  if not os.path.isfile(path):
    raise ValueError(
        f"{os.fspath(directory)!r} is not an HF model directory: it has no config.json"
    )
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as error:
    raise ValueError(f"{path}: not valid JSON ({error})") from None


def _weight_files(directory: str | os.PathLike) -> list[str]:
  """The safetensors files of ``directory``: the single file, or every shard of the index."""
  single, index = os.path.join(directory, SINGLE_FILE), os.path.join(directory, SHARD_INDEX)
  if os.path.isfile(single):
    return [single]
  if os.path.isfile(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    missing = [s for s in shards if not os.path.isfile(os.path.join(directory, s))]
    if missing:
      raise ValueError(f"{index} lists shards that are not there: {missing[:3]}")
    return [os.path.join(directory, shard) for shard in shards]
  raise ValueError(
      f"{os.fspath(directory)!r} has neither {SINGLE_FILE} nor {SHARD_INDEX} "
      "(only safetensors checkpoints are read)"
  )


def read_hf_tensors(directory: str | os.PathLike) -> dict[str, np.ndarray]:
  """Every tensor of the directory's safetensors files, by HF name, as float32 numpy."""
  try:
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError(
        "reading an HF checkpoint needs safetensors: pip install 'lowrank_jax[hf]'"
    ) from None
  tensors = {}
  for path in _weight_files(directory):
    with safe_open(path, framework="flax") as f:  # numpy lacks bf16; jax has it
      for name in f.keys():
        tensors[name] = np.asarray(f.get_tensor(name), np.float32)
  return tensors
