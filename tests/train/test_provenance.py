"""A run's summary names the platform its numbers were computed on."""

import json

import pytest

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


@pytest.mark.parametrize(
    "flags, isa",
    [
        ("fpu sse2 avx avx2 fma avx512f avx512bw", "avx512f"),
        ("sse2 avx fma avx2", "avx2"),
        ("", None),
    ],
)
def test_the_vector_isa_is_the_widest_the_cpu_reports(monkeypatch, flags, isa):
  monkeypatch.setattr(provenance, "_cpuinfo", lambda: {"model name": "A CPU", "flags": flags})
  assert provenance.platform()["vector_isa"] == isa
  assert provenance.platform()["cpu"] == "A CPU"


def test_the_xla_flags_of_the_run_are_recorded(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", " --xla_cpu_max_isa=AVX2 ")
  assert provenance.platform()["xla_flags"] == "--xla_cpu_max_isa=AVX2"
