"""Documents from a prepared tfds directory, read without TensorFlow.

C4 on tfds is an Apache Beam dataset: we never build it. Users point ``data_dir`` at a
copy prepared elsewhere (a local folder or a ``gs://`` bucket). ``tfds.builder`` reads
``dataset_info.json`` from that folder (no builder code runs) and tells the file format:

* ``array_record`` or ``parquet``: ``as_data_source`` gives random access to the
  records (:func:`tfds_documents`), which grain's global shuffle and per-process
  slicing use;
* ``tfrecord`` (tfds' default, how most prepared C4 copies are stored): no random
  access; :func:`tfrecord_files` lists the split's shards, which are streamed like
  any shard files (:mod:`.shards`, :mod:`.tfrecord`).

Example (``tests/data/test_sources.py`` prepares tiny datasets in both formats):
  >>> from lowrank_jax.data.sources.tfds_dir import tfds_documents
  >>> tfds_documents("c4/en:3.1.0", data_dir="/no/such/dir", split="train", text_field="text")
  Traceback (most recent call last):
  ...
  ValueError: data_dir='/no/such/dir' does not exist.
"""

from __future__ import annotations

import functools

from etils import epath
import grain
import tensorflow_datasets as tfds


def _text(record: dict, field: str) -> str:
  value = record[field]
  return value.decode("utf-8") if isinstance(value, bytes) else value


def _prepared(name: str, data_dir: str, split: str) -> tfds.core.DatasetBuilder:
  """The builder of a dataset prepared under ``data_dir`` that has ``split``; checks all three."""
  if not epath.Path(data_dir).exists():
    raise ValueError(f"data_dir={data_dir!r} does not exist.")
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f"dataset={name!r} is not prepared under data_dir={data_dir!r}.") from None
  if not builder.info.splits:
    raise ValueError(f"dataset={name!r} is not prepared under data_dir={data_dir!r}.")
  if split not in builder.info.splits:
    raise ValueError(
        f"split={split!r} is not a split of {name!r}; allowed: {sorted(builder.info.splits)}."
    )
  return builder


def tfrecord_files(name: str, *, data_dir: str, split: str) -> tuple[str, ...] | None:
  """The TFRecord shards of ``split``, or ``None`` if the dataset has random access.

  Args:
    name: the tfds name, with config and version, e.g. ``'c4/en:3.1.0'``.
    data_dir: the tfds data directory that holds ``<name>/<config>/<version>/``.
    split: the split, e.g. ``'train'``.

  Raises:
    ValueError: as :func:`tfds_documents`.
  """
  builder = _prepared(name, data_dir, split)
  if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
    return None
  return tuple(str(path) for path in builder.info.splits[split].filepaths)


def tfds_documents(name: str, *, data_dir: str, split: str, text_field: str) -> grain.MapDataset:
  """Returns one split of a prepared tfds dataset as a random-access dataset of texts.

  Args:
    name: the tfds name, with config and version, e.g. ``'c4/en:3.1.0'``.
    data_dir: the tfds data directory that holds ``<name>/<config>/<version>/``.
    split: the split to read, e.g. ``'train'`` or ``'validation'``.
    text_field: the feature that holds a document's text.

  Returns:
    A ``grain.MapDataset`` whose element ``i`` is the text of record ``i``.

  Raises:
    ValueError: ``data_dir`` does not exist, the dataset is not prepared in it,
      ``split`` is not one of its splits, or it is stored as TFRecord.
  """
  builder = _prepared(name, data_dir, split)
  if builder.info.file_format == tfds.core.FileFormat.TFRECORD:
    raise ValueError(
        f"dataset={name!r} under data_dir={data_dir!r} is TFRecord, which has no random"
        " access; stream it (source='tfds' does) or read tfrecord_files()."
    )
  records = builder.as_data_source(split=split)
  return grain.MapDataset.source(records).map(functools.partial(_text, field=text_field))
