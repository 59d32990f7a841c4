"""The 1B scale benchmark's script and arithmetic (its device run is not a test: it needs a GPU).

The end-to-end check of the script is ``QUICK=1 experiments/bench/gpu_scale.sh`` (nano sizes,
any machine); here: the shell wrapper lints, the MFU's FLOP count matches a hand count, and
the restart counters it sets make the very next update the restart.
"""

import os
import subprocess

import jax.numpy as jnp
import numpy as np
import optax

from experiments.bench import scale_bench
from lowrank_jax import optim
from lowrank_jax.models import LlamaConfig
from lowrank_jax.train.state import TrainState

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_the_device_script_lints():
  script = os.path.join(ROOT, "experiments", "bench", "gpu_scale.sh")
  assert subprocess.run(["shellcheck", script]).returncode == 0


def test_model_flops_are_palms_count_by_hand():
  config = LlamaConfig.preset("nano", max_seq_len=64)
  d, f, layers, vocab = config.hidden_size, config.intermediate_size, config.num_layers, 4096
  per_block = 4 * d * d + 3 * d * f + 2 * d  # attention, SwiGLU, two RMSNorm scales
  matmul_params = layers * per_block + d + vocab * d  # the final norm and the LM head
  expected = 6 * matmul_params + 12 * layers * d * 64
  assert scale_bench.model_flops_per_token(config) == expected


def test_restart_counters_due_makes_the_next_update_reset_the_moments():
  params = {"w": jnp.ones((3, 2))}
  tx = optim.momentum_reset(optax.scale_by_adam(), 7)
  state = TrainState(jnp.zeros((), jnp.int32), params, {}, tx.init(params))
  state = scale_bench.restart_counters_due(state, 7)
  _, opt_state = tx.update({"w": jnp.full((3, 2), 0.5)}, state.opt_state, params)
  adam = opt_state.inner_state
  np.testing.assert_array_equal(adam.mu["w"], 0.0)
  assert int(opt_state.count) == 7
