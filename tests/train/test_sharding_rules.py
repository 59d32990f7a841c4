"""The logical-axis rules on factorized models: Megatron layout under tensor parallelism, FSDP
fallbacks, and the sharded step matching one device."""

import jax
import numpy as np
import optax
import pytest
import test_step  # its run_steps, on a factorized CONFIG

from lowrank_jax.models import LinearConfig, LlamaConfig
from lowrank_jax.train import mesh as mesh_lib
from lowrank_jax.train.config import MeshSection
from lowrank_jax.train.state import train_state_shardings

COLUMN_PARALLEL = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
ROW_PARALLEL = ("o_proj", "down_proj")


def config(kind, layers=4):
  return LlamaConfig.preset(
      "nano",
      num_layers=layers,
      hidden_size=32,
      intermediate_size=64,
      num_heads=4,
      vocab_size=64,
      scan_layers=True,
      linear=LinearConfig(kind=kind, rank=8, sparsity=0.25),
  )


def factor_specs(kind, mesh):
  """``{(linear, factor): spec}`` of the stacked factors of ``kind``'s target linears."""
  tx = optax.adam(1e-3)
  params = train_state_shardings(config(kind), tx, mesh).params
  specs = {}
  for path, sharding in jax.tree.leaves_with_path(params):
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    if len(names) > 1 and names[-2] in COLUMN_PARALLEL + ROW_PARALLEL:
      specs[names[-2], names[-1]] = tuple(sharding.spec) + (None,) * 3
  return specs


@pytest.mark.parametrize("kind", ["lowrank", "lora", "cola", "sltrain"])
def test_factors_follow_megatron_under_tensor_parallelism(kind):
  """Column-parallel: ``a`` (in, r) whole over tensor, ``b`` (r, out) split on out; row-parallel:
  ``a`` split on in, ``b`` whole over tensor. Every factor is split over fsdp."""
  mesh = mesh_lib.make_mesh(MeshSection(data=1, fsdp=4, tensor=2))
  specs = factor_specs(kind, mesh)
  for linear in COLUMN_PARALLEL + ROW_PARALLEL:
    a, b = specs[linear, "a"], specs[linear, "b"]
    assert "fsdp" in a and "fsdp" in b, (linear, a, b)
    split_axis = (b, 2) if linear in COLUMN_PARALLEL else (a, 1)
    whole = a if linear in COLUMN_PARALLEL else b
    assert split_axis[0][split_axis[1]] == "tensor" and "tensor" not in whole, (linear, a, b)


def test_pure_fsdp_splits_every_factor_on_one_axis():
  mesh = mesh_lib.make_mesh(MeshSection(data=1, fsdp=8, tensor=1))
  for (linear, factor), spec in factor_specs("lowrank", mesh).items():
    assert spec.count("fsdp") == 1 and spec[0] is None, (linear, factor, spec)


def test_a_sharded_sltrain_step_matches_one_device(monkeypatch):
  """SLTrain: low-rank factors in the Megatron layout plus sparse values split 8 ways
  (0.25 * 32 * 32 = 256 per matrix) on an (fsdp=4, tensor=2) mesh."""
  monkeypatch.setattr(test_step, "CONFIG", config("sltrain", layers=1))
  tx = optax.adam(1e-2)
  _, sharded, _ = test_step.run_steps(
      tx, mesh_lib.make_mesh(MeshSection(data=1, fsdp=4, tensor=2)), accum=1, steps=2
  )
  _, single, _ = test_step.run_steps(
      tx,
      mesh_lib.make_mesh(MeshSection(data=1, fsdp=1, tensor=1), jax.devices()[:1]),
      accum=1,
      steps=2,
  )
  np.testing.assert_allclose(sharded, single, rtol=2e-4)
