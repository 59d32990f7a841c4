r"""Validation perplexity, and the unigram baseline it must beat.

Paper protocol (arXiv 2505.22922, experimental protocol): the validation stream is read until its non-pad
token budget is reached and ``ppl = exp(loss)``. The loss is the mean negative log-likelihood
of every validation token, each batch weighing by its non-pad tokens,

.. math::  \text{loss} = \frac{\sum_b n_b \ell_b}{\sum_b n_b}

(``mean="tokens"``), so a last, partial batch or a batch of short documents weighs what its
tokens weigh. The reference code takes the mean over batches of each batch's mean token loss
(``mean="batches"``), which over-weighs the tokens of small batches, and divides the sum by
``batches + 1``, which biases the loss low (``references_divisor=True``, with
``mean="batches"`` only).

>>> import numpy as np
>>> batches = [{"input_ids": np.array([[5, 3, 3, 4]]), "loss_mask": np.array([[1, 1, 1, 1]])}]
>>> round(unigram_perplexity(batches, batches), 3)  # targets 3, 3, 4: p(3) = 3/5, p(4) = 2/5 with add-one
1.908
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import jax
import numpy as np

MEANS = ("tokens", "batches")


def evaluate(
    eval_step: Callable,
    params,
    frozen,
    batches: Iterable,
    mean: str = "tokens",
    references_divisor: bool = False,
) -> dict[str, float]:
  """Runs ``eval_step(params, frozen, batch) -> (mean loss, count)`` over ``batches`` and
  averages the batch losses as ``mean`` says (one of :data:`MEANS`)."""
  if mean not in MEANS:
    raise ValueError(f"mean={mean!r} is not one of {MEANS}")
  if references_divisor and mean != "batches":
    raise ValueError("references_divisor=True divides a mean over batches; set mean='batches'")
  results = [eval_step(params, frozen, batch) for batch in batches]
  if not results:
    raise ValueError("the validation stream yielded no batch; check data.validation_tokens")
  losses, counts = (np.asarray(values, np.float64) for values in zip(*jax.device_get(results)))
  tokens = float(counts.sum())
  if mean == "tokens":
    loss = float((losses * counts).sum() / tokens)
  else:
    loss = float(losses.sum()) / (len(losses) + 1 if references_divisor else len(losses))
  return {
      "val_loss": loss,
      "val_ppl": math.exp(loss),
      "val_tokens": tokens,
      "val_batches": float(len(losses)),
  }


def _targets(batch) -> np.ndarray:
  ids, mask = np.asarray(batch["input_ids"]), np.asarray(batch["loss_mask"])
  return ids[:, 1:][mask[:, 1:] > 0]


def unigram_perplexity(train_batches: Iterable, validation_batches: Iterable) -> float:
  """Perplexity on the validation targets of add-one-smoothed train token frequencies.

  The baseline a language model must beat to have learned anything beyond token counts.
  """
  counts: dict[int, int] = {}
  for batch in train_batches:
    ids, freq = np.unique(_targets(batch), return_counts=True)
    for i, c in zip(ids.tolist(), freq.tolist()):
      counts[i] = counts.get(i, 0) + c
  targets = np.concatenate([_targets(b) for b in validation_batches])
  vocab = set(counts) | set(np.unique(targets).tolist())
  total = sum(counts.values()) + len(vocab)
  log_probs = np.array([math.log((counts.get(t, 0) + 1) / total) for t in targets.tolist()])
  return math.exp(-log_probs.mean())
