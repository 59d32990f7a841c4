"""``models.matmul``: the product and its gradients equal ``jnp.dot``'s, dtypes kept."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lowrank_jax.models.matmul import matmul


def loss(product, x, w):
  return jnp.sum(jnp.tanh(product(x, w)).astype(jnp.float32) ** 2)


@pytest.mark.parametrize("x_shape", [(5, 8), (2, 3, 8)])
def test_gradients_equal_the_plain_products(x_shape):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal((8, 6)), jnp.float32)
  ours = jax.jit(jax.grad(lambda x, w: loss(matmul, x, w), argnums=(0, 1)))(x, w)
  plain = jax.grad(lambda x, w: loss(jnp.dot, x, w), argnums=(0, 1))(x, w)
  chex.assert_trees_all_close(ours, plain, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(matmul(x, w), x @ w)


def test_cotangents_keep_the_operand_dtypes():
  x = jnp.ones((4, 8), jnp.bfloat16)
  w = jnp.ones((8, 3), jnp.float32)
  dx, dw = jax.grad(
      lambda x, w: loss(lambda a, b: matmul(a, b.astype(a.dtype)), x, w), argnums=(0, 1)
  )(x, w)
  assert (dx.dtype, dw.dtype) == (jnp.bfloat16, jnp.float32)
  assert matmul(x, w.astype(jnp.bfloat16)).dtype == jnp.bfloat16
