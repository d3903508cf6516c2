"""Hydra multirun summary: one table of final metrics per job, best job highlighted.

Registered in conf/hydra/default.yaml, so every ``-m`` run (local or SLURM launcher, grid or Optuna
sweeper) ends with ``<sweep dir>/sweep_summary.{csv,md}``. It reads each job's ``summary.json``
(written by ``ehrgen.train.run``), so it works the same whether jobs ran in-process or on cluster
nodes. After an Optuna sweep (conf/sweep/optuna_loss_weights.yaml) each trial is one job directory,
the ranking follows the study's direction, and the trial Optuna reports as best
(``optimization_results.yaml``) is the one in bold.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import polars as pl
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

MODES = {"min": "min", "max": "max", "minimize": "min", "maximize": "max"}
OPTUNA_RESULTS = "optimization_results.yaml"


def _job_overrides(job_dir: Path) -> list[str]:
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return []
    return [o.removeprefix("- ") for o in overrides_file.read_text().strip().splitlines()]


def collect_sweep(sweep_dir: Path, metric: str = "val/loss") -> pl.DataFrame:
    """One row per job directory under ``sweep_dir`` holding a ``summary.json``: overrides + metrics.

    ``overrides`` lists only what differs between jobs (the swept or sampled values); overrides
    every job shares (the rest of the command line) are left out unless there is a single job.
    """
    summary_files = sorted(
        sweep_dir.glob("*/summary.json"), key=lambda p: (len(p.parent.name), p.parent.name)
    )
    job_overrides = [_job_overrides(f.parent) for f in summary_files]
    shared = set.intersection(*map(set, job_overrides)) if len(job_overrides) > 1 else set()
    rows: list[dict[str, Any]] = []
    for summary_file, overrides in zip(summary_files, job_overrides, strict=True):
        summary = json.loads(summary_file.read_text())
        row: dict[str, Any] = {
            "job": summary_file.parent.name,
            "overrides": " ".join(o for o in overrides if o not in shared),
        }
        row.update({k: v for k, v in summary.get("metrics", {}).items() if k.startswith("val/")})
        row["best_checkpoint"] = summary.get("best_checkpoint")
        rows.append(row)
    frame = pl.DataFrame(rows) if rows else pl.DataFrame({"job": []})
    if metric in frame.columns:
        frame = frame.sort(metric, nulls_last=True)
    return frame


def optuna_best_job(sweep_dir: Path) -> tuple[str, dict[str, Any]] | None:
    """``(job, results)`` for the trial that ``optimization_results.yaml`` names best, else None.

    The trial is found by its parameter values in each job's overrides, not by its number, so it
    does not depend on how the sweeper numbered jobs.
    """
    results_file = sweep_dir / OPTUNA_RESULTS
    if not results_file.is_file():
        return None
    results = OmegaConf.to_container(OmegaConf.load(results_file))
    best = results.get("best_params") if isinstance(results, dict) else None
    if not best:  # multi-objective studies write a Pareto front instead of one best trial
        return None
    for job_dir in sorted(p.parent for p in sweep_dir.glob("*/summary.json")):
        values = dict(o.split("=", 1) for o in _job_overrides(job_dir) if "=" in o)
        if all(k in values and _same_value(values[k], v) for k, v in best.items()):
            return job_dir.name, results
    log.warning("%s names a best trial %s that matches no job directory", results_file, best)
    return None


def _same_value(text: str, value: Any) -> bool:
    try:
        return math.isclose(float(text), float(value), rel_tol=1e-12, abs_tol=0.0)
    except (TypeError, ValueError):  # a categorical choice; Hydra writes booleans lower-case
        return text == (str(value).lower() if isinstance(value, bool) else str(value))


def write_sweep_summary(sweep_dir: Path, metric: str = "val/loss", mode: str = "min") -> pl.DataFrame:
    """Write ``sweep_summary.csv`` and a Markdown table with the best job in bold; return the frame.

    ``mode`` is ``min``/``max`` (or Optuna's ``minimize``/``maximize``). When the sweep dir holds an
    Optuna ``optimization_results.yaml``, its best trial is the bold row and is named at the end.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    mode = MODES[mode]
    frame = collect_sweep(sweep_dir, metric)
    if frame.height == 0:
        log.warning("no job summary found under %s", sweep_dir)
        return frame
    if mode == "max" and metric in frame.columns:
        frame = frame.sort(metric, descending=True, nulls_last=True)
    frame.write_csv(sweep_dir / "sweep_summary.csv")

    optuna = optuna_best_job(sweep_dir)
    jobs = frame["job"].to_list()
    if optuna is not None:
        best_index: int | None = jobs.index(optuna[0])
    elif metric in frame.columns and frame[metric][0] is not None:
        best_index = 0
    else:
        best_index = None
    columns = [c for c in frame.columns if c != "best_checkpoint"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for i, row in enumerate(frame.iter_rows(named=True)):
        cells = [_fmt(row[c]) for c in columns]
        if i == best_index:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    best = frame.row(best_index or 0, named=True)
    lines += [
        "",
        f"Best by {metric} ({mode}): job {best['job']} ({best['overrides']}), checkpoint {best['best_checkpoint']}",
    ]
    if optuna is not None:
        job, results = optuna
        params = " ".join(f"{k}={v}" for k, v in results["best_params"].items())
        lines.append(
            f"Optuna best trial ({OPTUNA_RESULTS}): job {job}, value {_fmt(results['best_value'])}, {params}"
        )
    (sweep_dir / "sweep_summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return frame


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def sweep_mode(config: DictConfig, default: str = "min") -> str:
    """``min``/``max`` from the sweeper's optimisation direction (Optuna), else ``default``."""
    direction = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
    if direction is None:
        return MODES[default]
    if isinstance(direction, ListConfig | list):  # multi-objective: no single best to rank by
        log.warning("multi-objective sweep (direction=%s): summary ranked by %s", list(direction), default)
        return MODES[default]
    name = getattr(direction, "name", str(direction))  # an Enum (Optuna's structured config) or a str
    return MODES[name]


class SweepSummary(Callback):
    """Hydra callback: writes the sweep summary when all jobs of a multirun have returned.

    The ranking direction is the sweeper's ``direction`` when it has one (Optuna), else ``mode``.
    """

    def __init__(self, metric: str = "val/loss", mode: str = "min"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
        self.metric, self.mode = metric, mode

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        mode = sweep_mode(config, self.mode)
        write_sweep_summary(Path(str(config.hydra.sweep.dir)), self.metric, mode)
