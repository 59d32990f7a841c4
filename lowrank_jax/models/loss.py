"""Shifted next-token cross-entropy, averaged over non-pad target tokens.

For logits ``z`` of shape ``(B, S, V)``, ids ``x`` and a mask ``m`` (1 on real tokens)::

    loss = sum_{b, t<S-1} m[b, t+1] * CE(z[b, t], x[b, t+1]) / sum_{b, t<S-1} m[b, t+1]

>>> import jax.numpy as jnp
>>> logits = jnp.zeros((1, 3, 4))  # uniform predictions: each token costs log(4)
>>> loss, count = next_token_loss(logits, jnp.array([[1, 2, 0]]), jnp.array([[1, 1, 0]]))
>>> round(float(loss), 4), int(count)
(1.3863, 1)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def next_token_loss(
    logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Returns ``(mean loss over counted targets, number of counted targets)``.

  Args:
    logits: ``(batch, seq, vocab)`` predictions; position ``t`` predicts token ``t + 1``.
    input_ids: ``(batch, seq)`` integer token ids.
    loss_mask: ``(batch, seq)``, 1 where the token is real and 0 on padding; the target at
      ``t + 1`` counts iff ``loss_mask[:, t + 1]`` is 1.
  """
  targets = input_ids[:, 1:]
  weights = loss_mask[:, 1:].astype(jnp.float32)
  per_token = optax.softmax_cross_entropy_with_integer_labels(
      logits[:, :-1].astype(jnp.float32), targets
  )
  count = weights.sum()
  return (per_token * weights).sum() / jnp.maximum(count, 1.0), count
