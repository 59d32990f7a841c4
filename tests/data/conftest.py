"""Shared fixtures: one embedded tokenizer per test session, trained into a temporary cache."""

import jax
import pytest
import tensorflow_datasets as tfds

from lowrank_jax.data import DataConfig, load_tokenizer
from lowrank_jax.data import tokenizer_training
from reference_packages import require


@pytest.fixture(scope="session")
def tokenizer_cache(tmp_path_factory):
  """A private tokenizer cache, so that tests never read or write the user's."""
  cache = tmp_path_factory.mktemp("lowrank_jax_cache")
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(tokenizer_training.CACHE_ENV, str(cache))
    yield cache


@pytest.fixture(scope="session")
def tokenizer(tokenizer_cache):
  """The default embedded tokenizer (8192 pieces), trained once per session."""
  del tokenizer_cache
  return load_tokenizer(DataConfig())


class CharTokenizer:
  """A transparent tokenizer for hand computations: id = code point - 94 ('a' -> 3).

  pad 0, eos 1; every lowercase letter is one token, so expected rows are easy to
  write down.
  """

  vocab_size = 3 + 26
  pad_id = 0
  eos_id = 1

  def encode(self, text):
    return [ord(c) - 94 for c in text]

  def decode(self, ids):
    return "".join(chr(i + 94) for i in ids if i > 1)


@pytest.fixture
def char_tokenizer():
  return CharTokenizer()


@pytest.fixture(scope="session")
def reference_t5_tokenizer(tokenizer):
  """transformers' T5 tokenizer (the references' class) over the embedded vocabulary."""
  transformers = require("transformers")
  processor = tokenizer._processor  # pylint: disable=protected-access
  vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(tokenizer.vocab_size)]
  return transformers.T5Tokenizer(vocab=vocab, extra_ids=0)


@pytest.fixture(scope="session")
def data_sharding():
  """Batch rows split over all (8 fake CPU) devices, as a data-parallel trainer does."""
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


class LocalHub:
  """Stands in for the hub: `datasets.load_dataset` returns a real streamed dataset of
  `num_shards` local shards of `per_shard` "web pages", generated in the test.

  Attributes:
    opened: the `load_dataset` calls, as `(name, subset, split, streaming)`.
    reads: how many records the shards' generator has produced.
  """

  def __init__(self, num_shards, per_shard):
    self.num_shards, self.per_shard = num_shards, per_shard
    self.opened = []
    self.reads = 0

  def pages(self):
    return [f"web page {s}.{j}" for s in range(self.num_shards) for j in range(self.per_shard)]

  def _generate(self, shards):
    for shard in shards:
      for j in range(self.per_shard):
        self.reads += 1
        yield {"text": f"web page {shard}.{j}", "url": f"u{shard}.{j}"}

  def load_dataset(self, name, subset, *, split, streaming):
    import datasets  # pylint: disable=import-outside-toplevel

    self.opened.append((name, subset, split, streaming))
    return datasets.IterableDataset.from_generator(
        self._generate, gen_kwargs={"shards": list(range(self.num_shards))}
    )


@pytest.fixture
def local_hub(monkeypatch):
  """Twelve shards of ten web pages, streamed through the real `datasets` library."""
  datasets = require("datasets")
  hub = LocalHub(num_shards=12, per_shard=10)
  monkeypatch.setattr(datasets, "load_dataset", hub.load_dataset)
  return hub


TFDS_TEXTS = {
    "train": [f"train document {i}" for i in range(7)],
    "validation": ["validation one", "validation two"],
}


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
        "train": self._generate_examples(TFDS_TEXTS["train"]),
        "validation": self._generate_examples(TFDS_TEXTS["validation"]),
    }

  def _generate_examples(self, texts):
    for index, text in enumerate(texts):
      yield index, {"content": text}


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  TinyText(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return str(data_dir)


@pytest.fixture(scope="session")
def tfds_texts():
  """The documents of each split of the tiny tfds dataset, in stored order."""
  return TFDS_TEXTS
