"""Two processes on localhost (CPU, gloo collectives) train as one: the same losses as one
process on the same four devices, a signal to either stops both after the same step,
checkpoints are written and restored by both, and one process logs."""

import json
import os
import signal
import socket
import sys

import numpy as np
import pytest

from lowrank_jax.train import distributed
from lowrank_jax.train.config import DistributedSection

# The fault tests' helpers (child runs of the tiny config); the test directories are not
# packages, so their directory goes on the path.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "faults"))
import fault_helpers as helpers  # noqa: E402

DEVICES = 4
# Paper mode (a row per document) gives each global batch the same rows whatever the
# process count; packing would pack each process's documents apart. The constant
# learning rate makes the first steps independent of schedule.total_steps.
SHARED = [helpers.CONSTANT, "data.mode=paper", "mesh.data=1", "mesh.fsdp=-1"]
REFERENCE_STEPS = 30  # enough for the two-process run to stop at any step up to 27


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]


@pytest.fixture
def spawn():
  """Starts runs in child processes (:func:`start_in_processes`); kills any left at the end."""
  started = []

  def start(*args, **kwargs) -> list:
    started.extend(start_in_processes(*args, **kwargs))
    return started[-args[1] :]

  yield start
  for child in started:
    if child.poll() is None:
      child.kill()
      child.wait()


def start_in_processes(run_dir, count: int, *extra, cache=None, flags=()) -> list:
  """Starts the tiny run as ``count`` processes sharing ``DEVICES`` fake CPU devices,
  compiled programs kept in ``cache`` (a directory) for later runs; ``flags`` go to
  ``lowrank-jax train``."""
  env = {
      name: value
      for name, value in os.environ.items()
      if name not in distributed.ENVIRONMENT.values()
  }
  env.update(
      JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES // count}"
  )
  if cache is not None:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  address = f"localhost:{_free_port()}"
  joined = (
      []
      if count == 1
      else [f"distributed.coordinator_address={address}", f"distributed.num_processes={count}"]
  )
  return [
      helpers.start_training(
          run_dir,
          *SHARED,
          *joined,
          *extra,
          *([f"distributed.process_id={rank}"] if joined else []),
          env=env,
          flags=flags,
      )
      for rank in range(count)
  ]


def finish(children: list) -> list[str]:
  """Waits for ``children`` to exit 0; returns their outputs."""
  outputs = []
  for rank, child in enumerate(children):
    output, _ = child.communicate(timeout=400)  # a heavily shared CPU is slow
    outputs.append(output.decode())
    assert child.returncode == 0, f"process {rank}:\n{outputs[-1][-3000:]}"
  return outputs


def test_two_processes_match_one_stop_together_and_resume(tmp_path, spawn):
  reference_dir, run_dir, cache = tmp_path / "reference", tmp_path / "run", tmp_path / "cache"
  reference_run = spawn(
      reference_dir, 1, f"schedule.total_steps={REFERENCE_STEPS}", "checkpoint.every=0"
  )
  first = spawn(run_dir, 2, helpers.FOREVER, cache=cache)
  helpers.wait_until(first[0], lambda: helpers.logged_steps(run_dir) >= 2)
  first[1].send_signal(signal.SIGTERM)  # to process 1 alone: both stop after the same step
  outputs = finish(first)
  assert ["\nsummary\n" in output for output in outputs] == [True, False]  # process 0 prints
  stopped = json.loads((run_dir / "summary.json").read_text())
  assert stopped["stopped_by"] == "SIGTERM"
  assert helpers.committed_steps(run_dir)[-1] == stopped["steps"]
  saved = os.listdir(run_dir / "checkpoints" / str(stopped["steps"]) / "data")
  assert sorted(name for name in saved if name.startswith("process_")) == [
      "process_0-of-2.json",
      "process_1-of-2.json",
  ]  # each process's data position

  total = stopped["steps"] + 3
  assert total <= REFERENCE_STEPS, f"stopped late, at step {stopped['steps']}"
  resume = spawn(
      run_dir, 2, f"schedule.total_steps={total}", cache=cache, flags=["--accept-changes"]
  )
  finish(resume)  # resumes with fewer steps than the "forever" run it continues
  finish(reference_run)
  reference = dict(helpers.loss_records(reference_dir))
  records = helpers.loss_records(run_dir)
  assert [step for step, _ in records] == list(range(1, total + 1))  # logged by process 0 alone
  np.testing.assert_allclose(
      [loss for _, loss in records], [reference[step] for step in range(1, total + 1)], rtol=1e-5
  )
  assert json.loads((run_dir / "summary.json").read_text())["steps"] == total


def test_unset_fields_come_from_the_environment():
  section = DistributedSection(coordinator_address="host:1234")
  environ = {
      "JAX_NUM_PROCESSES": "4",
      "JAX_PROCESS_ID": "3",
      "JAX_COORDINATOR_ADDRESS": "ignored:1",
  }
  resolved = distributed.resolve(section, environ)
  assert (resolved["coordinator_address"], resolved["num_processes"], resolved["process_id"]) == (
      "host:1234",
      4,
      3,
  )
  assert resolved["cluster_detection_method"] == "deactivate"


def test_auto_leaves_unset_fields_to_the_cluster():
  resolved = distributed.resolve(DistributedSection(auto=True, initialization_timeout=9), {})
  assert resolved == {
      "coordinator_address": None,
      "num_processes": None,
      "process_id": None,
      "initialization_timeout": 9,
  }


@pytest.mark.parametrize(
    "section,environ,message",
    [
        (
            DistributedSection(process_id=0),
            {},
            "distributed.coordinator_address, " "distributed.num_processes are unset",
        ),
        (DistributedSection(), {"JAX_PROCESS_ID": "one"}, "JAX_PROCESS_ID='one' is not an integer"),
        (
            DistributedSection(num_processes=2),
            {"JAX_PROCESS_ID": "2", "JAX_COORDINATOR_ADDRESS": "h:1"},
            "distributed.process_id=2 must be below distributed.num_processes=2",
        ),
    ],
)
def test_bad_process_layouts_raise_one_line_errors(section, environ, message):
  with pytest.raises(ValueError, match=message):
    distributed.resolve(section, environ)


def test_a_single_process_connects_nothing(monkeypatch):
  for name in distributed.ENVIRONMENT.values():
    monkeypatch.delenv(name, raising=False)
  assert not distributed.initialize(DistributedSection())
