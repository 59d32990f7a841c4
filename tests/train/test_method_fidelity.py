"""Settings the methods' own repositories run with (issue 29), checked where configs load."""

import math

import numpy as np
import pytest

from lowrank_jax.optim.loro_schedule import loro_main_schedule
from lowrank_jax.train.methods.loro import loro_record
from lowrank_jax.train.config import ScheduleSection, load_config
from lowrank_jax.train.schedule import make_schedule

SIZES = ("60m", "130m", "350m", "1b")


def shipped(method: str, size: str, overrides=()):
  return load_config(
      [
          f"experiments/configs/llama_{size}.yaml",
          f"experiments/configs/methods/{method}_{size}.yaml",
      ],
      list(overrides),
  )


def test_relora_refuses_a_first_warmup_longer_than_the_merge_period():
  overrides = ["optimizer.method=relora", "model.linear.rank=4", "optimizer.reset_every=20"]
  overrides += ["schedule.total_steps=250"]
  load_config(overrides=overrides + ["schedule.warmup_ratio=0.08"])  # 20 steps: as long, allowed
  with pytest.raises(ValueError) as error:
    load_config(overrides=overrides + ["schedule.warmup_ratio=0.1"])
  assert str(error.value) == (
      "schedule.warmup_ratio=0.1 warms up over 25 steps, more than ReLoRA's merge period "
      "optimizer.reset_every=20; shorten the warmup"
  )


@pytest.mark.parametrize("size", SIZES)
def test_relora_configs_run_as_guitaricet_relora(size):
  config = shipped("relora", size)
  assert config.schedule.warmup_steps <= config.optimizer.reset_every
  assert config.optimizer.clip_norm == 1.0
  assert config.model_config().linear.dropout == 0.1  # torchrun_main.py's lora_dropout


@pytest.mark.parametrize("size", SIZES)
def test_lora_configs_keep_the_adapters_undropped(size):
  """The paper's repository has no LoRA; its ``--lora_dropout`` defaults to 0.0."""
  assert shipped("lora", size).model_config().linear.dropout == 0.0


def test_adapter_dropout_of_a_method_without_adapters_is_a_one_line_error():
  with pytest.raises(ValueError) as error:
    load_config(overrides=["optimizer.method=galore", "model.linear.dropout=0.1"])
  assert str(error.value).startswith(
      "model.linear.dropout=0.1 means nothing to optimizer.method='galore', which trains dense"
  )
  assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "size,only_lr_act", [("60m", False), ("130m", False), ("350m", True), ("1b", True)]
)
def test_cola_configs_drop_the_mlp_silu_where_colas_configs_do(size, only_lr_act):
  assert shipped("cola", size).model_config().linear.only_lr_act is only_lr_act


def golore_cyclical_lambda(step, *, num_warmup_steps, cycle_length, min_lr_ratio):
  """``_get_cyclical_cosine_schedule_with_min_lr_lambda`` of pkumelon/Golore@7ee5a8a
  ``peft_pretraining/training_utils.py``, restated."""
  cycle_step = step % cycle_length
  if cycle_step < num_warmup_steps:
    if step != cycle_step and cycle_step < 2:
      return 1e-7
    return cycle_step / max(1, num_warmup_steps)
  progress = (cycle_step - num_warmup_steps) / max(1, cycle_length - num_warmup_steps)
  return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def test_cycle_steps_runs_golores_extra_steps_as_its_cyclical_scheduler():
  """Go_pt.sh: --cycle_length 10000 --warmup_steps 1000 and 5000 extra steps (scaled down)."""
  section = ScheduleSection(total_steps=30, warmup_ratio=0.25, cycle_steps=20)
  schedule = make_schedule(2.0, section)
  expected = [
      2.0 * golore_cyclical_lambda(t, num_warmup_steps=5, cycle_length=20, min_lr_ratio=0.1)
      for t in range(30)
  ]
  np.testing.assert_allclose([float(schedule(t)) for t in range(30)], expected, rtol=1e-5)


@pytest.mark.parametrize("size", SIZES)
def test_golore_configs_clip_as_its_torchrun_main(size):
  assert shipped("golore", size).optimizer.clip_norm == 1.0


@pytest.mark.parametrize("size,scale_front", [("60m", True), ("130m", True), ("350m", False)])
def test_apollo_mini_configs_scale_in_front_where_its_scripts_do(size, scale_front):
  assert shipped("apollo_mini", size).optimizer_section().options.scale_front is scale_front


@pytest.mark.parametrize("size,adjust", [("60m", -1000), ("350m", -6000)])
def test_loro_configs_run_loro_mains_schedule(size, adjust):
  config = shipped("loro", size)
  section = config.optimizer_section()
  schedule = make_schedule(config.optimizer.learning_rate, config.schedule)
  warmup, total = config.schedule.warmup_steps, config.schedule.total_steps
  expected = loro_main_schedule(schedule, total, warmup, 500, 5, adjust)
  record = loro_record(schedule, section)
  steps = [warmup - 1, warmup, warmup + 2, 4 * warmup + 1, total - 1]
  np.testing.assert_allclose(
      [float(record(t)["lr"]) for t in steps], [float(expected(t)) for t in steps], rtol=1e-6
  )
