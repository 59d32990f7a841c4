"""Bad configurations fail at construction with one-line errors that name the value."""

import re

import pytest

from lowrank_jax.data import DataConfig


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"source": "c5"}, "source='c5'"),
        ({"mode": "stacked"}, "mode='stacked'"),
        ({"tokenizer": "gpt2"}, "tokenizer='gpt2'"),
        ({"seq_len": 1}, "seq_len=1"),
        ({"seq_len": 0}, "seq_len=0"),
        ({"global_batch_size": 0}, "global_batch_size=0"),
        ({"vocab_size": -5}, "vocab_size=-5"),
        ({"validation_tokens": 0}, "validation_tokens=0"),
        ({"num_workers": -1}, "num_workers=-1"),
        ({"prefetch_batches": -1}, "prefetch_batches=-1"),
        ({"shuffle_window": 0}, "shuffle_window=0"),
        ({"seed": -1}, "seed=-1"),
        ({"source": "tfds"}, "data_dir=None"),
        ({"source": "files"}, "paths=()"),
        ({"source": "files", "paths": "a.txt"}, "paths='a.txt'"),
        ({"source": "shards"}, "paths=(): the shards source"),
        ({"source": "hf", "num_workers": 2}, "num_workers=2"),
    ],
)
def test_bad_field_raises_one_line_error_naming_it(fields, named):
  with pytest.raises(ValueError, match=re.escape(named)) as error:
    DataConfig(**fields)
  assert "\n" not in str(error.value)


def test_defaults_follow_the_paper_protocol():
  config = DataConfig()
  assert (
      config.seq_len,
      config.global_batch_size,
      config.seed,
      config.validation_tokens,
      config.mode,
  ) == (256, 512, 42, 10_000_000, "paper")


@pytest.mark.parametrize("source, dataset", [("tfds", "c4/en:3.1.0"), ("hf", "allenai/c4")])
def test_dataset_defaults_to_c4_of_the_source(source, dataset):
  assert DataConfig(source=source, data_dir="/somewhere").dataset == dataset


def test_path_lists_become_tuples_so_the_config_stays_hashable():
  config = DataConfig(source="files", paths=["a.txt"], validation_paths=["b.txt"])
  assert config.paths == ("a.txt",) and config.validation_paths == ("b.txt",)
  hash(config)
