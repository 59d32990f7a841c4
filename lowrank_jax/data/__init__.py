"""Input pipeline: sources, tokenizers, preprocessing and the grain streams.

The trainer needs four calls::

    tokenizer = load_tokenizer(config)                  # tokenizers.py
    check_vocab_fits(tokenizer, model_vocab_size)
    train = make_train_iterator(config, tokenizer, sharding=data_sharding)   # pipeline.py
    for batch in make_validation_batches(config, tokenizer, sharding=data_sharding): ...

A batch is ``{"input_ids": int32[B, S], "loss_mask": int32[B, S]}`` with ``loss_mask``
1 on real tokens (EOS included) and 0 on padding; the loss weights the prediction of
token ``t + 1`` by ``loss_mask[:, t + 1]``. The train iterator's state is saved with
``checkpoint_save_args(train)`` and restored with ``checkpoint_restore_args(fresh)``
inside an orbax ``Composite``.

Modules: ``config`` (:class:`DataConfig`), ``sources`` (embedded Bible, local files,
streamed shards, tfds directory, HF stream), ``tokenizers`` and ``tokenizer_training`` (the cached
embedded SentencePiece model), ``preprocess`` (paper and packed rows),
``global_batch`` (per-process slices and global arrays), ``pipeline`` (training
stream) and ``validation_stream`` (validation stream).
"""

from lowrank_jax.data.config import DataConfig
from lowrank_jax.data.pipeline import checkpoint_restore_args
from lowrank_jax.data.pipeline import checkpoint_save_args
from lowrank_jax.data.pipeline import make_train_iterator
from lowrank_jax.data.tokenizers import check_vocab_fits
from lowrank_jax.data.tokenizers import load_tokenizer
from lowrank_jax.data.tokenizers import Tokenizer
from lowrank_jax.data.validation_stream import make_validation_batches
from lowrank_jax.renamed_modules import renamed_modules

__getattr__ = renamed_modules(__name__, {"validation": "validation_stream"})

__all__ = [
    "DataConfig",
    "Tokenizer",
    "check_vocab_fits",
    "checkpoint_restore_args",
    "checkpoint_save_args",
    "load_tokenizer",
    "make_train_iterator",
    "make_validation_batches",
]
