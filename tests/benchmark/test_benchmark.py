"""The benchmark grid: cells, the learning-rate sweep, skipping and resuming, jobs, the report."""

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys

import numpy as np
import pytest
import tqdm
import yaml
import dataclasses
from tiny_run import TINY

from lowrank_jax import cli
from lowrank_jax.benchmark import Grid, job_lines, run_grid, write_report
from lowrank_jax.benchmark.grid import Cell
from lowrank_jax.benchmark.plots import loss_curves_figure
from lowrank_jax.benchmark.results import (
    CellResult,
    MethodRow,
    chosen_rates,
    pending_sweep_cells,
    read_result,
    ready_cells,
    searches,
)
from lowrank_jax.benchmark.rate_search import search_grid
from lowrank_jax.benchmark import results as results_module
from lowrank_jax.benchmark import runner
from lowrank_jax.benchmark.runner import cpu_blocks, run_cells
from lowrank_jax.train.config import load_config
from lowrank_jax.train.loop import train


def _grid(out_dir, **fields) -> Grid:
  values = {
      "out_dir": str(out_dir),
      "sizes": ("nano",),
      "methods": ("full_rank",),
      "seeds": (0, 1),
      "overrides": tuple(TINY),
      "learning_rates": {"full_rank": (0.005, 0.01)},
      "max_extensions": 0,
  }
  return Grid(**{**values, **fields})


def _read(*parts, mode="r"):
  with open(os.path.join(*parts), mode) as f:
    return f.read()


def _summary(cell) -> dict:
  return json.loads(_read(cell.run_dir, "summary.json"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A grid with a failing method and one extension of the search, run once after one sweep
  cell was left half-trained."""
  out = tmp_path_factory.mktemp("grid")
  grid = _grid(
      out,
      max_extensions=1,
      methods=("full_rank", "spam"),
      method_overrides={"spam": ("faults.nan_loss_steps=[1, 2]", "faults.max_bad_steps=2")},
  )
  half = grid.sweep_cells()[0]
  train(half.config("schedule.total_steps=3", "logging.progress=false"))
  run_grid(grid)
  return grid, half


def _loss_on_disk(grid, method):
  def loss(point):
    result = read_result(grid.cell("nano", method, *point[:1], grid.seeds[0], *point[1:]))
    return result.val_loss if result.status in ("done", "failed") else None

  return loss


def test_the_search_extends_past_its_edge_and_picks_the_rate_of_lowest_validation_loss(finished):
  grid, _ = finished
  state = searches(grid)["nano", "full_rank"]
  rates = state.axes[0]
  assert len(rates) == 3 and not state.pending  # the grid's two, one extension
  extension = (set(rates) - {0.005, 0.01}).pop()
  assert extension in (0.0025, 0.02)
  assert state == search_grid(((0.005, 0.01), (None,)), 1, _loss_on_disk(grid, "full_rank"))
  sweep = [grid.cell("nano", "full_rank", rate, 0) for rate in rates]
  best = min(sweep, key=lambda c: _summary(c)["val_loss"]).learning_rate
  assert state.best == (best, None) and state.at_edge[0] == (best in (min(rates), max(rates)))
  seeds = grid.seed_cells({("nano", "full_rank"): (best, None)})
  assert [read_result(c).status for c in sweep + seeds] == ["done"] * 4
  assert _summary(seeds[0])["steps"] == 6
  write_report(grid)
  (row,) = json.loads(_read(grid.out_dir, "results.json"))["rows"]
  ppl = [_summary(c)["val_ppl"] for c in sweep if c.learning_rate == best] + [
      _summary(seeds[0])["val_ppl"]
  ]
  assert row["learning_rate"] == best and row["val_ppl"] == ppl
  assert row["lr_at_edge"] == state.at_edge[0] and len(row["sweep"]) == 3
  assert row["lr_searched"]
  assert row["val_ppl_mean"] == pytest.approx(statistics.fmean(ppl))
  assert row["val_ppl_std"] == pytest.approx(statistics.stdev(ppl))
  assert (
      row["state_bytes"]
      == _summary(seeds[0])["param_bytes"] + _summary(seeds[0])["opt_state_bytes"]
  )


def test_a_grid_interrupted_in_its_search_makes_the_same_extension_on_resume(finished, tmp_path):
  grid, _ = finished
  twin = dataclasses.replace(
      grid, out_dir=str(tmp_path), methods=("full_rank",), method_overrides={}
  )
  for cell in twin.sweep_cells():  # the first round ended, then the grid stopped
    shutil.copytree(dataclasses.replace(cell, out_dir=grid.out_dir).run_dir, cell.run_dir)
  (rate,) = set(searches(grid)["nano", "full_rank"].axes[0]) - {0.005, 0.01}
  assert [c.name for c in pending_sweep_cells(twin)] == [
      twin.cell("nano", "full_rank", rate, 0).name
  ]
  run_grid(twin)
  assert searches(twin)["nano", "full_rank"] == searches(grid)["nano", "full_rank"]
  assert sorted(os.listdir(os.path.join(twin.out_dir, "nano", "full_rank"))) == sorted(
      os.listdir(os.path.join(grid.out_dir, "nano", "full_rank"))
  )


def test_a_failed_cell_is_marked_and_left_out_and_the_grid_goes_on(finished):
  grid, _ = finished
  (failed,) = [c for c in grid.sweep_cells() if c.method == "spam"]
  assert read_result(failed).status == "failed"
  assert "non-finite" in _read(failed.run_dir, "train.log")
  rows = json.loads(_read(grid.out_dir, "results.json"))["rows"]
  assert [r["method"] for r in rows] == ["full_rank"]


def test_an_interrupted_cell_resumes_and_finished_cells_never_rerun(finished):
  grid, half = finished
  log = _read(half.run_dir, "train.log")
  assert f"resuming {half.run_dir} at step 3" in log
  steps = [
      r["step"]
      for r in map(json.loads, _read(half.run_dir, "metrics.jsonl").splitlines())
      if "loss" in r
  ]
  assert steps == [1, 2, 3, 4, 5, 6]
  mtimes = {
      c.name: os.path.getmtime(os.path.join(c.run_dir, "train.log")) for c in grid.sweep_cells()
  }
  assert run_cells(grid.sweep_cells()) == {}  # done and failed cells both stay as they are
  assert mtimes == {
      c.name: os.path.getmtime(os.path.join(c.run_dir, "train.log")) for c in grid.sweep_cells()
  }


def test_the_report_has_a_table_csv_and_three_png_plots(finished):
  grid, _ = finished
  for path in write_report(grid, os.path.join(grid.out_dir, "report")):
    assert os.path.getsize(path) > 0
    if path.endswith(".png"):
      assert _read(path, mode="rb")[:8] == b"\x89PNG\r\n\x1a\n"
  text = _read(grid.out_dir, "report", "results.md")
  assert "| nano | full_rank |" in text and "Learning-rate search" in text
  assert (
      sum(path.endswith(".png") for path in os.listdir(os.path.join(grid.out_dir, "report"))) == 3
  )


def test_subprocess_workers_train_a_cell_exactly_as_in_process(finished, tmp_path):
  grid, half = finished
  cell = grid.sweep_cells()[1]  # trained in one go (unlike ``half``)
  assert cell != half
  twin = _grid(tmp_path, learning_rates={"full_rank": (cell.learning_rate, 2 * cell.learning_rate)})
  statuses = run_cells(twin.sweep_cells(), workers=2, poll_s=0.2)
  assert set(statuses.values()) == {0}
  assert _summary(twin.sweep_cells()[0])["val_loss"] == _summary(cell)["val_loss"]


def test_a_methods_seeds_are_ready_while_another_search_still_runs(finished, tmp_path):
  grid, _ = finished
  twin = dataclasses.replace(grid, out_dir=str(tmp_path))
  method = os.path.join("nano", "full_rank")  # its search has ended, spam's has not begun
  shutil.copytree(os.path.join(grid.out_dir, method), os.path.join(twin.out_dir, method))
  (seed,) = twin.seed_cells(chosen_rates(twin))
  shutil.rmtree(seed.run_dir)
  spam = [c for c in twin.sweep_cells() if c.method == "spam"]
  assert [c.name for c in ready_cells(twin)] == [c.name for c in spam + [seed]]


@pytest.mark.parametrize(
    "cpus, workers, blocks",
    [
        ({0, 1}, 2, [{0}, {1}]),
        ({0, 1, 2, 3, 4}, 2, [{0, 1}, {2, 3}]),
        ({2, 5, 7}, 3, [{2}, {5}, {7}]),
        ({0, 1}, 3, [None, None, None]),
    ],
)
def test_cpu_blocks_split_this_process_cpus_evenly(monkeypatch, cpus, workers, blocks):
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cpus)
  assert cpu_blocks(workers) == [None if b is None else frozenset(b) for b in blocks]


@pytest.mark.parametrize("pin", [True, False])
def test_workers_keep_to_their_cpus_and_a_run_starts_when_its_results_are_ready(
    tmp_path, monkeypatch, pin
):
  # Three jobs, the third ready only once one of the first two has ended; the "training" is
  # a process that prints the CPUs it may run on.
  grid = _grid(tmp_path)
  first, second = grid.sweep_cells()
  (third,) = grid.seed_cells({("nano", "full_rank"): first.rates})
  mine = sorted(os.sched_getaffinity(0))
  blocks = [frozenset({mine[0]}), frozenset({mine[-1]})]
  monkeypatch.setattr(runner, "cpu_blocks", lambda workers: blocks)
  shows_cpus = "import os; print(sorted(os.sched_getaffinity(0)))"
  monkeypatch.setattr(runner, "_train_command", lambda job: [sys.executable, "-c", shows_cpus])

  def logged(cell):
    path = os.path.join(cell.run_dir, "train.log")
    return _read(path).splitlines() if os.path.exists(path) else []

  def ready():
    ended = any(logged(cell) for cell in (first, second))
    return runner.jobs_of([first, second] + ([third] if ended else []))

  statuses = runner._run_jobs(ready, 2, tqdm.tqdm(disable=True), 0.05, pin)
  assert statuses == {first.name: 0, second.name: 0, third.name: 0}  # each once
  shown = [logged(cell) for cell in (first, second, third)]
  if pin:
    assert shown[:2] == [[str(sorted(block))] for block in blocks]
    assert shown[2] in shown[:2]
  else:
    assert shown == [[str(mine)]] * 3


def test_sweeps_as_one_program_give_the_cells_their_own_runs_results(finished, tmp_path):
  # The search's first round trains as one sweep per method; its copies stand for the cells
  # (links to their directories), so the search, its extension, the failed method and the
  # seeds come out as from one run a cell.
  grid, half = finished
  twin = dataclasses.replace(grid, out_dir=str(tmp_path))
  run_grid(twin, as_one_program=True)
  assert os.path.isdir(os.path.join(twin.out_dir, "nano", "full_rank", "sweep_seed0_lr0.005_0.01"))
  assert searches(twin) == searches(grid)
  for cell in twin.sweep_cells():
    alone = dataclasses.replace(cell, out_dir=grid.out_dir)
    if cell.method == "spam":
      assert read_result(cell).status == read_result(alone).status == "failed"
      continue
    assert os.path.islink(cell.run_dir) and read_result(cell).status == "done"
    if alone.name != half.name:  # that one was trained with 3 steps first, then resumed
      assert _summary(cell)["val_loss"] == pytest.approx(_summary(alone)["val_loss"], rel=1e-5)
  (seed,) = twin.seed_cells(chosen_rates(twin))
  assert not os.path.islink(seed.run_dir) and read_result(seed).status == "done"


def test_emitted_jobs_are_the_cells_commands_stage_by_stage(tmp_path, capsys):
  grid = _grid(tmp_path)
  path = tmp_path / "grid.yaml"
  path.write_text(
      yaml.safe_dump(
          {
              "out_dir": str(tmp_path),
              "sizes": ["nano"],
              "methods": ["full_rank"],
              "seeds": [0, 1],
              "overrides": TINY,
              "learning_rates": {"full_rank": [0.005, 0.01]},
              "max_extensions": 0,
          }
      )
  )
  assert cli.main(["benchmark", str(path), "--emit-jobs", "-"]) == 0
  header, *lines = capsys.readouterr().out.splitlines()
  assert "sweep stage, 2 jobs" in header
  for line, cell in zip(lines, grid.sweep_cells(), strict=True):
    program, *argv = shlex.split(line)
    args = cli._parser().parse_args(argv)
    assert (program, args.command, args.accept_changes) == ("lowrank-jax", "train", True)
    assert load_config(args.config, args.overrides) == cell.config()
  stage, _ = job_lines(grid)
  assert stage == "sweep"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"methods": ("full_rank", "nope")}, "grid methods has unknown 'nope'"),
        ({"sizes": ()}, "grid sizes is empty"),
        ({"seeds": (0, 0)}, r"grid seeds=\[0, 0\] must be distinct"),
        ({"learning_rates": {"galore": (0.01,)}}, "learning_rates names 'galore'"),
        ({"learning_rates": {"full_rank": (0.01, -1)}}, r"learning_rates\['full_rank'\]"),
        ({"learning_rates": {"full_rank": (0.001, 0.01)}}, "are 10x apart; at most 2x"),
        (
            {"seed_counts": {"full_rank": 3}},
            r"seed_counts\['full_rank'\]=3 must be an integer in \[1, 2\]",
        ),
        ({"max_extensions": -1}, "max_extensions=-1 must be an integer >= 0"),
    ],
)
def test_a_bad_grid_is_a_one_line_error(tmp_path, fields, message):
  with pytest.raises(ValueError, match=message):
    _grid(tmp_path, **fields)


def test_a_bad_cell_config_is_caught_before_anything_runs(tmp_path):
  grid = _grid(tmp_path, overrides=tuple(TINY) + ("optimizer.lr=1",))
  with pytest.raises(ValueError, match=r"grid cell nano/full_rank/lr0.005_seed0: unknown config"):
    run_grid(grid)
  assert os.listdir(tmp_path) == []


def test_bad_grid_files_and_keys_exit_2_naming_them(tmp_path, capsys):
  path = tmp_path / "grid.yaml"
  path.write_text("out_dir: x\nsizes: [nano]\nmethods: [full_rank]\nseed: [0]\n")
  assert cli.main(["benchmark", str(path)]) == 2
  assert "unknown grid key 'seed'" in capsys.readouterr().err
  assert cli.main(["benchmark", str(tmp_path / "none.yaml")]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_the_shipped_grids_load_and_every_cell_validates():
  root = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "grids")
  names = sorted(
      os.path.relpath(os.path.join(folder, name), root)
      for folder, _, files in os.walk(root)
      for name in files
  )
  assert {"nano.yaml", "paper.yaml", "cpu_protocol_b.yaml"} <= set(names)
  for name in names:
    grid = Grid.load(os.path.join(root, name))
    grid.check()
    first = {cell.method for cell in grid.sweep_cells()}
    assert first == {m for m in grid.methods if not grid.waits_for_dense_rate(m)}


@pytest.mark.parametrize(
    "args, expected",
    [
        (["/data/tfds", "seed=3"], ["data.data_dir=/data/tfds", "seed=3"]),
        (
            ["seed=3"],
            [
                "data.source=embedded",
                "data.tokenizer=embedded",
                "data.vocab_size=8192",
                "model.overrides.vocab_size=8192",
                "seed=3",
            ],
        ),
    ],
)
def test_the_accelerator_script_runs_the_60m_grid_on_c4_or_offline(tmp_path, args, expected):
  import subprocess
  import sys

  root = os.path.join(os.path.dirname(__file__), "..", "..")
  script = os.path.join(root, "experiments", "gpu_60m.sh")
  assert subprocess.run(["shellcheck", script]).returncode == 0
  fake = tmp_path / "lowrank-jax"  # records its arguments instead of training
  fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
  fake.chmod(0o755)
  env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
  out = subprocess.run([script, *args], env=env, capture_output=True, text=True, check=True)
  command, grid, *overrides = json.loads(out.stdout)
  assert (command, grid) == ("benchmark", "experiments/grids/gpu_60m.yaml")
  assert overrides == expected
  cells = Grid.load(os.path.join(root, grid), overrides).sweep_cells()
  assert {c.method for c in cells} == {"full_rank", "galore", "low_rank", "low_rank_restarts"}
  assert all(c.config().model.preset == "60m" for c in cells)


def _visible_pixels(fig, colour) -> int:
  """Pixels of ``colour`` inside the plot and outside its legend: what a reader sees of a curve."""
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
  (ax,) = fig.axes
  seen = np.zeros(image.shape[:2], bool)
  for box, value in ((ax.get_window_extent(), True), (ax.get_legend().get_window_extent(), False)):
    x0, y0, x1, y1 = (int(v) for v in box.extents)  # display pixels from the bottom left
    seen[image.shape[0] - y1 : image.shape[0] - y0, x0:x1] = value
  return int((np.abs(image - np.asarray(colour) * 255).sum(-1) < 30)[seen].sum())


def test_every_curve_of_a_short_grid_is_drawn(tmp_path):
  import matplotlib
  import matplotlib.pyplot as plt

  rows = []
  for method, steps in (("full_rank", [6]), ("galore", [10, 20, 25])):  # logging.every=10
    cell = Cell("nano", method, 0.01, 0, (), (), str(tmp_path))
    os.makedirs(cell.run_dir)
    with open(os.path.join(cell.run_dir, "metrics.jsonl"), "w") as f:
      f.writelines(json.dumps({"step": s, "loss": 6.0 - s / 10}) + "\n" for s in steps)
    result = CellResult(cell, "done", {})
    rows.append(MethodRow("nano", method, 0.01, (result,), (result,)))
  fig = loss_curves_figure(rows)
  colours = matplotlib.colormaps["tab20"].colors
  try:
    assert [_visible_pixels(fig, colours[i]) > 5 for i in range(2)] == [True, True]
  finally:
    plt.close(fig)


def test_a_one_seed_grid_logs_every_run_and_counts_its_runs(tmp_path):
  grid = tmp_path / "grid.yaml"
  grid.write_text(
      yaml.safe_dump(
          {
              "out_dir": str(tmp_path / "out"),
              "sizes": ["nano"],
              "methods": ["full_rank"],
              "seeds": [0],
              "learning_rates": {"full_rank": [0.01]},
          }
      )
  )
  shown = subprocess.run(
      [sys.executable, "-m", "lowrank_jax", "benchmark", str(grid), *TINY, "logging.every=10"],
      capture_output=True,
      text=True,
  )
  assert shown.returncode == 0, shown.stderr[-2000:]
  assert "grid: 100%" in shown.stderr and "1/1" in shown.stderr and "0/0" not in shown.stderr
  (cell,) = Grid.load(str(grid)).sweep_cells()
  log = _read(cell.run_dir, "train.log")
  assert log.startswith("lowrank-jax train: full_rank on nano") and "val_ppl" in log


def test_methods_wait_for_the_dense_rate_full_ranks_two_rate_search_chooses(tmp_path, monkeypatch):
  # Losses from a bowl instead of runs: full rank's best is (0.002, 0.008); GaLore's cells
  # appear only once that search has ended, each at dense rate 0.008.
  grid = _grid(
      tmp_path,
      methods=("full_rank", "galore"),
      learning_rates={"full_rank": (0.001, 0.002, 0.004), "galore": (0.005, 0.01)},
      dense_learning_rates={"full_rank": (0.004, 0.008, 0.016)},
      dense_rate_from="full_rank",
      max_extensions=1,
  )
  bowl = {0.001: 1.0, 0.002: 0.0, 0.004: 1.0, 0.016: 1.0, 0.008: 0.0, 0.005: 2.0, 0.01: 3.0}
  ended: set[str] = set()

  def fake_result(cell):
    if cell.name not in ended:
      return CellResult(cell, "new", {})
    return CellResult(
        cell, "done", {"val_loss": bowl[cell.learning_rate] + bowl.get(cell.dense_learning_rate, 0)}
    )

  monkeypatch.setattr(results_module, "read_result", fake_result)
  first = ready_cells(grid)
  assert {c.method for c in first} == {"full_rank"} and len(first) == 9
  ended.update(c.name for c in first)
  assert searches(grid)["nano", "full_rank"].best == (0.002, 0.008)
  waiting = [c for c in ready_cells(grid) if c.method == "galore"]
  assert [c.rates for c in waiting] == [(0.005, 0.008), (0.01, 0.008)]
  assert all(c.argv()[-3] == "optimizer.dense_learning_rate=0.008" for c in waiting)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"dense_rate_from": "full_rank"}, "dense_rate_from='full_rank' must be a method of"),
        ({"dense_learning_rates": {"galore": (0.01,)}}, "which is not in methods"),
        ({"dense_learning_rates": {"full_rank": (0.01, 0.04)}}, "at most 2x"),
        ({"overrides": ("data.seed=3",)}, "set the grid's data_seed instead"),
        ({"data_seed": -1}, "data_seed=-1 must be an integer >= 0"),
    ],
)
def test_bad_per_group_and_data_seed_grid_keys_are_one_line_errors(tmp_path, fields, message):
  with pytest.raises(ValueError, match=message):
    _grid(tmp_path, **fields)


def test_a_cells_seed_varies_its_data_order_too(tmp_path):
  grid = _grid(tmp_path, data_seed=7)
  seeds = [grid.cell("nano", "full_rank", 0.01, seed) for seed in (0, 1, 2)]
  assert [c.config().data.seed for c in seeds] == [7, 8, 9]
  assert len({c.config().seed for c in seeds}) == 3


def test_a_grid_that_extends_another_replaces_only_the_keys_it_names(tmp_path):
  base = tmp_path / "a.yaml"
  base.write_text(
      yaml.safe_dump(
          {
              "out_dir": "runs/a",
              "sizes": ["nano"],
              "methods": ["full_rank", "galore"],
              "overrides": list(TINY),
              "learning_rates": {"galore": [0.01, 0.02]},
          }
      )
  )
  variant = tmp_path / "b.yaml"
  variant.write_text(f"extends: {base}\nout_dir: runs/b\nlearning_rates: {{full_rank: [0.001]}}\n")
  grid = Grid.load(str(variant))
  assert (grid.out_dir, grid.methods, grid.overrides) == (
      "runs/b",
      ("full_rank", "galore"),
      tuple(TINY),
  )
  assert grid.learning_rates == {"full_rank": (0.001,)}
  loop = tmp_path / "loop.yaml"
  loop.write_text(f"extends: {loop}\n")
  with pytest.raises(ValueError, match="extends itself"):
    Grid.load(str(loop))


def test_the_committed_protocol_grids_load_and_b_searches_full_ranks_dense_rate():
  a = Grid.load("experiments/grids/cpu_protocol.yaml")
  b = Grid.load("experiments/grids/cpu_protocol_b.yaml")
  assert b.overrides == a.overrides and b.method_overrides == a.method_overrides
  assert b.dense_rate_from == "full_rank" and set(b.dense_learning_rates) == {"full_rank"}
  assert {c.method for c in b.sweep_cells()} == {"full_rank"} and len(b.sweep_cells()) == 9
  for path in sorted(os.listdir("experiments/grids/restarts")):
    variant = Grid.load(os.path.join("experiments/grids/restarts", path))
    assert variant.overrides == a.overrides
    if path.endswith("_seeds.yaml"):  # a follow-up: seeds 1-2 beside its grid's seed 0
      grid = Grid.load(os.path.join("experiments/grids/restarts", path.replace("_seeds", "")))
      assert variant.seeds == (0, 1, 2) and variant.out_dir == grid.out_dir
    else:
      assert variant.seeds == (0,)
