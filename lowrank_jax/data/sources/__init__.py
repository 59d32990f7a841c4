"""Document sources: the texts one process reads, in the order it reads them.

Five sources give documents (strings):

* ``embedded``: chapters of the King James Bible (:mod:`.bible`), no network;
* ``files``: small local text files, held in memory (:mod:`.local_files`);
* ``shards``: shard files streamed from disk or ``gs://``, e.g. C4's json.gz
  (:mod:`.shards`);
* ``tfds``: a prepared tfds directory, e.g. C4, in array_record (random access) or
  TFRecord (streamed as shards) (:mod:`.tfds_dir`);
* ``hf``: a Hugging Face hub dataset streamed through ``datasets`` (:mod:`.huggingface`).

Random-access sources (embedded, files, tfds in array_record) have a global order that
is a permutation of the split for each epoch: with ``N`` documents and seed ``s``,
global position ``e N + j`` holds document ``pi_{s+e}(j)`` (grain's index shuffle; no
shuffle keeps the file order). Process ``p`` of ``P`` reads global positions
``p, p + P, p + 2P, ...``, so the ``P`` processes together read every position once and
a global batch of ``B = P L`` rows made of each process's next ``L`` rows holds global
positions ``[k B, (k + 1) B)``.

Streamed sources (shards, tfds in TFRecord, hf) split the shards among processes (by
file, or by record when there are fewer shards than processes), and each process
shuffles its part in windows of ``shuffle_window`` documents (:mod:`.window_shuffle`);
their checkpoint is a position in the stream, so resuming costs the same at any step.

Example:
  >>> from lowrank_jax.data.config import DataConfig
  >>> from lowrank_jax.data.sources import process_documents
  >>> config = DataConfig()
  >>> first = process_documents(config, "validation", shuffle=False, repeat=False,
  ...                           process_index=0, process_count=2)
  >>> second = process_documents(config, "validation", shuffle=False, repeat=False,
  ...                            process_index=1, process_count=2)
  >>> len(first), len(second)
  (30, 29)
"""

from __future__ import annotations

import grain

from lowrank_jax.data.config import DataConfig
from lowrank_jax.data.sources import bible
from lowrank_jax.data.sources import huggingface
from lowrank_jax.data.sources import local_files
from lowrank_jax.data.sources import shards
from lowrank_jax.data.sources import tfds_dir
from lowrank_jax.data.sources import window_shuffle

SPLITS = ("train", "validation")


def _stored_split(config: DataConfig, split: str) -> str:
  """The tfds/hf split name behind the logical ``'train'`` or ``'validation'``."""
  return config.train_split if split == "train" else config.validation_split


def _random_access_documents(config: DataConfig, split: str) -> grain.MapDataset:
  """All documents of ``split`` of a random-access source, in stored order."""
  if config.source == "embedded":
    return grain.MapDataset.source(bible.chapters(split))
  if config.source == "tfds":
    return tfds_dir.tfds_documents(
        config.dataset,
        data_dir=config.data_dir,
        split=_stored_split(config, split),
        text_field=config.text_field,
    )
  return grain.MapDataset.source(
      local_files.read_documents(_paths(config, split), text_field=config.text_field)
  )


def _paths(config: DataConfig, split: str) -> tuple[str, ...]:
  """The files or shards source's patterns for ``split``."""
  paths = config.paths if split == "train" else config.validation_paths
  if not paths:
    raise ValueError(
        f"validation_paths=(): the {config.source} source needs validation files to validate."
    )
  return paths


def _shard_files(config: DataConfig, split: str) -> tuple[str, ...] | None:
  """The shards a streamed source reads; ``None`` for a random-access source."""
  if config.source == "shards":
    return shards.expand_paths(_paths(config, split))
  if config.source == "tfds":
    return tfds_dir.tfrecord_files(
        config.dataset, data_dir=config.data_dir, split=_stored_split(config, split)
    )
  return None


def process_documents(
    config: DataConfig,
    split: str,
    *,
    shuffle: bool,
    repeat: bool,
    process_index: int,
    process_count: int,
) -> grain.MapDataset | grain.IterDataset:
  """Returns the documents that process ``process_index`` reads from ``split``.

  Args:
    config: the data configuration (source, names, paths, seed).
    split: ``'train'`` or ``'validation'``; mapped to ``config.train_split`` or
      ``config.validation_split`` for tfds and hf, to ``paths`` or
      ``validation_paths`` for files.
    shuffle: reshuffle each epoch with ``config.seed + epoch``.
    repeat: repeat epochs forever (training) or read the split once (validation).
    process_index: this process's rank, in ``[0, process_count)``.
    process_count: the number of processes that share the split.

  Returns:
    A ``grain.MapDataset`` of strings (embedded, files, tfds in array_record) or a
    ``grain.IterDataset`` of strings (shards, tfds in TFRecord, hf).
  """
  if split not in SPLITS:
    raise ValueError(f"split={split!r} is unknown; allowed: {SPLITS}.")
  reading = window_shuffle.StreamReading(
      text_field=config.text_field,
      shuffle_seed=config.seed if shuffle else None,
      window=config.shuffle_window,
      repeat=repeat,
      process_index=process_index,
      process_count=process_count,
  )
  if config.source == "hf":
    hub_split = huggingface.HubSplit(config.dataset, config.hf_subset, _stored_split(config, split))
    return huggingface.HuggingFaceStream(hub_split, reading)
  files = _shard_files(config, split)
  if files is not None:
    return shards.ShardStream(files, reading)
  documents = _random_access_documents(config, split)
  if shuffle:
    documents = documents.shuffle(seed=config.seed)
  if repeat:
    documents = documents.repeat()
  return documents[process_index::process_count]
