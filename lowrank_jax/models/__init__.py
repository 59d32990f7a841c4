"""The Flax NNX LLaMA of the paper's protocol, its linear parameterizations and HF interop."""

from lowrank_jax.models.config import PRESETS, DtypePolicy, LlamaConfig
from lowrank_jax.models.linear import DenseLinear, LinearConfig, make_linear, register_linear
from lowrank_jax.models.llama import Llama
from lowrank_jax.models.loss import next_token_loss
from lowrank_jax.models.params import abstract_model, count_params

__all__ = [
    "PRESETS",
    "DtypePolicy",
    "LlamaConfig",
    "DenseLinear",
    "LinearConfig",
    "make_linear",
    "register_linear",
    "Llama",
    "next_token_loss",
    "abstract_model",
    "count_params",
]
