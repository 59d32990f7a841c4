"""Settings the methods' own repositories run with (issue 29), checked where configs load."""

import pytest

from lowrank_jax.train.config import load_config

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


@pytest.mark.parametrize(
    "size,only_lr_act", [("60m", False), ("130m", False), ("350m", True), ("1b", True)]
)
def test_cola_configs_drop_the_mlp_silu_where_colas_configs_do(size, only_lr_act):
  assert shipped("cola", size).model_config().linear.only_lr_act is only_lr_act
