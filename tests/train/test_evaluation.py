"""The validation loss against a hand computation over the same batches.

The protocol of arXiv 2505.22922, experimental protocol: within a batch, the mean negative log-likelihood
of every non-pad target token; over the validation budget, the mean over every token (each
batch weighing by its tokens), or as the references take it the mean of the batch means
(``references_divisor`` divides their sum by batches + 1 instead). The embedded corpus fills
every row of a tiny run, so hand-made batches bring the padding.
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


def hand_losses(run, state, batches) -> tuple[np.ndarray, np.ndarray]:
  """Each batch's mean token loss and its count of target tokens."""
  logits = jax.jit(lambda params, frozen, ids: nnx.merge(run.graphdef, params, frozen)(ids))
  losses = [
      batch_nll_by_hand(logits(state.params, state.frozen, b["input_ids"]), b) for b in batches
  ]
  return np.array(losses), np.array([float(b["loss_mask"][:, 1:].sum()) for b in batches])


def mean_by_hand(losses, counts, mean: str, references_divisor: bool = False) -> float:
  if mean == "tokens":
    return float((losses * counts).sum() / counts.sum())
  return float(losses.sum() / (len(losses) + references_divisor))


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


@pytest.mark.parametrize(
    "mean, references_divisor", [("tokens", False), ("batches", False), ("batches", True)]
)
def test_the_validation_loss_is_the_token_or_batch_mean_of_token_nlls(
    run_and_state, mean, references_divisor
):
  run, state = run_and_state
  config = load_config(
      overrides=OVERRIDES + [f"eval.mean={mean}", f"eval.references_divisor={references_divisor}"]
  )
  run = Run.without_data(config, jax.devices()[:1], run.tokenizer)
  batches = list(
      make_validation_batches(run.config.data, run.tokenizer, batch_size=run.config.eval.batch_size)
  )
  losses, counts = hand_losses(run, state, batches)
  expected = mean_by_hand(losses, counts, mean, references_divisor)
  result = run.evaluate(state)
  assert result["val_batches"] == len(losses) > 1
  assert result["val_tokens"] == counts.sum()
  np.testing.assert_allclose(result["val_loss"], expected, rtol=1e-5)
  np.testing.assert_allclose(result["val_ppl"], math.exp(expected), rtol=1e-5)


@pytest.mark.parametrize("mean", ["tokens", "batches"])
def test_padding_weighs_nothing_and_each_batch_is_its_token_mean(run_and_state, mean):
  run, state = run_and_state
  batches = padded_batches()
  losses, counts = hand_losses(run, state, batches)
  eval_step = jax.jit(make_eval_step(run.graphdef))
  result = evaluate(eval_step, state.params, state.frozen, batches, mean)
  assert result["val_tokens"] == counts.sum()
  np.testing.assert_allclose(result["val_loss"], mean_by_hand(losses, counts, mean), rtol=1e-5)


def test_a_divisor_without_a_mean_over_batches_is_refused():
  with pytest.raises(ValueError, match="eval.mean=batches"):
    load_config(overrides=OVERRIDES + ["eval.references_divisor=true"])
