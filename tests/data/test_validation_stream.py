"""The validation stream: stored order, token budget, exhaustion, padding of the last batch."""

import itertools
import re

import chex
import jax
import numpy as np
import pytest

from lowrank_jax.data import DataConfig, make_validation_batches
from lowrank_jax.data.sources import bible
from lowrank_jax.data.validation_stream import _local_batches

SEQ_LEN, BATCH = 64, 8


def _config(**fields):
  return DataConfig(seq_len=SEQ_LEN, global_batch_size=BATCH, **fields)


def _tokens_per_batch(tokenizer):
  """Non-pad tokens of each validation batch, computed directly from the chapters."""
  per_row = [min(len(tokenizer.encode(text)) + 1, SEQ_LEN) for text in bible.chapters("validation")]
  return [sum(per_row[i : i + BATCH]) for i in range(0, len(per_row), BATCH)]


def test_rows_follow_the_stored_order_of_the_split(tokenizer):
  first = next(make_validation_batches(_config(), tokenizer))
  for row, text in zip(first["input_ids"], bible.chapters("validation")[:BATCH]):
    ids = tokenizer.encode(text)[: SEQ_LEN - 1] + [tokenizer.eos_id]
    np.testing.assert_array_equal(row, ids + [tokenizer.pad_id] * (SEQ_LEN - len(ids)))


@pytest.mark.parametrize(
    "budget_of",
    [
        lambda sums: 1,  # the first batch already reaches it
        lambda sums: sums[0],  # exactly one batch
        lambda sums: sums[0] + 1,  # one token more needs a second batch
        lambda sums: sums[0] + sums[1] + sums[2],
    ],
)
def test_stops_after_the_batch_that_reaches_the_budget(tokenizer, budget_of):
  sums = _tokens_per_batch(tokenizer)
  budget = budget_of(sums)
  batches = list(make_validation_batches(_config(validation_tokens=budget), tokenizer))
  counts = [int(batch["loss_mask"].sum()) for batch in batches]
  assert counts == sums[: len(counts)]
  assert sum(counts) >= budget and sum(counts[:-1]) < budget


@pytest.mark.parametrize("mode", ["paper", "packed"])
def test_a_budget_beyond_the_split_reads_it_once(tokenizer, mode):
  batches = list(make_validation_batches(_config(mode=mode), tokenizer))
  texts = bible.chapters("validation")
  if mode == "paper":
    assert len(batches) == -(-len(texts) // BATCH)
    assert sum(int(b["loss_mask"].sum()) for b in batches) == sum(_tokens_per_batch(tokenizer))
  else:
    stream = np.concatenate([tokenizer.encode(text) + [tokenizer.eos_id] for text in texts])
    rows = np.concatenate([b["input_ids"] for b in batches])
    np.testing.assert_array_equal(rows.reshape(-1)[: len(stream)], stream)
  last = batches[-1]
  empty = last["loss_mask"].sum(axis=1) == 0
  assert empty.any() and (last["input_ids"][empty] == tokenizer.pad_id).all()


def test_two_passes_are_identical(tokenizer):
  config = _config(validation_tokens=5_000)
  chex.assert_trees_all_equal(
      list(make_validation_batches(config, tokenizer)),
      list(make_validation_batches(config, tokenizer)),
  )


def test_with_a_sharding_batches_are_global_and_equal(tokenizer, data_sharding):
  config = _config(validation_tokens=3_000)
  global_batches = list(make_validation_batches(config, tokenizer, sharding=data_sharding))
  assert all(b["input_ids"].sharding == data_sharding for b in global_batches)
  chex.assert_trees_all_equal(
      jax.device_get(global_batches), list(make_validation_batches(config, tokenizer))
  )


def test_a_process_that_runs_out_keeps_yielding_padding():
  rows = [
      {"input_ids": np.full(2, i + 5, np.int32), "loss_mask": np.ones(2, np.int32)}
      for i in range(3)
  ]
  padding = {"input_ids": np.zeros(2, np.int32), "loss_mask": np.zeros(2, np.int32)}
  batches = list(itertools.islice(_local_batches(iter(rows), padding, batch_size=2), 3))
  np.testing.assert_array_equal([b["input_ids"][:, 0] for b in batches], [[5, 6], [7, 0], [0, 0]])
  np.testing.assert_array_equal([b["loss_mask"].sum() for b in batches], [4, 2, 0])


def test_several_processes_need_a_sharding(tokenizer):  # checked on the call, not on next()
  with pytest.raises(ValueError, match=re.escape("process_count=2")):
    make_validation_batches(_config(), tokenizer, process_index=0, process_count=2)
