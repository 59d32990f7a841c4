r"""Standard normal draws from Threefry-2x32 on a counter, every output word used.

APOLLO regenerates its random projector from a key at every step, so the draw
is on the critical path of each update. ``jax.random.normal`` under JAX's
default ``jax_threefry_partitionable=True`` hashes one counter pair per output
word and keeps half of each hash, and JAX's CPU lowering of the hash runs its
rounds as a rolled loop. Here the counters ``0 .. n - 1`` are hashed as
``n / 2`` pairs with both output words kept (JAX's original, non-partitionable
scheme), by Threefry-2x32 (Salmon et al., SC 2011) written out round by round,
so that XLA fuses the hash, the conversion and the inverse error function into
one loop (about 3x faster on a CPU: ``experiments/results/bench/README.md``).

Threefry-2x32 with key ``(k_0, k_1)``, ``k_2 = k_0 \oplus k_1 \oplus
\mathtt{0x1BD11BDA}``, maps a counter pair ``(x_0, x_1)`` through 20 rounds
``x_0 \mathrel{+}= x_1,\ x_1 = \mathrm{rotl}(x_1, R) \oplus x_0`` with an
injection of the key schedule every 4. With ``b`` an output word, ``f`` the
float in ``[1, 2)`` whose mantissa is its top 23 bits, and ``l`` the float32
just above ``-1``:

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
import jax.numpy as jnp
import numpy as np
from jax import lax

MAX_SIZE = 2**32 - 1  # the counters are uint32
MANTISSA_BITS = 23
ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # of the two alternating groups of 4 rounds
KEY_PARITY = np.uint32(0x1BD11BDA)


def threefry_words(key: jax.Array) -> jax.Array:
  """The ``uint32[2]`` Threefry key of ``key`` (its data, or a draw from it)."""
  words = jax.random.key_data(key)
  if words.shape != (2,) or words.dtype != jnp.uint32:
    words = jax.random.bits(key, (2,), jnp.uint32)
  return words


def rotate_left(x: jax.Array, distance: int) -> jax.Array:
  """``x`` (uint32) rotated left by ``distance`` bits."""
  return (x << np.uint32(distance)) | (x >> np.uint32(32 - distance))


def threefry_2x32(words: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Threefry-2x32 (20 rounds) of the counter pairs ``(x0, x1)`` under key ``words``."""
  schedule = (words[0], words[1], words[0] ^ words[1] ^ KEY_PARITY)
  x0, x1 = x0 + schedule[0], x1 + schedule[1]
  for group in range(5):
    for distance in ROTATIONS[group % 2]:
      x0 = x0 + x1
      x1 = rotate_left(x1, distance) ^ x0
    x0 = x0 + schedule[(group + 1) % 3]
    x1 = x1 + schedule[(group + 2) % 3] + np.uint32(group + 1)
  return x0, x1


def counter_bits(words: jax.Array, size: int) -> jax.Array:
  """``size`` random words: the counters ``0 .. size - 1`` (a zero appended when
  ``size`` is odd) hashed as the pairs ``(i, i + half)``, both outputs kept."""
  half = (size + 1) // 2
  counters = lax.iota(jnp.uint32, 2 * half)
  counters = jnp.where(counters < size, counters, jnp.uint32(0))
  first, second = threefry_2x32(words, counters[:half], counters[half:])
  return jnp.concatenate([first, second])[:size]


def standard_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """``float32`` i.i.d. ``N(0, 1)`` of ``shape`` from one (unbatched) typed key."""
  size = math.prod(shape)
  if size > MAX_SIZE:
    raise ValueError(f"standard_normal draws at most {MAX_SIZE} values, got shape {shape}.")
  bits = counter_bits(threefry_words(key), size)
  one = np.array(1.0, np.float32).view(np.uint32)
  unit = lax.bitcast_convert_type((bits >> (32 - MANTISSA_BITS)) | one, jnp.float32) - 1.0
  low = np.nextafter(np.float32(-1.0), np.float32(0.0))
  uniform = lax.max(low, unit * (np.float32(1.0) - low) + low)
  return (np.float32(math.sqrt(2.0)) * lax.erf_inv(uniform)).reshape(shape)
