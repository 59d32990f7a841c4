"""Documents streamed from the Hugging Face hub (e.g. ``allenai/c4``) as a grain dataset.

The ``datasets`` package is an optional extra (``pip install 'lowrank_jax[hf]'``) and
is imported only when a stream is opened. A streamed dataset has no random access, so
the shuffle (a buffer of ``shuffle_buffer`` records, seeded with ``seed + epoch``) and
the per-process split (``datasets.distributed.split_dataset_by_node``) happen inside
``datasets``; this module wraps the result as a checkpointable ``grain.IterDataset``.

The iterator's state is ``{"epoch": e, "position": n}``: the records of epoch ``e`` this
process has already returned. Restoring reopens the stream and skips ``n`` records,
which gives back exactly the same next document (at the price of re-reading them).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import grain


def _import_datasets():
  try:
    return importlib.import_module("datasets"), importlib.import_module("datasets.distributed")
  except ImportError:
    raise ImportError(
        "source='hf' needs the optional package 'datasets': pip install 'lowrank_jax[hf]'."
    ) from None


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """What to stream and in which order.

  Attributes:
    name: the hub dataset, e.g. ``'allenai/c4'``.
    subset: its configuration, e.g. ``'en'``.
    split: the split, e.g. ``'train'``.
    text_field: the record field holding the text.
    shuffle_seed: ``None`` streams in file order; an integer shuffles epoch ``e`` with
      seed ``shuffle_seed + e``.
    shuffle_buffer: records held by the shuffle buffer.
    repeat: start a new epoch when the stream ends (training) or stop (validation).
    process_index: this process's rank.
    process_count: the number of processes reading disjoint parts of the stream.
  """

  name: str
  subset: str
  split: str
  text_field: str
  shuffle_seed: int | None
  shuffle_buffer: int
  repeat: bool
  process_index: int
  process_count: int


class HuggingFaceStream(grain.IterDataset):
  """A ``grain.IterDataset`` of document texts streamed through ``datasets``."""

  def __init__(self, spec: StreamSpec):
    super().__init__()
    self._spec = spec

  def __iter__(self) -> grain.DatasetIterator:
    return _StreamIterator(self._spec)

  def __str__(self) -> str:
    return f"HuggingFaceStream({self._spec.name}/{self._spec.subset}:{self._spec.split})"


class _StreamIterator(grain.DatasetIterator):
  """Reads the stream lazily; its state counts the records returned in this epoch."""

  def __init__(self, spec: StreamSpec):
    super().__init__()
    self._spec = spec
    self._epoch = 0
    self._position = 0
    self._records = None

  def _open(self):
    datasets, distributed = _import_datasets()
    spec = self._spec
    stream = datasets.load_dataset(spec.name, spec.subset, split=spec.split, streaming=True)
    stream = distributed.split_dataset_by_node(
        stream, rank=spec.process_index, world_size=spec.process_count
    )
    if spec.shuffle_seed is not None:
      stream = stream.shuffle(seed=spec.shuffle_seed + self._epoch, buffer_size=spec.shuffle_buffer)
    return iter(stream.skip(self._position))

  def __next__(self) -> str:
    if self._records is None:
      self._records = self._open()
    try:
      record = next(self._records)
    except StopIteration:
      if not self._spec.repeat or self._position == 0:
        raise
      self._epoch, self._position = self._epoch + 1, 0
      self._records = self._open()
      record = next(self._records)
    self._position += 1
    return record[self._spec.text_field]

  def get_state(self) -> dict[str, Any]:
    return {"epoch": self._epoch, "position": self._position}

  def set_state(self, state: dict[str, Any]) -> None:
    self._epoch, self._position = state["epoch"], state["position"]
    self._records = None
