"""What runs on the compute nodes: picklable callables around each command's ``run(cfg)``.

submitit pickles these with their composed config (``DictConfig``) at submission; the modules they
call are imported on the node, so the node needs the same ehrgen install (see ``slurm.setup``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import submitit
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


def _job_logging() -> None:
    """INFO logs to the job's stderr file (``@hydra.main`` would set this up; ``run(cfg)`` does not)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")


@contextlib.contextmanager
def _killed_means_no_result() -> Iterator[None]:
    """After SIGTERM (scontrol requeue, preemption, scancel), end without a result.

    SLURM signals every process of the job: a helper process (the W&B service, DataLoader
    workers) may die first and make the run fail with an ordinary exception, which submitit would
    store as the job's final error although SLURM is about to run the job again. A SystemExit
    leaves no result pickle, so the launcher keeps waiting for the requeued run.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    terminated = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: object) -> None:
        terminated.set()
        if callable(previous):
            previous(signum, frame)  # submitit's handler (it logs and lets the job go on)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except Exception as err:
        if terminated.is_set():
            raise SystemExit(
                f"stopped by SIGTERM (requeue, preemption or cancel): {type(err).__name__}: {err}"
            ) from err
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def generate_shard(cfg: DictConfig, shard: int, num_shards: int, out_dir: str) -> dict[str, Any]:
    """One array task: ``ehrgen.generate.run`` for ``shard`` of ``num_shards`` into ``out_dir``."""
    from ehrgen.generate import run

    _job_logging()
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.shard_index, cfg.num_shards = int(shard), int(num_shards)
        cfg.out_dir = out_dir
        cfg.formats = ["cohort"]  # exports are written once, from the merged cohort
        cfg.overwrite = True  # the launcher submits only shards whose output is missing or broken
    with _killed_means_no_result():
        summary = run(cfg)
    return {k: summary[k] for k in ("out_dir", "n_patients", "seconds", "patients_per_s")}


class TrainJob(submitit.helpers.Checkpointable):
    """``ehrgen.train.run`` in a fixed run directory; requeue-safe.

    On a timeout (USR2 before the limit) or preemption, submitit calls :meth:`checkpoint` and
    requeues the job with the returned submission of this same object; a job requeued by SLURM
    itself (``scontrol requeue``, node failure) reruns the original one. Both land here again with
    the same ``paths.run_dir``: training resumes from its ``checkpoints/last.ckpt`` and
    ``ehrgen.train`` reuses the W&B run id stored in ``wandb_id.txt``.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    @property
    def run_dir(self) -> Path:
        return Path(str(self.cfg.paths.run_dir))

    def __call__(self) -> dict[str, Any]:
        from ehrgen.train import run

        _job_logging()
        cfg = self.cfg.copy()
        last = self.run_dir / "checkpoints" / "last.ckpt"
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        if last.is_file():
            # This run dir's own progress beats any ckpt_path given at submission (a starting point).
            with open_dict(cfg):
                cfg.ckpt_path = str(last)
            log.info("resuming from %s (SLURM restart %s)", last, restarts)
        with _killed_means_no_result():
            return run(cfg)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue this job unchanged: the state that matters (last.ckpt, wandb_id.txt) is on disk."""
        log.warning("time limit or preemption: requeueing; training resumes from %s", self.run_dir)
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def run_prepare(cfg: DictConfig) -> str:
    """``ehrgen.prepare.run``; returns the cohort directory."""
    from ehrgen.prepare import run

    _job_logging()
    with _killed_means_no_result():
        return str(run(cfg))


def neighbour_block(cfg: DictConfig, block: int, n_blocks: int, directory: str) -> dict[str, Any]:
    """One array task of ``evaluate ... blocks=N``: block ``block`` of the privacy searches."""
    from ehrgen.evaluate import neighbour_block

    _job_logging()
    with _killed_means_no_result():
        meta = neighbour_block(cfg, block, n_blocks, directory)
    return {k: meta[k] for k in ("block", "n_blocks", "pairs", "seconds")}


def run_evaluate(cfg: DictConfig) -> dict[str, Any]:
    """``ehrgen.evaluate.run``; returns the key metrics (metrics.json holds everything)."""
    from ehrgen.evaluate import SUMMARY, run

    _job_logging()
    with _killed_means_no_result():
        payload = run(cfg)
    metrics = payload.get("metrics", {})
    return {
        "out_dir": str(cfg.out_dir),
        "metrics": {k: metrics[k]["value"] for k in SUMMARY if k in metrics},
        "warnings": payload.get("warnings", []),
    }
