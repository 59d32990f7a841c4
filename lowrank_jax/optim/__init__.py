"""Memory-efficient optimizers as composable optax transforms.

Every public method ``lowrank_jax.optim.<name>(learning_rate, ...)`` returns an
``optax.GradientTransformation``; ``scale_by_<name>(...)`` is the same update
without weight decay and learning rate, for users who build their own chain
(optax's idioms: the core hyperparameters by position, the others by keyword; a
state is ``ScaleBy<Transform>State``, after the ``scale_by_<transform>`` that keeps
it: the GaLore family's projected leaves hold a ``ScaleByLowRankAdamState``). The
projection engine the GaLore family shares is the private package
``lowrank_jax.optim._projection``.
"""

from lowrank_jax.optim.spam import ScaleBySpamState, scale_by_spam, spam
from lowrank_jax.optim.stable_spam import ScaleByStableSpamState, scale_by_stable_spam, stable_spam

# GaLore family (projection core, routing, state sharding).
from lowrank_jax.optim.adam import ScaleByFoldedAdamState, scale_by_folded_adam
from lowrank_jax.optim._projection.distributed_refresh import spread_over_devices
from lowrank_jax.optim.apollo import apollo, apollo_mini, scale_by_apollo, scale_by_apollo_mini
from lowrank_jax.optim.fira import fira, scale_by_fira
from lowrank_jax.optim.galore import galore, scale_by_galore
from lowrank_jax.optim.golore import golore, scale_by_golore
from lowrank_jax.optim._projection.lowrank_adam import (
    ScaleByLowRankAdamState,
    find_lowrank_states,
    scale_by_lowrank_adam,
)
from lowrank_jax.optim._projection.masking import resolve_mask, route
from lowrank_jax.optim.param_groups import param_groups
from lowrank_jax.optim._projection.projection import MatrixDimensionNumbers
from lowrank_jax.optim.projection_options import ProjectionOptions
from lowrank_jax.optim.sharding import state_partition_specs, state_shardings

# The paper's restarts (weight refactorization, momentum reset, quick recovery) and ReLoRA.
from lowrank_jax.optim.loro import loro
from lowrank_jax.optim.momentum_reset import momentum_reset
from lowrank_jax.optim.periodic import PeriodicState
from lowrank_jax.optim.refactorize import Factor, balanced_factors, refactorize, sibling_factors
from lowrank_jax.optim.relora import ScaleByReLoRAState, relora, relora_schedule, scale_by_relora
from lowrank_jax.optim.restart_schedule import restart_schedule
from lowrank_jax.optim._renamed import renamed_attributes

# The states' names before they followed optax's ``ScaleBy<Method>State``.
__getattr__ = renamed_attributes(
    __name__,
    {
        "LowRankAdamState": ScaleByLowRankAdamState,
        "FoldedAdamState": ScaleByFoldedAdamState,
        "ReLoRAState": ScaleByReLoRAState,
    },
)
