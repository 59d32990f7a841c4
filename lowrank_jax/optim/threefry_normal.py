r"""Standard normal draws from Threefry-2x32 on a counter, every output word used.

APOLLO regenerates its random projector from a key at every step, so the draw
is on the critical path of each update. ``jax.random.normal`` under JAX's
default ``jax_threefry_partitionable=True`` hashes one counter pair per output
word and keeps half of each hash; this draw hashes the counters ``0 .. n - 1``
as ``n / 2`` pairs and keeps both output words (JAX's original, non-partitionable
scheme), so it costs half the hashes: on a 2-core CPU, the 56 projectors of the
60M model (3.7M normals) take about 22 ms instead of 55.

With ``b`` a 32-bit word, ``f`` the float in ``[1, 2)`` whose mantissa is its
top 23 bits, and ``l`` the float32 just above ``-1``:

.. math::
  u = \max\big(l,\ (f - 1)(1 - l) + l\big) \in (-1, 1), \qquad
  z = \sqrt{2}\, \mathrm{erf}^{-1}(u) \sim N(0, 1).

For a Threefry key this is bit for bit ``jax.random.normal(key, shape)``
under ``jax.threefry_partitionable(False)``; a key of another implementation
first draws a Threefry key from itself.

>>> import jax
>>> z = standard_normal(jax.random.key(0), (2, 3))
>>> z.shape, z.dtype
((2, 3), dtype('float32'))
>>> with jax.threefry_partitionable(False):
...     bool((z == jax.random.normal(jax.random.key(0), (2, 3))).all())
True
"""

from __future__ import annotations

import math

import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
import numpy as np
from jax import lax

MAX_SIZE = 2**32 - 1  # the counters are uint32
MANTISSA_BITS = 23


def threefry_words(key: jax.Array) -> jax.Array:
    """The ``uint32[2]`` Threefry key of ``key`` (its data, or a draw from it)."""
    words = jax.random.key_data(key)
    if words.shape != (2,) or words.dtype != jnp.uint32:
        words = jax.random.bits(key, (2,), jnp.uint32)
    return words


def standard_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``float32`` i.i.d. ``N(0, 1)`` of ``shape`` from one (unbatched) typed key."""
    size = math.prod(shape)
    if size > MAX_SIZE:
        raise ValueError(f"standard_normal draws at most {MAX_SIZE} values, got shape {shape}.")
    bits = jex_random.threefry_2x32(threefry_words(key), lax.iota(jnp.uint32, size))
    one = np.array(1.0, np.float32).view(np.uint32)
    unit = lax.bitcast_convert_type((bits >> (32 - MANTISSA_BITS)) | one, jnp.float32) - 1.0
    low = np.nextafter(np.float32(-1.0), np.float32(0.0))
    uniform = lax.max(low, unit * (np.float32(1.0) - low) + low)
    return (np.float32(math.sqrt(2.0)) * lax.erf_inv(uniform)).reshape(shape)
