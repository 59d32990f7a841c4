"""lowrank_jax: memory-efficient LLM pretraining in JAX.

Subpackages:
  models: the Flax NNX LLaMA of the GaLore-lineage protocol and its HF interop.
  optim:  GaLore, Fira, APOLLO, GoLore, SPAM, ... as composable optax transforms.
  data:   tokenizers, sources and the grain input pipeline.
  train:  the sharded training loop.
  memory: the paper's memory count against the compiled program, per method and topology.
  benchmark: grids of runs (methods x sizes x seeds), their table and plots.
"""

__version__ = "0.1.0"
