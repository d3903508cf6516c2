"""The local single-node SLURM cluster (scripts/slurm_local.sh) for tests marked ``slurm``.

``ensure_slurm()`` starts it once per process; ``slurm_cluster_env()`` is the body of the session
fixture ``slurm_cluster`` registered in conftest.py. Outside CI a machine that cannot run the
cluster (not root, SLURM not installed, or a cluster that does not start) skips these tests with
the reason; with ``CI=true`` it installs SLURM when needed and fails instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_local.sh"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
# Terminal job states as scontrol reports them (a requeued job passes through REQUEUED -> PENDING).
FINISHED_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)

_started_here = False


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI requires the local SLURM cluster)", pytrace=False)
    pytest.skip(reason)


def _check_can_run() -> None:
    """Skip (fail in CI) when this machine cannot run scripts/slurm_local.sh."""
    if os.name != "posix" or shutil.which("bash") is None:
        _unavailable("the local SLURM cluster needs Linux and bash")
    if os.geteuid() != 0:
        _unavailable("the local SLURM cluster runs its daemons as root; run the slurm tests as root")
    installed = all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not installed and not IN_CI:
        # a test run never installs system packages on a user's machine; CI's .ci/run does
        _unavailable(
            "SLURM is not installed (scripts/slurm_local.sh start installs and starts a local cluster)"
        )
    if not installed and shutil.which("apt-get") is None:
        _unavailable("SLURM is not installed and apt-get is unavailable to install it")


def ensure_slurm() -> dict[str, str]:
    """Start the cluster if it is not running; return the env vars its clients need (SLURM_CONF)."""
    global _started_here
    _check_can_run()
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        _unavailable(f"scripts/slurm_local.sh start failed (exit {proc.returncode}):\n{tail}")
    env = {}
    for line in proc.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line.removeprefix("export ").split("=", 1)
            env[key] = value
    if "SLURM_CONF" not in env:
        _unavailable(f"scripts/slurm_local.sh start printed no SLURM_CONF:\n{proc.stdout}")
    _started_here = _started_here or "already running" not in proc.stderr
    return env


def stop_slurm() -> None:
    """Stop the daemons (by their PID files)."""
    subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120, check=True)


def slurm_cluster_env() -> Iterator[dict[str, str]]:
    """Session fixture body: start the cluster, export its env vars, stop it if this session started it."""
    env = ensure_slurm()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if _started_here and os.environ.get("EHRGEN_SLURM_KEEP") != "1":
            stop_slurm()


def job_info(job_id: str) -> dict[str, str]:
    """``scontrol show job -o`` as a dict (JobState, Restarts, ExitCode, ...); {} once purged."""
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    if proc.returncode != 0:
        return {}
    info = {}
    # Values never contain spaces except Command/WorkDir-like paths, which tests do not read.
    for token in proc.stdout.split():
        key, sep, value = token.partition("=")
        if sep:
            info.setdefault(key, value)
    return info


def wait_for_state(
    job_id: str, states: Iterable[str], timeout_s: float, poll_s: float = 0.5
) -> dict[str, str]:
    """Poll scontrol until the job is in one of ``states``; fail with its last info on timeout."""
    wanted = set(states)
    info: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = job_info(job_id)
        if info.get("JobState") in wanted:
            return info
        if info.get("JobState") in FINISHED_STATES:
            break
        time.sleep(poll_s)
    pytest.fail(f"job {job_id} never reached {sorted(wanted)} within {timeout_s:.0f}s; last info: {info}")


def sbatch(*args: str) -> str:
    """Submit with sbatch --parsable; return the job id."""
    proc = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, check=True)
    return proc.stdout.strip().split(";")[0]


def submitit_results(jobs: list, timeout_s: float) -> list:
    """Results of submitit jobs, waiting at most ``timeout_s``.

    ``job.result()`` alone could wait forever here: submitit learns that a job died without a
    result only from ``sacct``, and this cluster has no accounting database. A finished job always
    leaves its result pickle (errors included), so wait for those and cancel on timeout.
    """
    deadline = time.monotonic() + timeout_s
    while not all(job.paths.result_pickle.exists() for job in jobs):
        if time.monotonic() > deadline:
            ids = [job.job_id for job in jobs]
            subprocess.run(["scancel", *{i.split("_")[0] for i in ids}], check=False)
            logs = "\n".join((job.stderr() or "")[-1500:] for job in jobs)
            pytest.fail(f"submitit jobs {ids} not done within {timeout_s:.0f}s; stderr:\n{logs}")
        time.sleep(0.5)
    return [job.result() for job in jobs]
