"""The trainer: the config, the methods, the run and its loop.

A method defined outside the package registers with :func:`register_method`
(:mod:`lowrank_jax.train.methods.registration`).
"""

from lowrank_jax.renamed_modules import renamed_modules
from lowrank_jax.train.methods.registration import Entries, register_method, unregister_method

__all__ = ["Entries", "register_method", "unregister_method"]

__getattr__ = renamed_modules(
    __name__,
    {"sweep": "rate_copies", "applied": "update_records", "annotated": "commented_config"},
)
