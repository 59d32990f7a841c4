"""The config is resolved once: the options parsed once, the optimizer built once per run."""

import jax
import jax.numpy as jnp

from lowrank_jax.train import optimizer_section, run
from lowrank_jax.train.config import load_config
from lowrank_jax.train.run import Run


def counting(monkeypatch, module, name):
  """Wraps ``module.name`` to count its calls; returns the list the calls append to."""
  calls, original = [], getattr(module, name)

  def wrapped(*args, **kwargs):
    calls.append(args)
    return original(*args, **kwargs)

  monkeypatch.setattr(module, name, wrapped)
  return calls


def test_the_options_are_parsed_once_and_read_typed(monkeypatch):
  parses = counting(monkeypatch, optimizer_section, "parse_options")
  config = load_config(overrides=["optimizer.method=golore", "optimizer.options.rank=8"])
  section = config.optimizer_section()
  assert section.options.rank == 8 and section.options.total_steps == config.schedule.total_steps
  assert config.optimizer_section() is section and config.model_config() is config.model_config()
  assert len(parses) == 1


def test_a_run_builds_its_optimizer_once(monkeypatch):
  config = load_config(overrides=["optimizer.method=galore", "run_dir=unused"])
  builds = counting(monkeypatch, run, "build_optimizer")
  Run.without_data(config).train_step()
  assert len(builds) == 1


def test_a_sweep_builds_one_transform_for_all_its_copies(monkeypatch):
  """The vmapped step traces the transform once, the copy's peak a traced scalar, besides the
  run's own (the state's structure): not one per copy."""
  rates = "optimizer.learning_rates=[0.001,0.002,0.004]"
  config = load_config(overrides=["optimizer.method=galore", rates, "run_dir=unused"])
  builds = counting(monkeypatch, run, "build_optimizer")
  sweep = Run.without_data(config)
  tokens = jax.ShapeDtypeStruct(
      (config.data.global_batch_size, config.data.seq_len), jnp.int32, sharding=sweep.data_sharding
  )
  jax.eval_shape(
      sweep.train_step(), sweep.abstract_state(), dict(input_ids=tokens, loss_mask=tokens)
  )
  assert len(builds) == 2
