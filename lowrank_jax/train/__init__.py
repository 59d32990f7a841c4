"""The trainer: the config, the methods, the run and its loop."""

from lowrank_jax.renamed_modules import renamed_modules

__getattr__ = renamed_modules(
    __name__,
    {"sweep": "rate_copies", "applied": "update_records", "annotated": "commented_config"},
)
