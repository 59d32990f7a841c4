r"""``x @ w`` whose backward pass keeps every product in plain (row-major) form on CPUs.

The backward pass of :math:`y = x w` is :math:`\partial x = g\, w^\top` and
:math:`\partial w = x^\top g` (``x`` flattened to rows). Written as transposed operands,
XLA's CPU backend emits them as slow generic dots, or turns them around by transposing the
*incoming* gradient inside a fusion that also computes its elementwise producer (SwiGLU's
``silu'``), in a cache-hostile order: a large part of a small LLaMA's gradient time on a
CPU. Here, on CPUs, the backward pass first
materialises ``w^T`` and ``x^T`` (behind an optimization barrier, so that XLA cannot fold
the transposes back into the products) and multiplies row-major operands. Other backends
get the plain transposes: their matrix units take transposed operands at full speed.
Being a ``jax.custom_vjp``, it supports reverse-mode differentiation only (``jax.grad``,
``jax.vjp``), not ``jax.jvp``.

>>> import jax, jax.numpy as jnp
>>> x, w = jnp.arange(6.0).reshape(1, 2, 3), jnp.arange(12.0).reshape(3, 4) / 10
>>> bool(jnp.allclose(matmul(x, w), x @ w))
True
>>> dx, dw = jax.grad(lambda x, w: jnp.sum(jnp.sin(matmul(x, w))), argnums=(0, 1))(x, w)
>>> ex, ew = jax.grad(lambda x, w: jnp.sum(jnp.sin(x @ w)), argnums=(0, 1))(x, w)
>>> bool(jnp.allclose(dx, ex, atol=1e-6)), bool(jnp.allclose(dw, ew, atol=1e-6))
(True, True)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """``x @ w`` for ``x`` of shape ``(..., in)`` and ``w`` of shape ``(in, out)``."""
  return jnp.dot(x, w)


def _forward(x, w):
  return jnp.dot(x, w), (x, w)


def _gradients(transpose):
  """``(x, w, g) -> (g w^T, x^T g)`` with the transposes taken by ``transpose``."""

  def gradients(x, w, g):
    rows = x.reshape(-1, x.shape[-1])
    return jnp.dot(g, transpose(w)), jnp.dot(transpose(rows), g.reshape(-1, g.shape[-1]))

  return gradients


def _backward(residuals, g):
  x, w = residuals
  dx, dw = lax.platform_dependent(
      x,
      w,
      g,
      cpu=_gradients(lambda a: lax.optimization_barrier(a.T)),
      default=_gradients(jnp.transpose),
  )
  return dx.astype(x.dtype), dw.astype(w.dtype)


matmul.defvjp(_forward, _backward)
