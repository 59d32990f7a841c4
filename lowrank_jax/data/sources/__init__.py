"""Document sources: the texts one process reads, in the order it reads them.

Four sources give documents (strings):

* ``embedded``: chapters of the King James Bible (:mod:`.bible`), no network;
* ``files``: local ``.txt``/``.jsonl`` files (:mod:`.local_files`);
* ``tfds``: a prepared tfds directory, e.g. C4, read as array_record (:mod:`.tfds_dir`);
* ``hf``: a Hugging Face hub dataset streamed through ``datasets`` (:mod:`.huggingface`).

The first three are random access. Their global order is a permutation of the split
for each epoch: with ``N`` documents and seed ``s``, global position ``e N + j`` holds
document ``pi_{s+e}(j)`` (grain's index shuffle; no shuffle keeps the file order).
Process ``p`` of ``P`` reads global positions ``p, p + P, p + 2P, ...``, so the ``P``
processes together read every position once and a global batch of ``B = P L`` rows
made of each process's next ``L`` rows holds global positions ``[k B, (k + 1) B)``.

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
from lowrank_jax.data.sources import tfds_dir

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
  paths = config.paths if split == "train" else config.validation_paths
  if not paths:
    raise ValueError("validation_paths=(): the files source needs validation files to validate.")
  return grain.MapDataset.source(local_files.read_documents(paths, text_field=config.text_field))


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
    A ``grain.MapDataset`` of strings (embedded, files, tfds) or a
    ``grain.IterDataset`` of strings (hf).
  """
  if split not in SPLITS:
    raise ValueError(f"split={split!r} is unknown; allowed: {SPLITS}.")
  if config.source == "hf":
    return huggingface.HuggingFaceStream(
        huggingface.StreamSpec(
            name=config.dataset,
            subset=config.hf_subset,
            split=_stored_split(config, split),
            text_field=config.text_field,
            shuffle_seed=config.seed if shuffle else None,
            shuffle_buffer=config.hf_shuffle_buffer,
            repeat=repeat,
            process_index=process_index,
            process_count=process_count,
        )
    )
  documents = _random_access_documents(config, split)
  if shuffle:
    documents = documents.shuffle(seed=config.seed)
  if repeat:
    documents = documents.repeat()
  return documents[process_index::process_count]
