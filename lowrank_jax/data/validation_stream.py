"""The validation stream: the same rows in a fixed order, until a token budget is spent.

The paper evaluates on C4 validation, preprocessed like training, until 10M non-pad
tokens have been seen. ``make_validation_batches`` reads the validation split in its
stored order (no shuffle), each process its positions ``p, p + P, ...``, and yields
global batches ``b_1, b_2, ...`` while

    sum_{i < k} n(b_i) < validation_tokens,    n(b) = sum(b["loss_mask"])

i.e. it stops after the first batch that reaches the budget, or when the split is
exhausted. A process whose part runs out first fills its rows with padding
(``loss_mask`` 0), so every process yields the same number of batches of the same
shape; the stream ends at the first global batch with no real token. With a sharding,
``n(b)`` is summed over the global array, so all processes stop together.

Example:
  >>> from lowrank_jax.data import DataConfig, load_tokenizer, make_validation_batches
  >>> config = DataConfig(seq_len=32, global_batch_size=8, validation_tokens=100)
  >>> batches = list(make_validation_batches(config, load_tokenizer(config)))
  >>> len(batches), int(sum(batch["loss_mask"].sum() for batch in batches[:-1])) < 100
  (1, True)
"""

from __future__ import annotations

from collections.abc import Iterator
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from lowrank_jax.data.config import DataConfig
from lowrank_jax.data.global_batch import Batch, ProcessSlice, to_global_batch
from lowrank_jax.data.preprocess import document_rows
from lowrank_jax.data.sources import process_documents
from lowrank_jax.data.tokenizers import Tokenizer


def _padding_row(seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
  return {
      "input_ids": np.full(seq_len, pad_id, dtype=np.int32),
      "loss_mask": np.zeros(seq_len, dtype=np.int32),
  }


def _local_batches(
    rows: Iterator[dict[str, np.ndarray]], padding: dict[str, np.ndarray], batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
  """Endless local batches: the rows, then padding rows forever."""
  padded = itertools.chain(rows, itertools.repeat(padding))
  while True:
    chunk = list(itertools.islice(padded, batch_size))
    yield {name: np.stack([row[name] for row in chunk]) for name in padding}


def make_validation_batches(
    config: DataConfig,
    tokenizer: Tokenizer,
    *,
    sharding: jax.sharding.Sharding | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    batch_size: int | None = None,
) -> Iterator[Batch]:
  """Returns the validation batches, in a fixed order, until ``config.validation_tokens``.

  Args:
    config: the data configuration (source, tokenizer settings, ``mode``, ``seq_len``,
      ``validation_tokens``).
    tokenizer: the tokenizer used for training.
    sharding: the trainer's sharding of a ``[B, S]`` batch (global ``jax.Array``s);
      ``None`` gives numpy arrays and needs a single process.
    process_index: this process's rank (default ``jax.process_index()``).
    process_count: the number of processes (default ``jax.process_count()``).
    batch_size: global rows per batch (default ``config.global_batch_size``).

  Returns:
    An iterator of ``{"input_ids": int32[B, S], "loss_mask": int32[B, S]}``; the
    arguments are checked when it is made.
  """
  batch_size = config.global_batch_size if batch_size is None else batch_size
  processes = ProcessSlice.resolve(batch_size, process_index, process_count)
  if sharding is None and processes.count > 1:
    raise ValueError(
        f"process_count={processes.count}: counting the validation budget over processes"
        " needs the trainer's sharding (global arrays)."
    )
  documents = process_documents(
      config,
      "validation",
      shuffle=False,
      repeat=False,
      process_index=processes.index,
      process_count=processes.count,
  )
  rows = document_rows(
      documents,
      tokenizer,
      mode=config.mode,
      seq_len=config.seq_len,
      read_threads=config.read_threads,
      num_workers=config.num_workers,
  )
  local_batches = _local_batches(
      iter(rows), _padding_row(config.seq_len, tokenizer.pad_id), processes.local_batch_size
  )
  global_batches = (to_global_batch(batch, sharding, batch_size) for batch in local_batches)
  return _until_budget(global_batches, config.validation_tokens)


def _until_budget(batches: Iterator[Batch], budget: int) -> Iterator[Batch]:
  """Yields batches until ``budget`` non-pad tokens are reached or a batch has none."""
  seen = 0
  for batch in batches:
    tokens = int(jnp.sum(batch["loss_mask"]))
    if tokens == 0:
      return
    yield batch
    seen += tokens
    if seen >= budget:
      return
