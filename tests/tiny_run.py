"""Overrides of a tiny training run that finishes in seconds, shared by the trainer,
benchmark and fault-injection tests (``tests`` is on pytest's ``pythonpath``)."""

TINY = [
    "model.overrides.num_layers=1",
    "model.overrides.hidden_size=32",
    "model.overrides.intermediate_size=64",
    "model.overrides.num_heads=2",
    "model.overrides.vocab_size=384",
    "data.vocab_size=384",
    "data.seq_len=32",
    "data.global_batch_size=8",
    "data.validation_tokens=2000",
    "eval.batch_size=8",
    "schedule.total_steps=6",
    "logging.every=1",
    "logging.progress=false",
    "logging.tensorboard=false",
    "checkpoint.every=3",
]
