"""Shuffling a sequential stream in windows, so that its checkpoint is a position, not a buffer.

A stream (shard files, a hub dataset) can only be read in order. The usual shuffle
buffer's state is its content, thousands of documents, which a checkpoint cannot hold;
``datasets`` drops it on resume, which breaks exact resumption. A window shuffle
instead cuts the stream into consecutive windows of ``W`` documents and returns window
``k`` in the order of a permutation drawn from ``(seed, k)``:

    out[k W + i] = in[k W + pi_k(i)],    pi_k = permutation(W; seed, k)

Its state is where window ``k`` starts in the stream (the reader's own position, a few
integers), ``k``, and how many of the window's documents were returned. Resuming opens
the reader at that position and re-reads one window: at most ``W`` documents, however
far into the corpus the checkpoint was taken. Documents move up to ``W - 1`` places,
which with ``W`` in the thousands and shard order shuffled per epoch (the readers do
that) mixes a web corpus as well as a buffer of the same size.

A reader is any iterator of documents with ``position()``, a JSON-able value from which
``open_reader(position)`` resumes with the same next document; ``open_reader(None)``
starts at the beginning. Readers are opened at the first document asked for, so making
or restoring an iterator touches no file or network. A streamed source subclasses
:class:`WindowShuffledStream` and says how to open its reader; :class:`StreamReading`
holds what every streamed source is told (its text field, order, end and process).

Example:
  >>> from lowrank_jax.data.sources.window_shuffle import WindowShuffleIterator
  >>> class Counter:
  ...   def __init__(self, start): self.next = start or 0
  ...   def position(self): return self.next
  ...   def __iter__(self): return self
  ...   def __next__(self):
  ...     if self.next == 7: raise StopIteration
  ...     self.next += 1
  ...     return self.next - 1
  >>> stream = WindowShuffleIterator(Counter, window=3, seed=(0,))
  >>> first = [next(stream) for _ in range(4)]
  >>> state = stream.get_state()
  >>> rest = list(stream)
  >>> sorted(first + rest), sorted(first[:3])
  ([0, 1, 2, 3, 4, 5, 6], [0, 1, 2])
  >>> resumed = WindowShuffleIterator(Counter, window=3, seed=(0,))
  >>> resumed.set_state(state)
  >>> list(resumed) == rest
  True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import dataclasses
import itertools
from typing import Any, Protocol

import grain
import numpy as np


class Reader(Protocol):
  """A sequential reader whose position can be saved and reopened."""

  def position(self) -> Any:
    """A JSON-able value from which ``open_reader`` resumes at the next document."""

  def __next__(self) -> str:
    """The next document; ``StopIteration`` at the end of a finite stream."""

  def __iter__(self) -> Iterator[str]:
    """The reader itself."""


class WindowShuffleIterator(grain.DatasetIterator):
  """A ``grain.DatasetIterator`` returning a reader's documents shuffled window by window.

  Args:
    open_reader: ``open_reader(None)`` opens the stream at its start and
      ``open_reader(position)`` at a position a reader returned.
    window: documents per window ``W``; 1 keeps the stream's order.
    seed: integers that seed the permutation of each window (with the window's
      number); ``None`` keeps the stream's order.
  """

  def __init__(
      self, open_reader: Callable[[Any], Reader], *, window: int, seed: Sequence[int] | None
  ):
    super().__init__()
    self._open_reader = open_reader
    self._window = window if seed is not None else 1
    self._seed = seed
    self._reader: Reader | None = None  # opened at the first document, not here
    self._start = None  # where the current window starts; None: the stream's start
    self._number = 0
    self._documents: list[str] = []
    self._returned = 0
    self._restored: dict[str, Any] | None = None  # a state to resume from at the next read

  def _read_window(self) -> None:
    if self._reader is None:
      self._reader = self._open_reader(self._start)
    self._start = self._reader.position()
    documents = list(itertools.islice(self._reader, self._window))
    if self._seed is not None:
      order = np.random.default_rng([*self._seed, self._number]).permutation(len(documents))
      documents = [documents[i] for i in order]
    self._documents, self._returned = documents, 0

  def _resume(self, state: dict[str, Any]) -> None:
    self._reader, self._start = None, state["window_start"]
    self._number = state["window"]
    self._read_window()
    self._returned = state["returned"]

  def __next__(self) -> str:
    if self._restored is not None:
      self._resume(self._restored)
      self._restored = None
    if self._returned == len(self._documents):
      if self._documents:
        self._number += 1
      self._read_window()
      if not self._documents:
        raise StopIteration
    self._returned += 1
    return self._documents[self._returned - 1]

  def get_state(self) -> dict[str, Any]:
    if self._restored is not None:
      return self._restored
    return {"window_start": self._start, "window": self._number, "returned": self._returned}

  def set_state(self, state: dict[str, Any]) -> None:
    """Resumes at ``state``; the stream is opened at the next document, not here, so
    that restoring a checkpoint never fails on the data."""
    self._restored = state


@dataclasses.dataclass(frozen=True)
class StreamReading:
  """How one process reads a streamed source.

  Attributes:
    text_field: the record's field (JSON field, parquet column, Example feature)
      holding the text.
    shuffle_seed: ``None`` reads in stored order; an integer shuffles the shard order
      of each epoch and the documents in windows.
    window: documents per shuffle window.
    repeat: start a new epoch at the end of the stream (training) or stop (validation).
    process_index: this process's rank.
    process_count: the number of processes reading disjoint parts of the stream.
  """

  text_field: str
  shuffle_seed: int | None
  window: int
  repeat: bool
  process_index: int
  process_count: int


class WindowShuffledStream(grain.IterDataset):
  """A ``grain.IterDataset`` of a reader's documents, shuffled in windows.

  Subclasses define :meth:`open_reader`; each reader (a process, or a grain worker
  within one: :meth:`reader_index`) permutes its windows with its own seed.

  Args:
    reading: how this process reads the stream.
  """

  def __init__(self, reading: StreamReading):
    super().__init__()
    self.reading = reading

  def open_reader(self, position: Any) -> Reader:
    """This reader's stream at ``position`` (``None``: its start)."""
    raise NotImplementedError

  def reader_index(self) -> int:
    """Which reader of the stream this is (seeds its windows)."""
    return self.reading.process_index

  def __iter__(self) -> grain.DatasetIterator:
    seed = self.reading.shuffle_seed
    return WindowShuffleIterator(
        self.open_reader,
        window=self.reading.window,
        seed=None if seed is None else (seed, self.reader_index()),
    )
