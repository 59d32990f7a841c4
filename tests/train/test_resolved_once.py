"""The config is resolved once: the options parsed once, the optimizer built once per run."""

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
