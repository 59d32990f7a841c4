"""The linear kinds register themselves, and the factorized ones share one factor constructor."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linear_layer import linear_layer
from lowrank_jax.models import LinearConfig, register_linear
from lowrank_jax.models.linear import registry
from lowrank_jax.models.linear.cola import CoLALinear
from lowrank_jax.models.linear.dense import DenseLinear
from lowrank_jax.models.linear.factors import FactorizedLinear
from lowrank_jax.models.linear.lora import LoRALinear
from lowrank_jax.models.linear.lowrank import LowRankLinear
from lowrank_jax.models.linear.sltrain import SLTrainLinear

BUILT_IN = {
    "dense": DenseLinear,
    "lowrank": LowRankLinear,
    "lora": LoRALinear,
    "sltrain": SLTrainLinear,
    "cola": CoLALinear,
}


def build(config, rngs_seed=0):
  return linear_layer(config, 6, 4, seed=rngs_seed)


@pytest.mark.parametrize("kind", sorted(BUILT_IN))
def test_each_kind_module_registers_its_class(kind):
  assert registry.linear_factory(kind) is BUILT_IN[kind]
  assert registry.needs_rank(kind) == (kind != "dense")
  assert type(build(LinearConfig(kind=kind, rank=None if kind == "dense" else 2))) is BUILT_IN[kind]


def test_a_registered_kind_is_a_valid_config_and_built_by_make_linear(monkeypatch):
  monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
  monkeypatch.setattr(registry, "_NEEDS_RANK", set(registry._NEEDS_RANK))
  with pytest.raises(ValueError, match="'twice' is unknown"):
    LinearConfig(kind="twice")
  register_linear("twice", lambda *shape, config, **layer: (shape, config.kind, sorted(layer)))
  assert build(LinearConfig(kind="twice")) == (
      (6, 4, ("embed", "mlp")),
      "twice",
      ["compute_dtype", "init_std", "param_dtype", "rngs"],
  )
  register_linear("twice", DenseLinear, needs_rank=True)
  with pytest.raises(ValueError, match="needs a rank"):
    LinearConfig(kind="twice")


@pytest.mark.parametrize("kind", ["lowrank", "lora", "sltrain", "cola"])
def test_factors_drawn_first_with_their_axes(kind):
  """Every factorized kind holds ``a: (in, r)`` then ``b: (r, out)`` with the logical axes
  ``(in_axis, "rank")``, ``("rank", out_axis)``, drawn from the first two keys of ``rngs``."""
  layer = build(LinearConfig(kind=kind, rank=2))
  assert isinstance(layer, FactorizedLinear)
  assert (layer.a.shape, layer.a.out_sharding) == ((6, 2), ("embed", "rank"))
  assert (layer.b.shape, layer.b.out_sharding) == ((2, 4), ("rank", "mlp"))
  keys = nnx.Rngs(0)
  a_init, b_init = layer.factor_initializers(6, 4, 2)
  np.testing.assert_array_equal(layer.a[...], a_init(keys.params(), (6, 2), jnp.float32))
  np.testing.assert_array_equal(layer.b[...], b_init(keys.params(), (2, 4), jnp.float32))


def test_a_factorized_rank_above_the_shape_is_refused():
  with pytest.raises(ValueError, match="needs 1 <= rank <= min"):
    build(LinearConfig(kind="lowrank", rank=5))
