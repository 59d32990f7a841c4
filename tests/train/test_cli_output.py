"""What a user of the command sees: the start of a run, quiet eval and export, and an export
that transformers loads alone (tokenizer included) with the run's logits."""

import json
import os
import re
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tiny_run import TINY

from lowrank_jax.train.run import load_checkpoint

GENESIS = "In the beginning God created the heaven and the earth."


def _command(*args, env=None) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", "lowrank_jax", *args], capture_output=True, text=True, env=env
  )


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A tiny run trained, evaluated and exported through the command: ``(root, outputs)``."""
  root = tmp_path_factory.mktemp("cli_output")
  run_dir, export = root / "run", root / "export"
  outputs = {
      "train": _command("train", *TINY, f"run_dir={run_dir}"),
      "eval": _command("eval", "--checkpoint", str(run_dir)),
      "export": _command("export", "--checkpoint", str(run_dir), "--out", str(export)),
  }
  for name, output in outputs.items():
    assert output.returncode == 0, (name, output.stderr[-3000:])
  return root, outputs


def test_a_run_starts_with_a_banner_and_says_it_compiles(finished):
  root, outputs = finished
  lines = outputs["train"].stdout.splitlines()
  assert re.fullmatch(
      r"lowrank-jax train: adamw on nano \([\d,]+ parameters, fp32\), \d+ cpu devices? "
      rf"\(mesh data \d+ x fsdp \d+ x tensor \d+\), run dir {re.escape(str(root / 'run'))}",
      lines[0],
  ), lines[0]
  assert lines[1].startswith("compiling the train step")


def test_eval_and_export_print_their_result_and_no_warnings(finished):
  _, outputs = finished
  for name in ("eval", "export"):
    assert "WARNING" not in outputs[name].stderr and "read only" not in outputs[name].stderr
  assert json.loads(outputs["eval"].stdout)["step"] == 6


TRANSFORMERS_ALONE = textwrap.dedent("""
    import json, sys
    import torch, transformers
    tokenizer = transformers.AutoTokenizer.from_pretrained(sys.argv[1])
    model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
    ids = tokenizer(sys.argv[2], return_tensors="pt").input_ids
    with torch.no_grad():
      logits = model(input_ids=ids).logits[0]
    print(json.dumps({"ids": ids[0].tolist(), "logits": logits.tolist()}))
    """)


def test_an_export_runs_in_transformers_alone_with_the_runs_tokens_and_logits(finished):
  root, _ = finished
  export = root / "export"
  offline = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
  loaded = subprocess.run(
      [sys.executable, "-c", TRANSFORMERS_ALONE, str(export), GENESIS],
      capture_output=True,
      text=True,
      env=offline,
      cwd=root,  # not this repository: lowrank_jax is not what loads it
  )
  assert loaded.returncode == 0, loaded.stderr[-3000:]
  theirs = json.loads(loaded.stdout)
  run, state, _ = load_checkpoint(str(root / "run"))
  assert theirs["ids"] == run.tokenizer.encode(GENESIS)
  ours = np.asarray(run.model(state)(np.asarray([theirs["ids"]])))[0]
  np.testing.assert_allclose(theirs["logits"], ours, atol=1e-4, rtol=1e-4)
  umask = os.umask(0)
  os.umask(umask)
  modes = {name: stat.S_IMODE(os.stat(export / name).st_mode) for name in os.listdir(export)}
  assert modes == dict.fromkeys(modes, 0o666 & ~umask)
  assert {"tokenizer.json", "model.safetensors", "config.json"} <= set(modes)
