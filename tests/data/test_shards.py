"""Streamed shard files: formats, sharding over readers, shuffle, exact and O(1) resume, errors."""

import collections
import functools
import gzip
import json
import re
import shutil
import sys

import numpy as np
import pyarrow
import pyarrow.parquet
import pytest
from tensorboardX.crc32c import crc32c as tensorboardx_crc32c
from tensorboardX.record_writer import RecordWriter
from tensorflow_datasets.proto import tf_example_pb2

from lowrank_jax.data import DataConfig, make_train_iterator
from lowrank_jax.data.preprocess import document_rows
from lowrank_jax.data.sources import process_documents, shard_formats
from lowrank_jax.data.sources.shard_formats import read_shard
from lowrank_jax.data.sources.shards import ShardStream, expand_paths
from lowrank_jax.data.sources.tfrecord import crc32c
from lowrank_jax.data.sources.window_shuffle import StreamReading


def _texts(shard, count):
  return [f"shard {shard} document {j} ünïcode" for j in range(count)]


def _example(text, field="text"):
  example = tf_example_pb2.Example()
  example.features.feature[field].bytes_list.value.append(text.encode("utf-8"))
  example.features.feature["url"].bytes_list.value.append(b"https://example.com")
  return example.SerializeToString()


def write_shard(path, texts, field="text"):
  """Writes ``texts`` in the format ``path``'s name asks for, with reference writers."""
  name = path.name
  if ".tfrecord" in name:  # tensorboardX's TFRecord writer: framing independent of ours
    writer = RecordWriter(str(path))
    for text in texts:
      writer.write(_example(text, field))
    writer.close()
  elif name.endswith(".parquet"):
    table = pyarrow.table({field: texts, "url": ["u"] * len(texts)})
    pyarrow.parquet.write_table(table, path, row_group_size=3)
  else:
    if ".json" in name:
      lines = "".join(json.dumps({field: t, "url": "u"}) + "\n\n" for t in texts)
    else:
      lines = "".join(t + "\n\n" for t in texts)
    data = lines.encode("utf-8")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)


@pytest.mark.parametrize(
    "name",
    [
        "c4-train.00000-of-00004.json.gz",
        "part.jsonl",
        "part.txt",
        "part.txt.gz",
        "part.parquet",
        "c4-train.tfrecord-00000-of-00004",
    ],
)
def test_every_format_reads_back_its_documents_and_resumes_at_each_offset(tmp_path, name):
  texts = _texts(0, 7)
  write_shard(tmp_path / name, texts)
  read = list(read_shard(str(tmp_path / name), offset=0, text_field="text"))
  assert [text for text, _ in read] == texts
  for position, (_, offset) in enumerate(read):
    rest = [text for text, _ in read_shard(str(tmp_path / name), offset=offset, text_field="text")]
    assert rest == texts[position + 1 :]


def test_tfrecord_crc32c_matches_tensorboardx():
  for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
    assert crc32c(data) == tensorboardx_crc32c(data)


def _shard_folder(tmp_path, num_shards, per_shard, suffix=".json.gz"):
  for shard in range(num_shards):
    write_shard(
        tmp_path / f"c4-train.{shard:05d}-of-{num_shards:05d}{suffix}", _texts(shard, per_shard)
    )
  return str(tmp_path / f"c4-train.*{suffix}")


def _stream(pattern, *, index=0, count=1, seed=None, window=4, repeat=False):
  reading = StreamReading(
      text_field="text",
      shuffle_seed=seed,
      window=window,
      repeat=repeat,
      process_index=index,
      process_count=count,
  )
  return ShardStream(expand_paths([pattern]), reading)


@pytest.mark.parametrize("num_shards, readers", [(6, 4), (4, 4), (2, 5), (1, 3)])
def test_readers_split_an_epoch_by_file_or_by_record_without_overlap(tmp_path, num_shards, readers):
  pattern = _shard_folder(tmp_path, num_shards, per_shard=5)
  parts = [list(_stream(pattern, index=r, count=readers, seed=3)) for r in range(readers)]
  everything = [text for shard in range(num_shards) for text in _texts(shard, 5)]
  assert sorted(text for part in parts for text in part) == sorted(everything)
  assert all(parts)


def test_shuffle_is_seeded_and_reorders_shards_and_documents_per_epoch(tmp_path):
  pattern = _shard_folder(tmp_path, 4, per_shard=6)

  def two_epochs(seed):
    iterator = iter(_stream(pattern, seed=seed, window=6, repeat=True))  # 4 windows an epoch
    return [next(iterator) for _ in range(24)], [next(iterator) for _ in range(24)]

  first, second = two_epochs(7)
  stored = [text for shard in range(4) for text in _texts(shard, 6)]
  assert two_epochs(7) == (first, second)
  assert sorted(first) == sorted(second) == sorted(stored)
  assert first != stored and second != first and two_epochs(8)[0] != first
  shard_order = [int(text.split()[1]) for text in first[::6]]
  assert shard_order != sorted(shard_order) or two_epochs(8)[0][::6] != first[::6]


def _counting_reads(monkeypatch):
  """Counts the documents read from shard files from now on."""
  reads = collections.Counter()
  original = shard_formats.read_shard

  def counted(path, **kwargs):
    for document in original(path, **kwargs):
      reads["documents"] += 1
      yield document

  monkeypatch.setattr("lowrank_jax.data.sources.shards.read_shard", counted)
  return reads


@pytest.mark.parametrize("suffix", [".json.gz", ".txt", ".parquet", ".tfrecord-00000-of-00001"])
def test_resume_is_exact_and_reads_at_most_a_window_and_a_shard(tmp_path, monkeypatch, suffix):
  per_shard, window = 10, 4
  pattern = _shard_folder(tmp_path, 5, per_shard=per_shard, suffix=suffix)
  make_stream = functools.partial(
      _stream, pattern, index=1, count=2, seed=11, window=window, repeat=True
  )
  iterator = iter(make_stream())
  reads = _counting_reads(monkeypatch)
  expected = [next(iterator) for _ in range(130)]  # six epochs and a half of 2 shards x 10
  states = []
  iterator = iter(make_stream())
  for _ in range(130):
    states.append(iterator.get_state())
    next(iterator)
  json.dumps(states)  # grain's checkpoint handler writes the state as JSON
  costs = []
  for position in (3, 17, 64, 125):
    resumed = iter(make_stream())
    reads.clear()
    resumed.set_state(states[position])
    assert [next(resumed) for _ in range(5)] == expected[position : position + 5]
    costs.append(reads["documents"])
  assert max(costs) <= window + per_shard + 5


def test_a_state_taken_just_after_a_resume_resumes_exactly(tmp_path):
  pattern = _shard_folder(tmp_path, 3, per_shard=10, suffix=".txt")
  make_stream = functools.partial(_stream, pattern, seed=2, window=4, repeat=True)
  iterator = iter(make_stream())
  [next(iterator) for _ in range(13)]
  resumed = iter(make_stream())
  resumed.set_state(iterator.get_state())
  next(resumed)
  state = resumed.get_state()
  expected = [next(resumed) for _ in range(25)]
  again = iter(make_stream())
  again.set_state(state)
  assert [next(again) for _ in range(25)] == expected


def test_the_last_window_of_a_finite_stream_is_returned_whole(tmp_path):
  pattern = _shard_folder(tmp_path, 3, per_shard=3, suffix=".txt")
  documents = list(_stream(pattern, seed=1, window=4))
  assert sorted(documents) == sorted(t for shard in range(3) for t in _texts(shard, 3))


def _corrupt(tmp_path, name, data):
  (tmp_path / name).write_bytes(data)
  return str(tmp_path / name)


@pytest.mark.parametrize(
    "name, data, message",
    [
        (
            "bad.json.gz",
            gzip.compress(b'{"text": "a"}\n' * 50, mtime=0)[:-30],
            "cannot be read as json lines",
        ),
        ("bad.json.gz", b"not gzip at all", "cannot be read as json lines"),
        ("bad.jsonl", b'{"text": "a"}\n{"text": \n', "holds a line that is not JSON at byte 14"),
        (
            "bad.jsonl",
            b'{"text": "a"}\n{"body": "b"}\n',
            "text_field='text' is missing from the record at byte 14",
        ),
        ("bad.txt", b"fine\n\xff\xfe broken\n", "holds a line that is not UTF-8 at byte 5"),
        ("bad.parquet", b"PAR1 this is no parquet PAR1", "not a parquet file"),
        ("bad.tfrecord-00000-of-00001", b"\x05" * 40, "fails its length CRC"),
    ],
    ids=[
        "truncated-gzip",
        "not-gzip",
        "bad-json",
        "missing-field",
        "bad-utf8",
        "bad-parquet",
        "bad-tfrecord",
    ],
)
def test_a_corrupt_shard_fails_in_one_line_naming_the_file(tmp_path, name, data, message):
  path = _corrupt(tmp_path, name, data)
  with pytest.raises(ValueError, match=re.escape(message)) as error:
    list(read_shard(path, offset=0, text_field="text"))
  assert path in str(error.value) and "\n" not in str(error.value)


def test_a_truncated_tfrecord_and_a_wrong_feature_name_the_file(tmp_path):
  write_shard(tmp_path / "x.tfrecord-00000-of-00001", _texts(0, 2))
  data = (tmp_path / "x.tfrecord-00000-of-00001").read_bytes()
  path = _corrupt(tmp_path, "cut.tfrecord-00000-of-00001", data[:-3])
  with pytest.raises(ValueError, match=re.escape(f"path={path!r} is not a TFRecord file: it ends")):
    list(read_shard(path, offset=0, text_field="text"))
  with pytest.raises(ValueError, match=re.escape("text_field='body' is missing")) as error:
    list(read_shard(str(tmp_path / "x.tfrecord-00000-of-00001"), offset=0, text_field="body"))
  assert "its features are ['text', 'url']" in str(error.value)


def test_missing_shards_fail_when_the_stream_is_made(tmp_path):
  for pattern in (str(tmp_path / "c4-train.*.json.gz"), str(tmp_path / "absent.jsonl")):
    with pytest.raises(ValueError, match=re.escape(f"path={pattern!r} matches no file.")):
      _stream(pattern)


def test_shards_holding_no_document_fail_instead_of_spinning(tmp_path):
  (tmp_path / "empty.txt").write_text("\n\n")
  with pytest.raises(ValueError, match="hold no document"):
    next(iter(_stream(str(tmp_path / "empty.txt"), repeat=True)))


def test_shards_source_trains_and_resumes_through_the_pipeline(tmp_path, tokenizer):
  pattern = _shard_folder(tmp_path, 3, per_shard=8)
  config = DataConfig(
      source="shards",
      paths=(pattern,),
      validation_paths=(pattern,),
      seq_len=16,
      global_batch_size=4,
      mode="packed",
      shuffle_window=5,
  )
  iterator = make_train_iterator(config, tokenizer, process_index=0, process_count=2)
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator)["input_ids"] for _ in range(4)]
  resumed = make_train_iterator(config, tokenizer, process_index=0, process_count=2)
  resumed.set_state(state)
  np.testing.assert_array_equal([next(resumed)["input_ids"] for _ in range(4)], expected)


def test_grain_workers_are_readers_of_their_own_interleaved_in_turn(tmp_path, char_tokenizer):
  """Worker w of W reads as reader w of W (shards w, w + W); grain takes from each in turn."""
  for shard in "abcd":  # letters only: the char tokenizer's alphabet
    texts = [f"s{shard}d{j}" for j in "abc"]
    (tmp_path / f"c4-train.0000{'abcd'.index(shard)}-of-00004.txt").write_text("\n".join(texts))
  config = DataConfig(source="shards", paths=(str(tmp_path / "c4-train.*.txt"),))
  documents = process_documents(
      config, "train", shuffle=False, repeat=False, process_index=0, process_count=1
  )
  rows = document_rows(documents, char_tokenizer, mode="paper", seq_len=8, num_workers=2)
  texts = [char_tokenizer.decode(row["input_ids"]) for row in rows]
  assert texts == [f"s{shard}d{j}" for pair in ("ab", "cd") for j in "abc" for shard in pair]


def test_a_stream_with_grain_workers_batches_in_them_and_resumes_exactly(tmp_path, char_tokenizer):
  """Each worker makes whole batches of its own shards: the first two batches, one from each
  worker, share no shard (rows interleaved across workers would mix them)."""
  for shard in "abcd":
    texts = [f"s{shard}d{j}" for j in "abcdefgh"]
    (tmp_path / f"c4-train.0000{'abcd'.index(shard)}-of-00004.txt").write_text("\n".join(texts))
  config = DataConfig(
      source="shards",
      paths=(str(tmp_path / "c4-train.*.txt"),),
      seq_len=8,
      global_batch_size=4,
      num_workers=2,
      shuffle_window=4,  # a window within an epoch (a worker reads 16 documents an epoch)
  )
  iterator = make_train_iterator(config, char_tokenizer)
  first, second = (
      {char_tokenizer.decode(row)[1] for row in next(iterator)["input_ids"]} for _ in range(2)
  )
  assert not first & second
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator)["input_ids"] for _ in range(6)]
  iterator.close()
  resumed = make_train_iterator(config, char_tokenizer)
  resumed.set_state(state)
  np.testing.assert_array_equal([next(resumed)["input_ids"] for _ in range(6)], expected)
  resumed.close()


# --- tfds directories in TFRecord ----------------------------------------------------------


@pytest.fixture(scope="module")
def tfrecord_tfds_dir(tfds_dir, tfds_texts, tmp_path_factory):
  """The array_record tiny_text dataset, rewritten as tfds' default TFRecord files."""
  root = tmp_path_factory.mktemp("tfds_tfrecord")
  shutil.copytree(f"{tfds_dir}/tiny_text", root / "tiny_text")
  version = root / "tiny_text" / "1.0.0"
  info = json.loads((version / "dataset_info.json").read_text())
  info["fileFormat"] = "tfrecord"
  (version / "dataset_info.json").write_text(json.dumps(info))
  for split, texts in tfds_texts.items():
    next(version.glob(f"tiny_text-{split}.array_record-*")).unlink()
    write_shard(version / f"tiny_text-{split}.tfrecord-00000-of-00001", texts, field="content")
  return str(root)


def test_tfds_tfrecord_directory_streams_without_tensorflow(tfrecord_tfds_dir, tfds_texts):
  config = DataConfig(
      source="tfds", dataset="tiny_text", data_dir=tfrecord_tfds_dir, text_field="content"
  )
  for split, texts in tfds_texts.items():
    documents = process_documents(
        config, split, shuffle=False, repeat=False, process_index=0, process_count=1
    )
    assert list(documents) == texts
  assert "tensorflow" not in sys.modules


def test_restoring_a_state_reads_nothing_until_the_next_document(tmp_path):
  """A checkpoint restore must not fail on the data: the shard is read at the next document."""
  pattern = _shard_folder(tmp_path, 2, per_shard=4, suffix=".jsonl")
  stream = functools.partial(_stream, pattern, seed=5, window=3)
  iterator = iter(stream())
  next(iterator)
  state = iterator.get_state()
  for path in tmp_path.glob("*.jsonl"):
    path.write_text("{broken\n")
  resumed = iter(stream())
  resumed.set_state(state)
  assert resumed.get_state() == state
  with pytest.raises(ValueError, match="holds a line that is not JSON"):
    next(resumed)


def test_cloud_storage_without_gcsfs_says_what_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "gcsfs", None)  # never reaches the network
  pattern = "gs://bucket/c4/en/c4-train.*-of-01024.json.gz"
  with pytest.raises(ValueError, match=re.escape(f"path={pattern!r} cannot be listed")) as error:
    expand_paths([pattern])
  assert "pip install gcsfs" in str(error.value)
