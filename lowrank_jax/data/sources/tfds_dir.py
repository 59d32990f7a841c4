"""Documents from a prepared tfds directory, read without TensorFlow.

C4 on tfds is an Apache Beam dataset: we never build it. Users point ``data_dir`` at a
copy prepared elsewhere in the ``array_record`` file format (a local folder or a
``gs://`` bucket). ``tfds.builder`` then reads ``dataset_info.json`` from that folder
(no builder code runs) and ``as_data_source`` gives random access to the records, which
is what grain's shuffling and per-process slicing need.

Example (``tests/data/test_sources.py`` prepares a tiny dataset and reads it back):
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


def _text(record: dict, field: str) -> str:
  value = record[field]
  return value.decode("utf-8") if isinstance(value, bytes) else value


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
    ValueError: ``data_dir`` does not exist, the dataset is not prepared in it, or
      ``split`` is not one of its splits.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

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
  records = builder.as_data_source(split=split)
  return grain.MapDataset.source(records).map(functools.partial(_text, field=text_field))
