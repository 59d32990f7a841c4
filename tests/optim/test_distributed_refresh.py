"""The refresh spread over 8 devices equals the single-device refresh, without a full gather."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import lowrank_jax.optim as lro
from lowrank_jax.optim._projection import distributed_refresh as dr
from lowrank_jax.optim._projection import projector_bases

AXES = ("data", "fsdp", "tensor")
RANK = 4


def make_mesh(axis_type=AxisType.Auto):
  return jax.make_mesh((2, 2, 2), AXES, axis_types=(axis_type,) * 3)


def matrices(batch, rows=16, cols=24, seed=0):
  """Matrices with a well separated top-``RANK`` spectrum (stable singular vectors)."""
  rng = np.random.default_rng(seed)
  scales = np.concatenate([np.linspace(10, 5, RANK), np.full(rows - RANK, 0.5)])
  u = np.linalg.qr(rng.standard_normal((batch, rows, rows)))[0]
  v = np.linalg.qr(rng.standard_normal((batch, cols, rows)))[0]
  return jnp.asarray(u * scales[None, None, :] @ np.swapaxes(v, 1, 2), jnp.float32)


def batch_refresh(refresher):
  return lambda g, keys: (jax.vmap(lambda m, k: refresher(m, k, jnp.int32(0)))(g, keys),)


def collectives(compiled, op: str) -> list[str]:
  """The output shapes of every ``op`` (``all-gather``, ``all-to-all``) in the compiled HLO."""
  return re.findall(rf"= (.*?) {op}(?:-start)?\(", compiled.as_text())


@pytest.mark.parametrize("refresh", ["svd", "randomized"])
def test_spread_refresh_equals_the_single_device_refresh(refresh):
  mesh = make_mesh()
  refresher = batch_refresh(projector_bases.make_refresher(refresh, RANK, oversample=4))
  batches = [matrices(8, seed=0), matrices(3, seed=1)]  # 3: padded to 8
  keys = [jax.random.split(jax.random.key(1), len(g)) for g in batches]
  expected = jax.jit(lambda gs, ks: [refresher(g, k)[0] for g, k in zip(gs, ks)])(batches, keys)
  sharded = jax.device_put(batches, NamedSharding(mesh, P(None, "fsdp", "tensor")))
  spread = jax.jit(
      lambda gs, ks: [
          dr.spread_over_devices(refresher, (g, k), mesh=mesh, axes=AXES)[0] for g, k in zip(gs, ks)
      ]
  )
  actual = spread(sharded, keys)
  assert actual[0].sharding.spec == P(AXES)  # one whole matrix per device
  canonical = jax.vmap(projector_bases.canonical_signs)
  chex.assert_trees_all_close(
      [canonical(x) for x in actual], [canonical(x) for x in expected], atol=1e-5
  )


def test_each_device_decomposes_its_slice_without_gathering_the_batch():
  mesh = make_mesh()
  refresher = batch_refresh(projector_bases.make_refresher("svd", RANK))
  g = jax.ShapeDtypeStruct(
      (8, 16, 24), jnp.float32, sharding=NamedSharding(mesh, P(None, "fsdp", "tensor"))
  )
  naive = jax.jit(lambda g: refresher(g, None)).lower(g).compile()
  spread = (
      jax.jit(
          lambda g: dr.spread_over_devices(lambda x: refresher(x, None), (g,), mesh=mesh, axes=AXES)
      )
      .lower(g)
      .compile()
  )
  # The control: XLA gathers the matrices' pieces (and their 16 x 16 Gram matrices) onto
  # every device, and every device decomposes all 8.
  assert any("16,16]" in shape for shape in collectives(naive, "all-gather"))
  assert not collectives(spread, "all-gather") and collectives(spread, "all-to-all")
  naive_flops, spread_flops = (c.cost_analysis()["flops"] for c in (naive, spread))
  assert spread_flops < naive_flops / 2  # 1 matrix per device instead of 8


def galore_steps(mesh, params, options):
  """Updates and final state of three jitted GaLore steps (refreshes at steps 0 and 2)."""
  tx = lro.galore(0.01, rank=RANK, update_proj_gap=2, options=options)
  specs = {"stack": P(None, "fsdp", "tensor"), "odd": P(None, "tensor", "fsdp")}
  shardings = {k: NamedSharding(mesh, s) for k, s in specs.items()}
  params = jax.device_put(params, shardings)
  state = tx.init(params)
  update = jax.jit(tx.update)
  spread = "manual_computation" in update.lower(params, state, params).as_text()
  assert spread == (options.refresh_axes is not None)  # the shard_map is there
  results = []
  for step in range(3):
    grads = jax.tree.map(lambda p: p * (1.0 + step) + 0.1 * step, params)
    updates, state = update(grads, state, params)
    results.append(updates)
  return results, state


@pytest.mark.parametrize("stagger, axis_type", [(True, AxisType.Auto), (False, AxisType.Explicit)])
def test_galore_update_equals_the_undistributed_transform(stagger, axis_type):
  mesh = make_mesh(axis_type)
  params = {"stack": matrices(8, seed=2), "odd": jnp.swapaxes(matrices(3, seed=3), 1, 2)}
  options = lro.ProjectionOptions(stagger=stagger)
  with jax.set_mesh(mesh):  # the ambient mesh: refresh_mesh=None finds it
    expected = galore_steps(mesh, params, options)
    actual = galore_steps(mesh, params, options._replace(refresh_axes=AXES))
  chex.assert_trees_all_close(actual, expected, atol=1e-5)


def test_refresh_options_are_validated():
  mesh = make_mesh()
  for bad in ["fsdp", (), ("fsdp", "fsdp"), ("fsdp", 1)]:
    with pytest.raises(ValueError, match="refresh_axes must be"):
      lro.galore(0.01, options=lro.ProjectionOptions(refresh_axes=bad))
  with pytest.raises(ValueError, match="refresh_mesh must be"):
    lro.galore(0.01, options=lro.ProjectionOptions(refresh_axes=AXES, refresh_mesh="mesh"))
  with pytest.raises(ValueError, match="lacks"):
    lro.galore(0.01, options=lro.ProjectionOptions(refresh_axes=("model",), refresh_mesh=mesh))


def test_no_mesh_or_one_device_keeps_the_undistributed_refresh():
  assert dr.active_mesh(None, AXES) is None  # no ambient mesh
  assert (
      dr.active_mesh(jax.make_mesh((1,), ("fsdp",), devices=jax.devices()[:1]), ("fsdp",)) is None
  )
  assert dr.active_mesh(make_mesh(), AXES) is not None
  assert dr.active_mesh(make_mesh(), None) is None
