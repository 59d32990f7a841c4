"""The validation loss against a hand computation over the same batches.

The protocol of arXiv 2505.22922, experimental protocol: within a batch, the mean negative log-likelihood
of every non-pad target token; over the validation budget, the mean of those batch means
(``references_divisor`` divides their sum by batches + 1 instead, as the references do). The
embedded corpus fills every row of a tiny run, so hand-made batches bring the padding.
"""

import math

import jax
import numpy as np
import pytest
from flax import nnx
from tiny_run import TINY

from lowrank_jax.data import load_tokenizer, make_validation_batches
from lowrank_jax.train.config import load_config
from lowrank_jax.train.evaluation import evaluate
from lowrank_jax.train.run import Run
from lowrank_jax.train.state import init_train_state
from lowrank_jax.train.step import make_eval_step

OVERRIDES = TINY + ["run_dir=unused"]


def batch_nll_by_hand(logits: np.ndarray, batch) -> float:
  """Mean over the non-pad targets ``ids[:, t + 1]`` of ``-log softmax(logits[:, t])``."""
  logits = np.asarray(logits, np.float64)[:, :-1]
  log_probs = logits - logits.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  targets = np.asarray(batch["input_ids"])[:, 1:]
  weights = np.asarray(batch["loss_mask"])[:, 1:]
  nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  return float((nll * weights).sum() / weights.sum())


@pytest.fixture(scope="module")
def run_and_state():
  config = load_config(overrides=OVERRIDES)
  run = Run.without_data(config, jax.devices()[:1], load_tokenizer(config.data))
  return run, init_train_state(run.model_config, run.tx, run.mesh, seed=3)


def hand_losses(run, state, batches) -> tuple[list[float], float]:
  logits = jax.jit(lambda params, frozen, ids: nnx.merge(run.graphdef, params, frozen)(ids))
  losses = [
      batch_nll_by_hand(logits(state.params, state.frozen, b["input_ids"]), b) for b in batches
  ]
  return losses, float(sum(b["loss_mask"][:, 1:].sum() for b in batches))


def padded_batches(rows=8, seq=32, vocab=384):
  """Three batches whose rows end in padding of different lengths (pad id 0)."""
  batches = []
  for i in range(3):
    rng = np.random.default_rng(i)
    lengths = rng.integers(2, seq + 1, rows)
    mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(3, vocab, (rows, seq)).astype(np.int32) * mask
    batches.append({"input_ids": ids, "loss_mask": mask})
  return batches


@pytest.mark.parametrize("references_divisor", [False, True])
def test_the_validation_loss_is_the_mean_of_batch_mean_token_nlls(
    run_and_state, references_divisor
):
  run, state = run_and_state
  if references_divisor:
    config = load_config(overrides=OVERRIDES + ["eval.references_divisor=true"])
    run = Run.without_data(config, jax.devices()[:1], run.tokenizer)
  batches = list(
      make_validation_batches(run.config.data, run.tokenizer, batch_size=run.config.eval.batch_size)
  )
  losses, tokens = hand_losses(run, state, batches)
  expected = sum(losses) / (len(losses) + references_divisor)
  result = run.evaluate(state)
  assert result["val_batches"] == len(losses) > 1
  assert result["val_tokens"] == tokens
  np.testing.assert_allclose(result["val_loss"], expected, rtol=1e-5)
  np.testing.assert_allclose(result["val_ppl"], math.exp(expected), rtol=1e-5)


def test_padding_weighs_nothing_and_each_batch_is_its_token_mean(run_and_state):
  run, state = run_and_state
  batches = padded_batches()
  losses, tokens = hand_losses(run, state, batches)
  eval_step = jax.jit(make_eval_step(run.graphdef))
  result = evaluate(eval_step, state.params, state.frozen, batches)
  assert result["val_tokens"] == tokens
  np.testing.assert_allclose(result["val_loss"], np.mean(losses), rtol=1e-5)
