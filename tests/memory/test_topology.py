"""Ahead-of-time compilation for a described topology, on fake CPU devices (no libtpu)."""

import importlib.util

import pytest

from lowrank_jax.memory.report import case_config
from lowrank_jax.memory.measured import measure_state, memory_run
from lowrank_jax.memory.topology import topology_devices


def test_the_command_compiles_for_a_described_mesh_and_fails_in_one_line_when_out_of_memory(
    tmp_path, capsys
):
  """nano's Low-Rank step compiled for the 8 fake devices as a (fsdp=4, tensor=2) mesh: the
  table is written, and a budget below what a device needs fails naming the bytes."""
  from lowrank_jax.cli import main

  budget_gib = 1e-4  # about 100 KiB: nano's Low-Rank step needs more on every device
  status = main(
      [
          "memory",
          "--topology",
          "cpu:8",
          "--sizes",
          "nano",
          "--methods",
          "low_rank",
          "--dtype",
          "fp32",
          "--tensor",
          "2",
          "--hbm-gb",
          str(budget_gib),
          "--out",
          str(tmp_path),
      ]
  )
  out, err = capsys.readouterr()
  assert status == 2
  progress, error = err.splitlines()
  assert progress == "[1/1] nano low_rank fp32 on cpu:8"
  assert error.startswith("lowrank-jax: error: out of memory: nano low_rank on cpu:8 (cpu, ")
  assert "needs" in error and "GiB per device" in error
  header, _, row = out.splitlines()[:3]
  values = dict(
      zip(
          [c.strip() for c in header.strip("|").split("|")],
          [c.strip() for c in row.strip("|").split("|")],
      )
  )
  assert values["mesh"] == "data=1 x fsdp=4 x tensor=2" and values["fits"] == "NO"
  # A device holds its share of the whole state (measured on no mesh) over 8 devices, give
  # or take what stays whole over the tensor pair (the column-parallel `a` factors).
  total = measure_state(memory_run(case_config("nano", "low_rank", "fp32"))).total
  per_device = float(values["state_per_device_gib"]) * 2**30
  assert total / 8 <= per_device < 2 * total / 8
  assert float(values["peak_per_device_gib"]) > budget_gib
  assert (tmp_path / "topology.md").exists() and (tmp_path / "topology.csv").exists()


@pytest.mark.parametrize(
    "name, message",
    [
        ("v5e", "is not KIND:SHAPE"),
        ("cpu:0", "needs a positive device count"),
        ("cpu:4096", "set XLA_FLAGS=--xla_force_host_platform_device_count=4096"),
    ],
)
def test_bad_topology_names_are_one_line_errors(name, message):
  with pytest.raises(ValueError, match=message):
    topology_devices(name)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is not None, reason="libtpu is installed")
def test_a_tpu_topology_without_libtpu_names_the_extra():
  with pytest.raises(ValueError, match=r"needs libtpu .*lowrank_jax\[tpu-aot\]"):
    topology_devices("v5e:16x16")
