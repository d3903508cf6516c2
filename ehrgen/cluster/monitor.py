"""Wait for submitted jobs without trusting ``sacct``.

``job.result()`` learns that a SLURM job died without a result only from ``sacct``, which many
clusters (and the local test cluster) lack, so it can wait forever. Here a job is done when its
result pickle exists (submitit writes one for successes and Python errors alike); a job that left
the queue (``squeue``) and stays gone for ``grace_s`` without a pickle was killed, cancelled or
ran out of time or memory. Requeued jobs stay in the queue (PENDING) and are simply waited for.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitit.core.utils import JobPaths, pickle_load


@dataclass
class Task:
    """One submitted job (or array task) to wait for."""

    label: str  # "shard 3", "train"
    job_id: str  # SLURM id ("123" or "123_4"); a pid for the local executor
    folder: Path  # submitit folder (may contain %j)
    job: Any = None  # the submitit Job when this process submitted it
    paths: JobPaths = field(init=False)

    def __post_init__(self) -> None:
        self.paths = JobPaths(self.folder, job_id=self.job_id, task_id=0)


@dataclass
class Outcome:
    ok: bool
    result: Any = None
    error: str = ""  # one line


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _read_result(task: Task) -> Outcome:
    status, value = pickle_load(task.paths.result_pickle)
    if status == "success":
        return Outcome(True, value)
    return Outcome(False, error=_last_line(str(value)) or status)


def squeue_states(job_ids: list[str]) -> dict[str, str] | None:
    """State of every listed job still in the queue, array tasks expanded; None if squeue fails."""
    if not job_ids:
        return {}
    base = sorted({j.split("_")[0] for j in job_ids})
    proc = subprocess.run(
        ["squeue", "-h", "-r", "-j", ",".join(base), "-o", "%i %T"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        # squeue exits 1 for "Invalid job id" once every listed job has been purged
        return {} if "Invalid job id" in proc.stderr else None
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def slurm_final_state(job_id: str) -> str:
    """``scontrol``'s JobState of a finished job ("" once purged)."""
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    for token in proc.stdout.split():
        if token.startswith("JobState="):
            return token.split("=", 1)[1]
    return ""


def _progress(done: int, failed: int, running: int, total: int) -> str:
    text = f"{done}/{total} done"
    if failed:
        text += f", {failed} failed"
    return text + f", {running} running, {total - done - failed - running} waiting"


def wait_for(
    tasks: list[Task],
    cluster: str,
    poll_s: float = 5.0,
    grace_s: float = 20.0,
    timeout_s: float | None = None,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
) -> dict[str, Outcome]:
    """Block until every task has an outcome; returns them keyed by task label."""
    outcomes: dict[str, Outcome] = {}

    def settle(task: Task, outcome: Outcome) -> None:
        outcomes[task.label] = outcome

    if cluster == "debug":  # in-process: running a job is waiting for it
        for task in tasks:
            try:
                settle(task, Outcome(True, task.job.result()))
            except Exception as err:  # noqa: BLE001 - any job error is reported, not raised
                settle(task, Outcome(False, error=_last_line(str(err)) or type(err).__name__))
        return outcomes

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    gone_since: dict[str, float] = {}
    shown = ""
    pending = list(tasks)
    while pending:
        states: dict[str, str] | None = {}
        if cluster == "slurm":
            states = squeue_states([t.job_id for t in pending])
        now = time.monotonic()
        still = []
        for task in pending:
            if cluster == "slurm":
                alive = states is None or task.job_id in states
            else:
                alive = task.job is None or not task.job.done()
            if task.paths.result_pickle.exists():
                try:
                    outcome = _read_result(task)
                except (EOFError, OSError):
                    outcome = None  # still being written (renamed into place; network file systems lag)
                # An error while the job is still queued may come from a run that SLURM is
                # requeueing: the next run replaces the pickle, so wait for the job to leave.
                if outcome is not None and (outcome.ok or cluster != "slurm" or not alive):
                    settle(task, outcome)
                    continue
            if alive:
                gone_since.pop(task.label, None)
            elif now - gone_since.setdefault(task.label, now) > grace_s:
                state = slurm_final_state(task.job_id) if cluster == "slurm" else "EXITED"
                tail = _last_line(task.paths.stderr.read_text()) if task.paths.stderr.is_file() else ""
                settle(
                    task,
                    Outcome(
                        False,
                        error=f"job {task.job_id} ended ({state or 'gone from the queue'}) without a result"
                        + (f"; last log line: {tail}" if tail else ""),
                    ),
                )
                continue
            still.append(task)
        pending = still
        failed = sum(1 for o in outcomes.values() if not o.ok)
        if cluster == "slurm":
            running = sum(1 for t in pending if (states or {}).get(t.job_id) == "RUNNING")
        else:  # the local executor starts every job at once
            running = len(pending)
        line = _progress(len(outcomes) - failed, failed, running, len(tasks))
        if line != shown:
            log(f"  {line}")
            shown = line
        if pending:
            if deadline is not None and time.monotonic() > deadline:
                for task in pending:
                    settle(task, Outcome(False, error=f"job {task.job_id} not done within {timeout_s:.0f}s"))
                break
            time.sleep(poll_s)
    return outcomes
