"""The training stream: an endless, shuffled, resumable iterator of global batches.

``make_train_iterator`` chains, for this process:

    documents of the train split          (sources: shuffle with seed + epoch, repeat,
      -> this process's positions          positions p, p + P, ... of the global order)
      -> rows of seq_len ids + loss_mask   (preprocess: paper or packed mode)
      -> local batches of B / P rows       (grain batch, made ahead in a thread)
      -> global [B, S] jax.Arrays          (make_array_from_process_local_data)

``num_workers`` grain worker processes make the rows of a random-access source (which
keep one order whatever ``num_workers``); a stream's workers each read a part of their
own and make whole batches, one transfer a batch instead of one a row. A thread keeps
``config.prefetch_batches`` local batches ready, so the input is made while the trainer
waits on the device, not only between its steps (``experiments/bench/input_bench.py``
measures the step's wait on input).

Every stage is a grain dataset, so the iterator is a ``grain.DatasetIterator``: its
``get_state()`` is a small JSON-able dict (positions, not data), and an iterator made
from the same config that receives it through ``set_state`` yields exactly the batches
the original would have yielded next. To checkpoint it with orbax, put
``checkpoint_save_args(iterator)`` / ``checkpoint_restore_args(iterator)`` next to the
model state in an ``ocp.args.Composite``; grain's handler writes one JSON file per
process (``process_<i>-of-<n>.json``).

Example:
  >>> from lowrank_jax.data import DataConfig, load_tokenizer, make_train_iterator
  >>> config = DataConfig(seq_len=16, global_batch_size=4)
  >>> tokenizer = load_tokenizer(config)
  >>> iterator = make_train_iterator(config, tokenizer)
  >>> batch = next(iterator)
  >>> batch["input_ids"].shape, batch["input_ids"].dtype, batch["loss_mask"].shape
  ((4, 16), dtype('int32'), (4, 16))
  >>> state = iterator.get_state()
  >>> expected = next(iterator)
  >>> resumed = make_train_iterator(config, tokenizer)
  >>> resumed.set_state(state)
  >>> bool((next(resumed)["input_ids"] == expected["input_ids"]).all())
  True
"""

from __future__ import annotations

import functools

import grain
import jax

from lowrank_jax.data.config import DataConfig
from lowrank_jax.data.global_batch import ProcessSlice, to_global_batch
from lowrank_jax.data.preprocess import document_rows, in_workers
from lowrank_jax.data.sources import process_documents
from lowrank_jax.data.tokenizers import Tokenizer


def make_train_iterator(
    config: DataConfig,
    tokenizer: Tokenizer,
    *,
    sharding: jax.sharding.Sharding | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.DatasetIterator:
  """Returns the endless, checkpointable iterator of training batches.

  Args:
    config: the data configuration; its ``global_batch_size`` must divide by the
      process count.
    tokenizer: the tokenizer (see :func:`~lowrank_jax.data.tokenizers.load_tokenizer`).
    sharding: the trainer's sharding of a ``[B, S]`` batch. Given, each batch is
      ``{"input_ids", "loss_mask"}`` of global int32 ``jax.Array``s ``[B, S]``;
      ``None`` gives this process's numpy ``[B / P, S]`` arrays.
    process_index: this process's rank (default ``jax.process_index()``).
    process_count: the number of processes (default ``jax.process_count()``).

  Returns:
    A ``grain.DatasetIterator`` with ``get_state``/``set_state``; with
    ``config.num_workers > 0`` call its ``close()`` when done, to stop the workers.
  """
  processes = ProcessSlice.resolve(config.global_batch_size, process_index, process_count)
  documents = process_documents(
      config,
      "train",
      shuffle=True,
      repeat=True,
      process_index=processes.index,
      process_count=processes.count,
  )
  # A stream's workers are readers of their own (see sources): each makes whole batches,
  # which cross to this process one transfer a batch instead of one a row.
  stream = isinstance(documents, grain.IterDataset)
  rows = document_rows(
      documents,
      tokenizer,
      mode=config.mode,
      seq_len=config.seq_len,
      read_threads=config.read_threads,
      num_workers=0 if stream else config.num_workers,
  )
  batches = rows.batch(processes.local_batch_size, drop_remainder=True)
  if stream:
    batches = in_workers(batches, config.num_workers)
  batches = grain.experimental.ThreadPrefetchIterDataset(
      batches, prefetch_buffer_size=config.prefetch_batches
  )
  if sharding is not None:
    batches = batches.map(
        functools.partial(
            to_global_batch, sharding=sharding, global_batch_size=config.global_batch_size
        )
    )
  return iter(batches)


def checkpoint_save_args(iterator: grain.DatasetIterator) -> grain.checkpoint.CheckpointSave:
  """The orbax argument that saves ``iterator``'s state (grain's checkpoint handler)."""
  return grain.checkpoint.CheckpointSave(iterator)


def checkpoint_restore_args(iterator: grain.DatasetIterator) -> grain.checkpoint.CheckpointRestore:
  """The orbax argument that restores a saved state into ``iterator`` (a fresh one, same config)."""
  return grain.checkpoint.CheckpointRestore(iterator)
