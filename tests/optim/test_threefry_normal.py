"""``threefry_normal.standard_normal``: JAX's non-partitionable normal, bit for bit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax.extend.random as jex_random

from lowrank_jax.optim._projection.threefry_normal import counter_bits, standard_normal


@pytest.mark.parametrize("size", [1, 2, 7, 1000, 4097])
def test_counter_bits_are_jax_threefry_of_the_counters(size):
  words = jax.random.key_data(jax.random.key(5))
  reference = jex_random.threefry_2x32(words, jax.lax.iota(jnp.uint32, size))
  np.testing.assert_array_equal(jax.jit(counter_bits, static_argnums=1)(words, size), reference)


@pytest.mark.parametrize("shape", [(1,), (7,), (5, 3), (512, 128), (2, 3, 5)])
def test_matches_jax_non_partitionable_normal(shape):
  key = jax.random.key(42)
  ours = jax.jit(standard_normal, static_argnums=1)(key, shape)
  with jax.threefry_partitionable(False):
    reference = jax.random.normal(key, shape, jnp.float32)
  np.testing.assert_array_equal(ours, reference)


def test_batched_keys_draw_each_key_stream():
  keys = jax.random.split(jax.random.key(3), 4)
  batched = jax.vmap(lambda k: standard_normal(k, (6, 2)))(keys)
  for key, drawn in zip(keys, batched):
    np.testing.assert_array_equal(drawn, standard_normal(key, (6, 2)))
  assert len({bytes(np.asarray(x)) for x in batched}) == 4


def test_standard_normal_distribution_for_a_non_threefry_key():
  key = jax.random.key(0, impl="rbg")
  samples = np.asarray(standard_normal(key, (200_000,)), np.float64)
  np.testing.assert_array_equal(samples, standard_normal(key, (200_000,)))
  assert abs(samples.mean()) < 0.01 and abs(samples.std() - 1.0) < 0.01
  ordered = np.sort(samples)
  cdf = np.array([0.5 * (1 + math.erf(x / math.sqrt(2))) for x in ordered[::100]])
  empirical = (np.arange(0, ordered.size, 100) + 1) / ordered.size
  assert np.max(np.abs(cdf - empirical)) < 0.01  # Kolmogorov-Smirnov distance


def test_too_many_values_is_refused_before_drawing():
  with pytest.raises(ValueError, match=r"at most 4294967295 values, got shape \(65536, 65537\)"):
    jax.eval_shape(lambda k: standard_normal(k, (65536, 65537)), jax.random.key(0))
