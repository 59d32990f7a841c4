"""A learning-rate sweep as one program: each copy is the run at its rate, resumable, apart."""

import json
import re
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_loop import logged_records
from test_methods import make_run

from lowrank_jax.train import rate_copies
from lowrank_jax.train.config import load_config
from lowrank_jax.train.loop import train
from lowrank_jax.train.methods import METHODS
from lowrank_jax.train.schedule import make_schedule
from lowrank_jax.train.metrics import format_summary, read_metrics
from lowrank_jax.train.run import load_checkpoint
from lowrank_jax.train.run_dir import RunDir

RATES = [0.001, 0.004]
DENSE_RATES = [0.01, 0.002]


def _batches(count):
  for i in range(count):
    ids = jax.random.randint(jax.random.key(i), (8, 16), 2, 384)
    yield {"input_ids": ids, "loss_mask": jnp.ones_like(ids)}


def _arrays(state):
  return [
      np.asarray(leaf, np.float32)
      for leaf in jax.tree.leaves(state)
      if jnp.issubdtype(leaf.dtype, jnp.floating)
  ]


def check_copy_is_its_run(method, swept_rates, single_rates):
  # Five steps with the projectors refreshed every 2 (and LoRO's exact step at 5): the shared
  # counts keep every periodic event where a single run has it. The second copy is checked
  # against its own run (the first differs from it only in its rates).
  swept = make_run(method, *swept_rates)
  single = make_run(method, *single_rates)
  state, step = swept.init_state(), swept.train_step()
  alone, alone_step = single.init_state(), single.train_step()
  for batch in _batches(5):
    state, metrics = step(state, batch)
    alone, alone_metrics = alone_step(alone, batch)
    np.testing.assert_allclose(metrics["loss"][1], alone_metrics["loss"], rtol=2e-5)
    assert {name for name in metrics if name.startswith("lr")} == {
        name for name in alone_metrics if name.startswith("lr")
    }
    for name in (name for name in alone_metrics if name.startswith("lr")):
      np.testing.assert_allclose(metrics[name][1], alone_metrics[name], rtol=1e-6)
  assert int(state.step) == 5
  for copy_leaf, alone_leaf in zip(_arrays(rate_copies.copy_of(state, 1)), _arrays(alone)):
    scale = max(float(np.abs(alone_leaf).max()), 1e-3)
    np.testing.assert_allclose(copy_leaf, alone_leaf, atol=2e-4 * scale)
  # The copies did train apart: the larger rate moved its parameters further.
  first, second = (_arrays(rate_copies.copy_of(state, k).params) for k in range(2))
  assert any(not np.allclose(a, b) for a, b in zip(first, second))


# The dense leaves' rates of a sweep's copies and of the single run: paired with each copy's
# rate (the second copy's dense rate below its rate, the first's above), or one for all.
PAIRED = [f"optimizer.dense_learning_rates={DENSE_RATES}"], [
    f"optimizer.dense_learning_rate={DENSE_RATES[1]}"
]
SHARED = ["optimizer.dense_learning_rate=0.01"], ["optimizer.dense_learning_rate=0.01"]
# Every method once (a sweep and its single run: two compiles each), the dense leaves at the
# matrices' rate but for the methods named here; ReLoRA again with its adapters' dropout (the
# copies draw the run's masks).
DENSE_OF = {
    "full_rank": PAIRED,
    "galore": PAIRED,
    "low_rank_restarts": PAIRED,
    "loro": PAIRED,
    "fira": SHARED,
}
CASES = {method: (method, ()) for method in sorted(METHODS)}
CASES["relora_dropout"] = ("relora", ("model.linear.dropout=0.1",))


@pytest.mark.parametrize("method,extra", CASES.values(), ids=CASES)
def test_each_copy_of_a_sweep_is_the_run_at_its_rate(method, extra):
  swept_dense, single_dense = DENSE_OF.get(method, ([], []))
  check_copy_is_its_run(
      method,
      [f"optimizer.learning_rates={RATES}", *swept_dense, *extra],
      [f"optimizer.learning_rate={RATES[1]}", *single_dense, *extra],
  )


def test_the_periodic_events_stay_conds_in_the_compiled_sweep():
  # A refresh predicate on a batched count would become a select running the SVD path at
  # every step; on the shared count it stays one conditional.
  run = make_run("galore", f"optimizer.learning_rates={RATES}")
  batch = {k: jax.ShapeDtypeStruct((8, 16), jnp.int32) for k in ("input_ids", "loss_mask")}
  text = run.train_step().lower(run.abstract_state(), batch).as_text()
  assert "stablehlo.case" in text or "stablehlo.if" in text


def test_copies_split_over_the_data_axis_train_as_replicated_ones():
  # mesh.sweep=data: two groups of four devices, each training two of the four copies on the
  # whole batch (split over fsdp), the same numbers as every device holding every copy.
  rates, mesh = "optimizer.learning_rates=[0.001,0.002,0.004,0.008]", ["mesh.data=2", "mesh.fsdp=4"]
  split = make_run("galore", rates, *mesh, "mesh.sweep=data")
  whole = make_run("galore", rates, *mesh)
  assert split.data_sharding.spec == jax.sharding.PartitionSpec("fsdp")
  states = {"split": split.init_state(), "whole": whole.init_state()}
  kernel = jax.tree.leaves(states["split"].params)[0]
  assert kernel.sharding.spec[0] == "data" and kernel.addressable_shards[0].data.shape[0] == 2
  steps = {"split": split.train_step(), "whole": whole.train_step()}
  for batch in _batches(3):
    for name in states:
      states[name], _ = steps[name](states[name], batch)
  for a, b in zip(_arrays(states["split"]), _arrays(states["whole"])):  # sums in other orders
    np.testing.assert_allclose(a, b, atol=2e-4 * max(float(np.abs(b).max()), 1e-3))
  evaluated = split.evaluate(rate_copies.copy_of(states["split"], 3))
  assert evaluated == pytest.approx(
      whole.evaluate(rate_copies.copy_of(states["whole"], 3)), rel=1e-5
  )


def test_copies_split_over_the_data_axis_must_fill_it():
  with pytest.raises(ValueError, match="splits the 3 copies .* over the 2 devices of the data"):
    make_run(
        "galore",
        "optimizer.learning_rates=[1,2,3]",
        "mesh.data=2",
        "mesh.fsdp=4",
        "mesh.sweep=data",
    )


def test_a_sweep_run_writes_each_copy_and_resumes_exactly(tiny, tmp_path):
  # Paired dense rates name each copy's directory by both rates (a sweep without them, by its
  # rate alone: the diverging-copy test below).
  dense = ["optimizer.dense_learning_rates=[0.01,0.004]"]
  names = {0.002: "lr0.002_dense0.01", 0.02: "lr0.02_dense0.004"}
  rates = ["optimizer.learning_rates=[0.002,0.02]", *dense]
  straight = tmp_path / "straight"
  summary = train(load_config(overrides=tiny(*rates, run_dir=straight)))
  assert summary["learning_rates"] == [0.002, 0.02]
  copies = {copy["learning_rate"]: copy for copy in summary["copies"]}
  for rate, name in names.items():
    saved = json.loads((straight / name / "summary.json").read_text())
    assert saved == copies[rate] and saved["steps"] == 6 and "val_ppl" in saved
    assert (straight / name / "loss_curve.png").exists()
    assert saved["dense_learning_rate"] == float(name.partition("_dense")[2])
    record, *_ = read_metrics(straight / name / "metrics.jsonl")
    assert "lr/dense" in record
  assert copies[0.002]["val_ppl"] != copies[0.02]["val_ppl"]
  report = format_summary(summary)
  best = min(copies.values(), key=lambda copy: copy["val_ppl"])["learning_rate"]
  assert f"{best:<13g}" in next(line for line in report.splitlines() if "(best)" in line)

  resumed = tmp_path / "resumed"
  train(load_config(overrides=tiny(*rates, run_dir=resumed)))
  subprocess.run(["rm", "-rf", str(resumed / "checkpoints" / "6")], check=True)
  for name in names.values():  # the run died after step 3: its metrics said so
    lines = (resumed / name / "metrics.jsonl").read_text().splitlines()[:3]
    (resumed / name / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  train(load_config(overrides=tiny(*rates, run_dir=resumed)))
  schedule = load_config(overrides=tiny(*rates, run_dir=resumed)).schedule
  for rate, name in names.items():
    records = logged_records(straight / name)
    assert logged_records(resumed / name) == records  # bitwise, every key
    # each copy trained at its own rate: the logged lr of update s is its schedule's at s - 1
    steps_and_rates = [(r["step"], r["lr"]) for r in records if "lr" in r]
    expected = [float(make_schedule(rate, schedule)(step - 1)) for step, _ in steps_and_rates]
    np.testing.assert_allclose([lr for _, lr in steps_and_rates], expected, rtol=1e-6)


def test_a_diverging_copy_is_held_while_the_others_train_on(tiny, tmp_path):
  # A rate of 1e30 overflows its copy's parameters at once: its steps are skipped, its
  # streak passes faults.max_bad_steps, and the run goes on for the sane copy.
  run_dir = tmp_path / "run"
  summary = train(
      load_config(
          overrides=tiny("optimizer.learning_rates=[0.002,1e30]", "faults.max_bad_steps=2")
          + [f"run_dir={run_dir}"]
      )
  )
  sane, diverged = summary["copies"]
  assert summary["stopped_by"] is None and summary["steps"] == 6
  assert sane["skipped_steps"] == 0 and diverged["skipped_steps"] >= 4
  assert diverged["stopped_by"] == "non-finite" and "val_loss" not in diverged
  assert RunDir(sane["run_dir"]).finished_summary(6) == sane
  assert sane["run_dir"] == str(run_dir / "lr0.002") and sane["dense_learning_rate"] == 0.002
  record, *_ = read_metrics(run_dir / "lr0.002" / "metrics.jsonl")
  assert "lr/dense" not in record
  assert RunDir(diverged["run_dir"]).finished_summary(6) is None
  with pytest.raises(ValueError, match="holds a learning-rate sweep of 2 copies"):
    load_checkpoint(str(run_dir))
  alone = train(
      load_config(overrides=tiny("optimizer.learning_rate=0.002", run_dir=tmp_path / "a"))
  )
  assert sane["val_loss"] == pytest.approx(alone["val_loss"], rel=1e-5)


def test_a_sweep_stops_when_every_copy_diverges(tiny, tmp_path):
  config = load_config(
      overrides=tiny("optimizer.learning_rates=[1e30,1e31]", "faults.max_bad_steps=2")
  )
  with pytest.raises(FloatingPointError, match=r"in a row.*learning rate 1e\+30.*1e\+31"):
    train(config)


@pytest.mark.parametrize(
    "rates, message",
    [
        ("[0.001,0.001]", "optimizer.learning_rates=[0.001, 0.001] repeats a rate"),
        ("[0.001,-1]", "optimizer.learning_rates=[0.001, -1.0] must be a list of finite numbers"),
        ("[0.001,.inf]", "must be a list of finite numbers > 0"),
    ],
)
def test_bad_sweep_rates_fail_in_one_line(rates, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    load_config(overrides=[f"optimizer.learning_rates={rates}"])
