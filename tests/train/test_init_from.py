"""``model.init_from``: a run starts from an HF directory (our export here) at step 0."""

import os

import numpy as np
import pytest

from lowrank_jax.cli import main
from lowrank_jax.data import load_tokenizer, make_train_iterator
from lowrank_jax.train.config import load_config
from lowrank_jax.train.loop import train
from lowrank_jax.train.metrics import read_metrics
from reference_packages import require

torch = require("torch")
transformers = require("transformers")

GQA_TIED = ["model.overrides.num_kv_heads=1", "model.overrides.tie_word_embeddings=true"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  """A tiny grouped-query, tied model trained 6 steps and exported with its tokenizer."""
  from tiny_run import TINY

  root = tmp_path_factory.mktemp("init_from")
  train(load_config(overrides=TINY + GQA_TIED + [f"run_dir={root / 'run'}"]))
  assert main(["export", "--checkpoint", str(root / "run"), "--out", str(root / "export")]) == 0
  return root / "export"


def first_loss(run_dir):
  records = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
  return next(r["loss"] for r in records if r.get("step") == 1)


def transformers_loss(export, batch):
  """The exported model's mean next-token loss on ``batch``, computed by transformers."""
  model = transformers.LlamaForCausalLM.from_pretrained(export).eval()
  ids, mask = (torch.tensor(np.asarray(batch[k], np.int64)) for k in ("input_ids", "loss_mask"))
  with torch.no_grad():
    logits = model(input_ids=ids).logits[:, :-1]
  per_token = torch.nn.functional.cross_entropy(
      logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
  )
  weights = mask[:, 1:].reshape(-1).float()
  return float((per_token * weights).sum() / weights.sum())


@pytest.mark.parametrize("method", [["adamw"], ["galore", "optimizer.options.rank=8"]])
def test_the_first_loss_is_the_exported_models_loss_on_the_same_batch(
    tiny, tmp_path, export, method
):
  method, *options = method
  config = load_config(
      overrides=tiny(
          *GQA_TIED,
          f"model.init_from={export}",
          f"data.tokenizer={export}",
          f"optimizer.method={method}",
          *options,
          "schedule.total_steps=1",
          run_dir=tmp_path / method,
      )
  )
  train(config)
  batch = next(make_train_iterator(config.data, load_tokenizer(config.data)))
  assert first_loss(tmp_path / method) == pytest.approx(transformers_loss(export, batch), abs=2e-5)


def test_the_architecture_is_the_checkpoints_and_a_mismatch_is_one_line(
    tiny, tmp_path, export, capsys
):
  config = load_config(overrides=tiny(f"model.init_from={export}", "model.preset=60m"))
  built = config.model_config()
  assert (built.hidden_size, built.num_kv_heads, built.tie_word_embeddings) == (32, 1, True)
  mismatch = tiny(f"model.init_from={export}", "model.overrides.hidden_size=64")
  assert main(["train", *mismatch]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "model.overrides.hidden_size=64 differs" in err
  assert "(hidden_size=32)" in err


def test_init_from_on_a_run_that_holds_a_checkpoint_is_refused(tiny, tmp_path, export):
  run_dir = tmp_path / "run"
  train(load_config(overrides=tiny(*GQA_TIED, "schedule.total_steps=2", run_dir=run_dir)))
  with pytest.raises(ValueError, match=r"model.init_from starts a new run only.*checkpoint wins"):
    train(load_config(overrides=tiny(*GQA_TIED, f"model.init_from={export}", run_dir=run_dir)))
