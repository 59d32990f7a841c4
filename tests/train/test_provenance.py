"""A run's summary names the platform its numbers were computed on."""

import json

from lowrank_jax.cli import main
from lowrank_jax.optim import linalg
from lowrank_jax.train import provenance


def test_a_runs_summary_names_its_platform_and_lapack_kernels(tiny, tmp_path, capsys):
  run_dir = tmp_path / "run"
  assert main(["train", *tiny("schedule.total_steps=2", run_dir=run_dir)]) == 0
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["platform"] == provenance.platform()
  assert summary["platform"]["backend"] == "cpu"
  kernel = linalg.lapack_kernel()
  assert kernel and summary["platform"]["lapack_kernel"] == kernel
  assert f"lapack_kernel {kernel}" in capsys.readouterr().out
