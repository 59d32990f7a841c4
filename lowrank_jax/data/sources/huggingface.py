"""Documents streamed from the Hugging Face hub (e.g. ``allenai/c4``) as a grain dataset.

The ``datasets`` package is an optional extra (``pip install 'lowrank_jax[hf]'``) and
is imported only when a stream is opened. The per-process split
(``datasets.distributed.split_dataset_by_node``: by shard file when they divide evenly,
else by record) and the per-epoch shard order (``shuffle(seed + e)``) happen inside
``datasets``; the documents are then shuffled in windows (:mod:`.window_shuffle`).
``datasets``' own shuffle buffer is not used: it is lost when a stream resumes.

A reader's position is ``{"epoch": e, "stream": s}`` with ``s`` the stream's own
``state_dict()`` (the shard and the offset within it). Resuming opens epoch ``e`` and
``load_state_dict(s)``: ``datasets`` seeks to the shard and reads at most that shard
up to the offset, so a resume costs the same at step 100 as at step 100,000.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
from typing import Any

from lowrank_jax.data.sources.window_shuffle import StreamReading, WindowShuffledStream

_SHUFFLE_LOGGER = "datasets.iterable_dataset"


@contextlib.contextmanager
def _quiet(name: str):
  """Silences the logger ``name`` below errors for the duration of the block."""
  logger = logging.getLogger(name)
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _import_datasets():
  try:
    return importlib.import_module("datasets"), importlib.import_module("datasets.distributed")
  except ImportError:
    raise ImportError(
        "source='hf' needs the optional package 'datasets': pip install 'lowrank_jax[hf]'."
    ) from None


@dataclasses.dataclass(frozen=True)
class HubSplit:
  """A split of a hub dataset.

  Attributes:
    name: the hub dataset, e.g. ``'allenai/c4'``.
    subset: its configuration, e.g. ``'en'``.
    split: the split, e.g. ``'train'``.
  """

  name: str
  subset: str
  split: str


class HuggingFaceStream(WindowShuffledStream):
  """A ``grain.IterDataset`` of document texts streamed through ``datasets``.

  Args:
    hub_split: what to stream.
    reading: how this process reads it.
  """

  def __init__(self, hub_split: HubSplit, reading: StreamReading):
    super().__init__(reading)
    self._hub_split = hub_split

  def open_reader(self, position: dict[str, Any] | None) -> _StreamReader:
    return _StreamReader(self._hub_split, self.reading, position)

  def __str__(self) -> str:
    hub = self._hub_split
    return f"HuggingFaceStream({hub.name}/{hub.subset}:{hub.split})"


class _StreamReader:
  """This process's part of the stream, epoch after epoch, resumable from ``position()``."""

  def __init__(self, hub: HubSplit, reading: StreamReading, position: dict[str, Any] | None):
    self._hub, self._reading = hub, reading
    self._epoch = position["epoch"] if position else 0
    self._stream = self._open()
    self._resuming = bool(position and position["stream"] is not None)
    if self._resuming:  # datasets applies the state at the first record and reports the
      self._stream.load_state_dict(position["stream"])  # stream's start until then
    self._opened_at = position
    self._records = iter(self._stream)
    self._returned_this_epoch = 0
    self._whole_epoch = not position or position["stream"] is None  # read from its start

  def _open(self):
    datasets, distributed = _import_datasets()
    hub, reading = self._hub, self._reading
    stream = datasets.load_dataset(hub.name, hub.subset, split=hub.split, streaming=True)
    if reading.shuffle_seed is not None:  # the shard order only: one shard, a buffer of one
      stream = stream.shuffle(
          seed=reading.shuffle_seed + self._epoch, buffer_size=1, max_buffer_input_shards=1
      )
    return distributed.split_dataset_by_node(
        stream, rank=reading.process_index, world_size=reading.process_count
    )

  def position(self) -> dict[str, Any]:
    if self._resuming:
      return self._opened_at
    return {"epoch": self._epoch, "stream": self._stream.state_dict()}

  def __iter__(self) -> _StreamReader:
    return self

  def _next_record(self) -> dict[str, Any]:
    if not self._resuming:
      return next(self._records)
    self._resuming = False
    with _quiet(_SHUFFLE_LOGGER):  # the state loads now; it warns the buffer (of one) is lost
      return next(self._records)

  def __next__(self) -> str:
    try:
      record = self._next_record()
    except StopIteration:
      if not self._reading.repeat or (self._whole_epoch and not self._returned_this_epoch):
        raise
      self._epoch, self._returned_this_epoch, self._whole_epoch = self._epoch + 1, 0, True
      self._stream = self._open()
      self._records = iter(self._stream)
      record = next(self._records)
    self._returned_this_epoch += 1
    return record[self._reading.text_field]
