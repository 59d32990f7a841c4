"""From documents to rows of ``seq_len`` token ids with a loss mask.

A row is ``{"input_ids": int32[S], "loss_mask": int32[S]}``; ``loss_mask`` is 1 on
real tokens (EOS included) and 0 on padding. The model's loss is the shifted
next-token cross-entropy: the prediction at position ``t`` of token ``t + 1`` counts
with weight ``loss_mask[t + 1]``.

``paper`` mode (arXiv 2505.22922, experimental protocol, one document per row, no packing). For a document with
ids ``x_0 .. x_{m-1}`` let ``n = min(m, S - 1)``; then

    input_ids[t] = x_t (t < n),   eos (t = n),   pad (t > n)
    loss_mask[t] = 1 (t <= n),    0 (t > n)

which is what the references get from ``tokenizer(text, max_length=S,
truncation=True, padding="max_length")`` with t5-base: HF truncates the text to
``S - 1`` ids so that the EOS it appends always survives.

``packed`` mode: documents, each followed by EOS, are concatenated into one stream
``z`` that is cut into rows ``z[k S : (k + 1) S]``: no token is dropped and no position
padded (``loss_mask`` all ones), except in the last row of a finite stream, which is
right-padded and masked.

Example:
  >>> import grain
  >>> from lowrank_jax.data.preprocess import paper_row, packed_rows
  >>> row = paper_row([5, 6, 7], seq_len=6, pad_id=0, eos_id=1)
  >>> row["input_ids"].tolist(), row["loss_mask"].tolist()
  ([5, 6, 7, 1, 0, 0], [1, 1, 1, 1, 0, 0])
  >>> paper_row([5, 6, 7, 8, 9], seq_len=4, pad_id=0, eos_id=1)["input_ids"].tolist()
  [5, 6, 7, 1]
  >>> documents = grain.MapDataset.source([[5, 6, 7], [8], [9, 10]]).to_iter_dataset()
  >>> [row["input_ids"].tolist() for row in packed_rows(documents, seq_len=4, pad_id=0, eos_id=1)]
  [[5, 6, 7, 1], [8, 1, 9, 10], [1, 0, 0, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence
import functools

from absl import flags
import grain
import numpy as np

from lowrank_jax.data.config import MODES
from lowrank_jax.data.tokenizers import Tokenizer

_SEGMENT_IDS = "input_ids_segment_ids"  # added by grain's ConcatThenSplit: 0 on padding.


def paper_row(
    ids: Sequence[int], *, seq_len: int, pad_id: int, eos_id: int
) -> dict[str, np.ndarray]:
  """One document's row in ``paper`` mode: truncate to ``seq_len - 1``, add EOS, pad.

  Args:
    ids: the document's token ids, without EOS.
    seq_len: the row length ``S``.
    pad_id: the id of padded positions.
    eos_id: the id appended after the (possibly truncated) document.

  Returns:
    ``{"input_ids": int32[S], "loss_mask": int32[S]}``.
  """
  kept = min(len(ids), seq_len - 1)
  input_ids = np.full(seq_len, pad_id, dtype=np.int32)
  input_ids[:kept] = ids[:kept]
  input_ids[kept] = eos_id
  loss_mask = (np.arange(seq_len) <= kept).astype(np.int32)
  return {"input_ids": input_ids, "loss_mask": loss_mask}


def _tokenize_paper(text: str, *, tokenizer: Tokenizer, seq_len: int) -> dict[str, np.ndarray]:
  return paper_row(
      tokenizer.encode(text), seq_len=seq_len, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id
  )


def _with_eos(ids: Sequence[int], *, eos_id: int) -> dict[str, np.ndarray]:
  return {"input_ids": np.asarray([*ids, eos_id], dtype=np.int32)}


def _packed_row(packed: dict[str, np.ndarray], *, pad_id: int) -> dict[str, np.ndarray]:
  loss_mask = (packed[_SEGMENT_IDS] > 0).astype(np.int32)
  return {
      "input_ids": np.where(loss_mask == 1, packed["input_ids"], pad_id).astype(np.int32),
      "loss_mask": loss_mask,
  }


def packed_rows(
    token_ids: grain.IterDataset, *, seq_len: int, pad_id: int, eos_id: int
) -> grain.IterDataset:
  """``packed`` mode: appends EOS to each document and cuts the concatenation into rows.

  Args:
    token_ids: documents as sequences of token ids, without EOS.
    seq_len: the row length ``S``.
    pad_id: the id that pads the last row of a finite stream.
    eos_id: the id appended after every document.

  Returns:
    An iterable dataset of ``{"input_ids": int32[S], "loss_mask": int32[S]}`` whose
    state checkpoints exactly (grain's ``ConcatThenSplitIterDataset``).
  """
  with_eos = token_ids.map(functools.partial(_with_eos, eos_id=eos_id))
  packed = grain.experimental.ConcatThenSplitIterDataset(
      with_eos, length_struct={"input_ids": seq_len}
  )
  return packed.map(functools.partial(_packed_row, pad_id=pad_id))


def _as_iter_dataset(
    dataset: grain.MapDataset | grain.IterDataset, *, read_threads: int, num_workers: int
) -> grain.IterDataset:
  """Runs the maps ahead: a random-access dataset's in threads and, if asked, either kind's
  in worker processes (a stream must take grain's per-worker slice: shards do, hf does not)."""
  if isinstance(dataset, grain.MapDataset):
    read_options = grain.ReadOptions(
        num_threads=read_threads, prefetch_buffer_size=4 * read_threads
    )
    dataset = dataset.to_iter_dataset(read_options)
  return in_workers(dataset, num_workers)


def in_workers(dataset: grain.IterDataset, num_workers: int) -> grain.IterDataset:
  """Runs ``dataset`` in ``num_workers`` grain worker processes (0: in this process).

  Each worker takes grain's slice of the dataset's source and its elements come back
  one by one, in turn; every element crosses the process boundary on its own, so
  workers pay off for elements that cost more to make than to send (batches, not rows).
  """
  if not num_workers:
    return dataset
  if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; use their defaults.
    flags.FLAGS.mark_as_parsed()
  return dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))


def document_rows(
    documents: grain.MapDataset | grain.IterDataset,
    tokenizer: Tokenizer,
    *,
    mode: str,
    seq_len: int,
    read_threads: int = 1,
    num_workers: int = 0,
) -> grain.IterDataset:
  """Tokenizes documents and makes rows of ``seq_len`` ids in ``mode``.

  Tokenizing is the costly step: for a random-access dataset it runs ahead in
  ``read_threads`` threads of each of ``num_workers`` worker processes (or of this
  process); a stream's, in each worker. Packing runs after the workers, in order, so
  the rows of a random-access dataset do not depend on ``num_workers`` or
  ``read_threads``. A stream's do depend on ``num_workers``, as each worker reads a part
  of its own: keep it when resuming.

  Args:
    documents: document texts, random access or iterable.
    tokenizer: the :class:`~lowrank_jax.data.tokenizers.Tokenizer`.
    mode: ``'paper'`` or ``'packed'`` (see the module docstring).
    seq_len: the row length, at least 2.
    read_threads: threads that tokenize ahead of the consumer.
    num_workers: worker processes that tokenize (0: this process); a stream must
      take grain's per-worker slice (shards do).

  Returns:
    An iterable dataset of rows ``{"input_ids": int32[S], "loss_mask": int32[S]}``.
  """
  if mode not in MODES:
    raise ValueError(f"mode={mode!r} is unknown; allowed: {MODES}.")
  if seq_len < 2:
    raise ValueError(f"seq_len={seq_len} is too short: a row needs at least 2 tokens.")
  if mode == "paper":
    tokenize = functools.partial(_tokenize_paper, tokenizer=tokenizer, seq_len=seq_len)
  else:
    tokenize = tokenizer.encode
  rows = _as_iter_dataset(
      documents.map(tokenize), read_threads=read_threads, num_workers=num_workers
  )
  if mode == "paper":
    return rows
  return packed_rows(rows, seq_len=seq_len, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id)
