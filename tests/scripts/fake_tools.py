"""Stand-ins for gcloud, SLURM and the tools the launch scripts start, for the script tests.

One program, dispatched on the name it is called by (the tests write a launcher for it and
link that as gcloud, hostname, scontrol, srun, sbatch and python3). Every call appends a JSON record
(program, argv, cwd, selected environment) to $FAKE_LOG. The fakes act out what the real
tools would do to the extent the scripts rely on it:

* gcloud ``tpu-vm ssh --worker=W --command=C`` runs ``bash -c C`` once per worker, in the
  worker's home ``$FAKE_WORKERS/<name>-w-<i>`` with HOME there and hostname ``<name>-w-<i>``
  ($FAKE_TPU_WORKERS workers); ``tpu-vm scp SRC NAME:DEST --worker=all`` copies SRC into
  every worker's home; other gcloud commands only record; $FAKE_GCLOUD_EXIT sets the status.
* ``python3 -m pip install --user ... uv`` puts uv in ~/.local/bin; ``uv pip install`` puts
  lowrank-jax in the environment's bin (so launch finds it only where install put it).
* scontrol ``show hostnames LIST`` expands a SLURM host list; srun runs the command once per
  task of $SLURM_NTASKS with that task's SLURM_PROCID, output to --output (%j, %t filled in).
* lowrank-jax prints one line naming its host.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

WATCHED_ENV = ("JAX_LOCAL_DEVICE_IDS", "VIRTUAL_ENV", "SLURM_PROCID", "SLURM_NTASKS", "HOME")


def record(prog, **extra):
  entry = {
      "prog": prog,
      "argv": sys.argv[1:],
      "cwd": os.getcwd(),
      "exe": sys.argv[0],
      "env": {k: os.environ.get(k) for k in WATCHED_ENV},
      **extra,
  }
  with open(os.environ["FAKE_LOG"], "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.write(json.dumps(entry) + "\n")


def link_fake(path):
  """Make `path` run this fake (under the name `path` has)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if not path.exists():
    path.symlink_to(Path(sys.argv[0]).resolve())


def option(args, name):
  values = [a.split("=", 1)[1] for a in args if a.startswith(name + "=")]
  return values[-1] if values else None


def workers(name, which):
  """(hostname, home) of the workers `which` ('all' or '0,3') of the TPU VM `name`."""
  count = int(os.environ.get("FAKE_TPU_WORKERS", "2"))
  indices = range(count) if which == "all" else [int(i) for i in which.split(",")]
  for i in indices:
    host = f"{name}-w-{i}"
    home = Path(os.environ["FAKE_WORKERS"]) / host
    home.mkdir(parents=True, exist_ok=True)
    yield host, home


def gcloud(args):
  status = int(os.environ.get("FAKE_GCLOUD_EXIT", "0"))
  if status or args[:3] != ["compute", "tpus", "tpu-vm"] or args[3] not in ("ssh", "scp"):
    return status
  positional = [a for a in args[4:] if not a.startswith("-")]
  which = option(args, "--worker") or "0"
  if args[3] == "scp":
    src, dest = positional
    name, dest = dest.split(":", 1)
    for _, home in workers(name, which):
      shutil.copy(src, home / dest)
    return 0
  for host, home in workers(positional[0], which):
    env = dict(os.environ, HOME=str(home), FAKE_HOSTNAME=host)
    status |= subprocess.run(
        ["bash", "-c", option(args, "--command")], cwd=home, env=env
    ).returncode
  return status


def expand_hostlist(hostlist):
  hosts = []
  for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", hostlist):
    if plain:
      hosts.append(plain)
      continue
    for part in ranges.split(","):
      lo, _, hi = part.partition("-")
      hosts += [f"{prefix}{i:0{len(lo)}d}" for i in range(int(lo), int(hi or lo) + 1)]
  return hosts


def srun(args):
  n_options = next(i for i, a in enumerate(args) if not a.startswith("-"))
  options, command = args[:n_options], args[n_options:]
  tasks = []
  for i in range(int(os.environ["SLURM_NTASKS"])):
    env = dict(
        os.environ,
        SLURM_PROCID=str(i),
        SLURM_LOCALID="0",
        SLURM_NODEID=str(i),
        SLURM_STEP_NODELIST=os.environ["SLURM_JOB_NODELIST"],
    )
    out = (
        option(options, "--output").replace("%j", os.environ["SLURM_JOB_ID"]).replace("%t", str(i))
    )
    with open(out, "w") as f:
      tasks.append(subprocess.Popen(command, env=env, stdout=f, stderr=subprocess.STDOUT))
  return max(t.wait() for t in tasks)


def main():
  prog, args = Path(sys.argv[0]).name, sys.argv[1:]
  record(prog)
  if prog == "gcloud":
    return gcloud(args)
  if prog == "hostname":
    print(os.environ.get("FAKE_HOSTNAME", "localhost"))
  elif prog == "scontrol" and args[:2] == ["show", "hostnames"]:
    print("\n".join(expand_hostlist(args[2])))
  elif prog == "srun":
    return srun(args)
  elif prog == "python3" and args[:3] == ["-m", "pip", "install"] and "uv" in args:
    link_fake(Path.home() / ".local/bin/uv")
  elif prog == "uv" and args[:2] == ["pip", "install"]:
    link_fake(Path(args[args.index("--python") + 1]).parent / "lowrank-jax")
  elif prog == "lowrank-jax":
    print(f"training on {os.environ.get('FAKE_HOSTNAME', 'localhost')}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
