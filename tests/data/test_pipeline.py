"""The training stream: shapes, epochs, per-process slices, exact resume, global arrays."""

import re

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lowrank_jax.data import (
    DataConfig,
    checkpoint_restore_args,
    checkpoint_save_args,
    make_train_iterator,
)

SMALL = DataConfig(seq_len=32, global_batch_size=8)


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _files_config(tmp_path, documents, **fields):
  path = tmp_path / "documents.txt"
  path.write_text("\n".join(documents) + "\n")
  return DataConfig(source="files", paths=(str(path),), **fields)


def test_batches_have_the_promised_shape_and_paper_layout(tokenizer):
  batch = next(make_train_iterator(SMALL, tokenizer))
  chex.assert_shape([batch["input_ids"], batch["loss_mask"]], (8, 32))
  assert batch["input_ids"].dtype == batch["loss_mask"].dtype == np.int32
  lengths = batch["loss_mask"].sum(axis=1)
  for ids, mask, length in zip(batch["input_ids"], batch["loss_mask"], lengths):
    np.testing.assert_array_equal(mask, np.arange(32) < length)  # real tokens, then padding
    assert ids[length - 1] == tokenizer.eos_id and (ids[: length - 1] != tokenizer.eos_id).all()
    assert (ids[length:] == tokenizer.pad_id).all()


def test_each_epoch_reads_every_document_once_in_a_new_order(tmp_path, char_tokenizer):
  documents = ["ab", "cd", "ef", "gh", "ij", "kl"]
  config = _files_config(tmp_path, documents, seq_len=4, global_batch_size=2)
  batches = _take(make_train_iterator(config, char_tokenizer), 6)
  epochs = [
      [char_tokenizer.decode(row) for b in batches[e : e + 3] for row in b["input_ids"]]
      for e in (0, 3)
  ]
  assert sorted(epochs[0]) == sorted(epochs[1]) == documents
  assert epochs[0] != epochs[1]


def test_the_seed_decides_the_order(tokenizer):
  def first_rows(seed):
    config = DataConfig(seq_len=32, global_batch_size=8, seed=seed)
    return next(make_train_iterator(config, tokenizer))["input_ids"]

  np.testing.assert_array_equal(first_rows(42), first_rows(42))
  assert not np.array_equal(first_rows(42), first_rows(7))


def _sorted_rows(rows):
  return sorted(map(tuple, np.asarray(rows).tolist()))


@pytest.mark.parametrize("mode", ["paper", "packed"])
def test_two_processes_read_disjoint_halves_of_the_global_batch(tokenizer, mode):
  config = DataConfig(seq_len=32, global_batch_size=8, mode=mode)
  single = make_train_iterator(config, tokenizer, process_index=0, process_count=1)
  halves = [
      make_train_iterator(config, tokenizer, process_index=p, process_count=2) for p in range(2)
  ]
  for _ in range(3):
    first, second = (next(half)["input_ids"] for half in halves)
    chex.assert_shape([first, second], (4, 32))
    assert not set(_sorted_rows(first)) & set(_sorted_rows(second))
    reference = next(single)["input_ids"]
    if mode == "paper":  # one document per row: the halves are the single process's batch
      assert _sorted_rows(np.concatenate([first, second])) == _sorted_rows(reference)


def test_packed_processes_pack_disjoint_documents(tmp_path, char_tokenizer):
  documents = [letter * 3 for letter in "abcdefghijklmnopqrstuvwxyz"]
  config = _files_config(tmp_path, documents, seq_len=4, global_batch_size=4, mode="packed")
  letters = []
  for p in range(2):
    rows = np.concatenate(
        [
            b["input_ids"]
            for b in _take(
                make_train_iterator(config, char_tokenizer, process_index=p, process_count=2), 2
            )
        ]
    )
    letters.append(set(rows.ravel().tolist()) - {char_tokenizer.eos_id})
  assert letters[0] and letters[1] and not letters[0] & letters[1]


@pytest.mark.parametrize("mode", ["paper", "packed"])
def test_restored_state_gives_exactly_the_same_next_batches(tokenizer, mode):
  config = DataConfig(seq_len=32, global_batch_size=8, mode=mode)
  original = make_train_iterator(config, tokenizer)
  _take(original, 3)
  state = original.get_state()
  expected = _take(original, 4)
  resumed = make_train_iterator(config, tokenizer)
  resumed.set_state(state)
  chex.assert_trees_all_equal(_take(resumed, 4), expected)


@pytest.mark.parametrize("mode", ["paper", "packed"])
def test_hugging_face_stream_resumes_exactly_across_epochs(local_hub, tokenizer, mode):
  local_hub.num_shards, local_hub.per_shard = 2, 5  # the batches below run into a second epoch
  config = DataConfig(source="hf", seq_len=8, global_batch_size=2, mode=mode, shuffle_window=3)
  original = make_train_iterator(config, tokenizer)
  _take(original, 4)
  state = original.get_state()
  expected = _take(original, 5)
  resumed = make_train_iterator(config, tokenizer)
  resumed.set_state(state)
  chex.assert_trees_all_equal(_take(resumed, 5), expected)


def test_orbax_checkpoint_round_trip_of_the_iterator(tokenizer, tmp_path):
  original = make_train_iterator(SMALL, tokenizer)
  _take(original, 2)
  with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
    manager.save(2, args=ocp.args.Composite(data=checkpoint_save_args(original)))
    manager.wait_until_finished()
  expected = _take(original, 3)
  resumed = make_train_iterator(SMALL, tokenizer)
  with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
    manager.restore(2, args=ocp.args.Composite(data=checkpoint_restore_args(resumed)))
  chex.assert_trees_all_equal(_take(resumed, 3), expected)


def test_with_a_sharding_batches_are_global_jax_arrays(tokenizer, data_sharding):
  batch = next(make_train_iterator(SMALL, tokenizer, sharding=data_sharding))
  expected = next(make_train_iterator(SMALL, tokenizer))
  for name in ("input_ids", "loss_mask"):
    assert isinstance(batch[name], jax.Array) and batch[name].sharding == data_sharding
    assert len(batch[name].addressable_shards) == jax.device_count()
  chex.assert_trees_all_equal(jax.device_get(batch), expected)


def test_worker_processes_give_the_same_batches(tokenizer):
  config = DataConfig(seq_len=32, global_batch_size=8, mode="packed", num_workers=1)
  with_workers = make_train_iterator(config, tokenizer)
  try:
    batches = _take(with_workers, 2)
  finally:
    with_workers.close()
  in_process = make_train_iterator(
      DataConfig(seq_len=32, global_batch_size=8, mode="packed"), tokenizer
  )
  chex.assert_trees_all_equal(batches, _take(in_process, 2))


@pytest.mark.parametrize(
    "index, count, message",
    [
        (0, 3, "global_batch_size=8 does not divide among process_count=3"),
        (2, 2, "process_index=2 must lie in [0, process_count=2)"),
    ],
)
def test_bad_process_layout_is_named(tokenizer, index, count, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    make_train_iterator(SMALL, tokenizer, process_index=index, process_count=count)
