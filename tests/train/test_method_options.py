"""Each method's options: declared with the factory's defaults, checked when the config
loads (one line naming the option), and listed by --print-config with their meanings."""

import dataclasses
import inspect

import pytest

from lowrank_jax.cli import _parser, main
from lowrank_jax.train.commented_config import annotated_yaml
from lowrank_jax.train.config import load_config, resolved_dict
from lowrank_jax.train.methods.options import NoOptions
from lowrank_jax.train.methods import METHODS
from lowrank_jax.train.periods import periods_past_the_run
from lowrank_jax.train.run_dir import flat

OPTIONED = sorted(name for name, method in METHODS.items() if method.options is not NoOptions)
# Those whose options feed a lowrank_jax.optim factory (Muon, Adafactor and Lion read their
# defaults from optax's factories instead: factory_default, in their options classes).
FROM_A_FACTORY = [name for name in OPTIONED if METHODS[name].factory is not None]


@pytest.mark.parametrize("name", FROM_A_FACTORY)
def test_declared_defaults_are_the_factorys(name):
  """What the trainer passes for options left unset is what the factory would use."""
  method = METHODS[name]
  parameters = inspect.signature(method.factory).parameters
  for option, value in method.options().factory_kwargs().items():
    assert option in parameters, option
    if parameters[option].default is not inspect.Parameter.empty:
      assert value == parameters[option].default, option


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["optimizer.method=galore", "optimizer.options.scale=abc"],
            "optimizer.options.scale='abc' is not a number",
        ),
        (
            ["optimizer.method=galore", "optimizer.options.rnak=8"],
            "unknown option optimizer.options.rnak; allowed: rank, update_proj_gap, scale, projection",
        ),
        (
            ["optimizer.method=galore", "optimizer.options.rank=0"],
            "optimizer.options.rank=0 must be an integer >= 1",
        ),
        (
            ["optimizer.method=galore", "optimizer.options.rank=8.5"],
            "optimizer.options.rank=8.5 must be an integer >= 1",
        ),
        (
            ["optimizer.method=apollo", "optimizer.options.scale_type=row"],
            "optimizer.options.scale_type='row' is unknown; allowed: channel, tensor",
        ),
        (
            ["optimizer.method=fira", "optimizer.options.gamma=inf"],
            "optimizer.options.gamma=inf must be a finite number >= 1",
        ),
        (["optimizer.method=galore", "optimizer.options.projection.refresh=qr"], "refresh"),
        (
            ["optimizer.method=galore", "optimizer.options.projection.sides=std"],
            "unknown key 'sides'",
        ),
        (
            ["optimizer.method=loro", "optimizer.options.every=0"],
            "optimizer.options.every=0 must be an integer >= 1",
        ),
        (["optimizer.options.rank=8"], "unknown option optimizer.options.rank; allowed: none"),
        (["optimizer.options=8"], "optimizer.options=8 must be a mapping"),
    ],
)
def test_a_bad_option_fails_when_the_config_loads_in_one_line(overrides, message):
  with pytest.raises(ValueError) as error:
    load_config(overrides=overrides)
  assert message in str(error.value) and "\n" not in str(error.value)


def test_golore_trains_for_the_runs_length_unless_told():
  config = load_config(overrides=["optimizer.method=golore", "schedule.total_steps=40"])
  assert config.optimizer_section().options.total_steps == 40
  config = load_config(overrides=["optimizer.method=golore", "optimizer.options.total_steps=9"])
  assert config.optimizer_section().options.total_steps == 9


@pytest.mark.parametrize("method", ["adamw", "galore", "stable_spam"])
def test_print_config_lists_every_key_with_its_meaning_and_reads_back(method, tmp_path, capsys):
  run_dir = tmp_path / "run"
  overrides = [f"optimizer.method={method}", f"run_dir={run_dir}"]
  assert main(["train", "--print-config", *overrides]) == 0
  text = capsys.readouterr().out
  assert not run_dir.exists()
  config = load_config(overrides=overrides)
  assert text == annotated_yaml(config)
  keys = [line for line in text.splitlines() if ":" in line and not line.startswith("#")]
  sections_and_their_keys = [line for line in keys if not line.startswith("    ")]
  assert all("  # " in line for line in sections_and_their_keys)
  for field in dataclasses.fields(METHODS[method].options):
    assert any(line.startswith(f"    {field.name}: ") and "  # " in line for line in keys)
  (path := tmp_path / "printed.yaml").write_text(text)
  read_back = load_config([str(path)])
  assert read_back.optimizer_section() == config.optimizer_section()
  assert dataclasses.replace(read_back, optimizer=config.optimizer) == config


def test_help_names_print_config(capsys):
  with pytest.raises(SystemExit):
    _parser().parse_args(["train", "--help"])
  assert "--print-config" in capsys.readouterr().out


RANK_KEYS = ("optimizer.options.rank", "model.linear.rank")


def method_overrides(name: str, rank: int = 4) -> list[str]:
  """``name`` at ``rank``, set by its method's rank key where it has one."""
  key = METHODS[name].rank_key
  return [f"optimizer.method={name}", *([f"{key}={rank}"] if key else [])]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_rank_key_is_the_one_key_that_sets_the_methods_rank(name):
  """What the memory report sets (Method.rank_key) is the rank the run resolves to; every
  other rank key is refused."""
  key = METHODS[name].rank_key
  if key is not None:
    assert flat(resolved_dict(load_config(overrides=method_overrides(name))))[key] == 4
  for other in set(RANK_KEYS) - {key}:
    with pytest.raises(ValueError, match=other):
      load_config(overrides=[*method_overrides(name), f"{other}=4"])


@pytest.mark.parametrize(
    "name,option",
    [
        ("galore", "update_proj_gap"),
        ("apollo_mini", "update_proj_gap"),
        ("spam", "reset_interval"),
        ("stable_spam", "reset_interval"),
        ("loro", "every"),
    ],
)
def test_a_period_option_longer_than_the_run_is_warned_about(name, option):
  overrides = [*method_overrides(name), f"optimizer.options.{option}=50", "schedule.total_steps=40"]
  assert (
      f"optimizer.options.{option}=50 exceeds schedule.total_steps=40: what it times never "
      "happens in this run"
  ) in periods_past_the_run(load_config(overrides=overrides))


@pytest.mark.parametrize("name", OPTIONED)
def test_every_declared_period_is_an_option_of_the_method(name):
  assert set(METHODS[name].options.periods) <= set(METHODS[name].option_names)
