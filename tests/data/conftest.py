"""Shared fixtures: one embedded tokenizer per test session, trained into a temporary cache."""

import sys
import types

import jax
import pytest

from lowrank_jax.data import DataConfig, load_tokenizer
from lowrank_jax.data import tokenizer_training


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
  transformers = pytest.importorskip("transformers")
  processor = tokenizer._processor  # pylint: disable=protected-access
  vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(tokenizer.vocab_size)]
  return transformers.T5Tokenizer(vocab=vocab, extra_ids=0)


@pytest.fixture(scope="session")
def data_sharding():
  """Batch rows split over all (8 fake CPU) devices, as a data-parallel trainer does."""
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


class FakeStream:
  """The part of `datasets.IterableDataset` the source uses, over an in-memory list."""

  def __init__(self, records):
    self.records = list(records)

  def shuffle(self, seed, buffer_size):
    del buffer_size
    order = sorted(range(len(self.records)), key=lambda i: hash((seed, i)) % 1009)
    return FakeStream(self.records[i] for i in order)

  def skip(self, n):
    return FakeStream(self.records[n:])

  def __iter__(self):
    return iter(self.records)


@pytest.fixture
def fake_datasets(monkeypatch):
  """Stands in for the optional `datasets` package: ten "web pages" in one stream.

  Returns the list of `load_dataset` calls, for the test to inspect.
  """
  records = [{"text": f"web page {i}", "url": f"u{i}"} for i in range(10)]
  opened = []

  def load_dataset(name, subset, *, split, streaming):
    opened.append((name, subset, split, streaming))
    return FakeStream(records)

  def split_dataset_by_node(stream, *, rank, world_size):
    return FakeStream(stream.records[rank::world_size])

  module = types.ModuleType("datasets")
  module.load_dataset = load_dataset
  distributed = types.ModuleType("datasets.distributed")
  distributed.split_dataset_by_node = split_dataset_by_node
  module.distributed = distributed
  monkeypatch.setitem(sys.modules, "datasets", module)
  monkeypatch.setitem(sys.modules, "datasets.distributed", distributed)
  return opened
