"""Inverted dropout, as ``torch.nn.Dropout`` draws it in training.

ReLoRA's adapters see their input through dropout (Guitaricet/relora@176f376
``peft_pretraining/relora.py``, ``ReLoRaLinear.forward``: ``lora_B(lora_A(lora_dropout(x)))``,
``lora_dropout=0.1`` from ``torchrun_main.py``)::

    dropout(x) = x * m * s,    m ~ Bernoulli(1 - p) elementwise,    s = 1 / (1 - p),

so ``E[dropout(x)] = x`` and the layer needs no rescaling at evaluation, where it is the
identity. Kept entries are ``x * s`` with ``s`` rounded to ``x``'s dtype first, as torch
multiplies by its noise ``m / (1 - p)``: the same floats as its dropout's. The mask is a pure
function of ``key``: a step drawn again from the same key (a resumed run, a rematerialised
backward pass) drops the same entries.

>>> import jax
>>> import jax.numpy as jnp
>>> x = jnp.ones((2, 4))
>>> y = dropout(x, 0.5, jax.random.key(0))
>>> sorted(set(y.ravel().tolist()))  # dropped, or kept and scaled by 1 / (1 - p)
[0.0, 2.0]
>>> bool((dropout(x, 0.5, jax.random.key(0)) == y).all())  # the key fixes the mask
True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def keep_mask(rate: float, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """The entries :func:`dropout` keeps: ``Bernoulli(1 - rate)`` drawn from ``key``."""
  return jax.random.bernoulli(key, 1.0 - rate, shape)


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
  """``x`` with each entry zeroed with probability ``rate``, the others scaled by
  ``1 / (1 - rate)``, in ``x``'s dtype; ``rate`` in ``[0, 1)``."""
  keep = keep_mask(rate, key, x.shape)
  return jnp.where(keep, x * jnp.asarray(1.0 / (1.0 - rate), x.dtype), jnp.zeros((), x.dtype))
