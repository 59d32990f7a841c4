"""The modules renamed by issue 31 still import under their old names, with a warning."""

import importlib

import pytest

RENAMED = [
    ("lowrank_jax.train", "sweep", "lowrank_jax.train.rate_copies"),
    ("lowrank_jax.train", "applied", "lowrank_jax.train.update_records"),
    ("lowrank_jax.train", "annotated", "lowrank_jax.train.commented_config"),
    ("lowrank_jax.data", "validation", "lowrank_jax.data.validation_stream"),
    ("lowrank_jax.benchmark", "sweep", "lowrank_jax.benchmark.rate_search"),
]


@pytest.mark.parametrize("package, old, new", RENAMED)
def test_old_name_warns_and_gives_the_new_module(package, old, new):
  with pytest.warns(DeprecationWarning, match=new):
    module = getattr(importlib.import_module(package), old)
  assert module is importlib.import_module(new)


def test_an_unknown_name_is_still_an_attribute_error():
  with pytest.raises(AttributeError, match="no attribute 'nothing'"):
    _ = importlib.import_module("lowrank_jax.train").nothing
