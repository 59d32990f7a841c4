"""Shared fixtures: one embedded tokenizer per test session, trained into a temporary cache."""

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
