"""Hydra multirun summary: one table of final metrics per job, best job highlighted.

Registered in conf/hydra/default.yaml, so every ``-m`` run (local or SLURM launcher) ends with
``<sweep dir>/sweep_summary.{csv,md}``. It reads each job's ``summary.json`` (written by
``ehrgen.train.run``), so it works the same whether jobs ran in-process or on cluster nodes.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import polars as pl
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def collect_sweep(sweep_dir: Path, metric: str = "val/loss") -> pl.DataFrame:
    """One row per job directory under ``sweep_dir`` holding a ``summary.json``: overrides + metrics."""
    rows: list[dict[str, Any]] = []
    for summary_file in sorted(
        sweep_dir.glob("*/summary.json"), key=lambda p: (len(p.parent.name), p.parent.name)
    ):
        summary = json.loads(summary_file.read_text())
        overrides_file = summary_file.parent / ".hydra" / "overrides.yaml"
        overrides = overrides_file.read_text().strip().splitlines() if overrides_file.is_file() else []
        row: dict[str, Any] = {
            "job": summary_file.parent.name,
            "overrides": " ".join(o.removeprefix("- ") for o in overrides),
        }
        row.update({k: v for k, v in summary.get("metrics", {}).items() if k.startswith("val/")})
        row["best_checkpoint"] = summary.get("best_checkpoint")
        rows.append(row)
    frame = pl.DataFrame(rows) if rows else pl.DataFrame({"job": []})
    if metric in frame.columns:
        frame = frame.sort(metric, nulls_last=True)
    return frame


def write_sweep_summary(sweep_dir: Path, metric: str = "val/loss", mode: str = "min") -> pl.DataFrame:
    """Write ``sweep_summary.csv`` and a Markdown table with the best job in bold; return the frame."""
    frame = collect_sweep(sweep_dir, metric)
    if frame.height == 0:
        log.warning("no job summary found under %s", sweep_dir)
        return frame
    if mode == "max" and metric in frame.columns:
        frame = frame.sort(metric, descending=True, nulls_last=True)
    frame.write_csv(sweep_dir / "sweep_summary.csv")
    columns = [c for c in frame.columns if c != "best_checkpoint"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for i, row in enumerate(frame.iter_rows(named=True)):
        cells = [_fmt(row[c]) for c in columns]
        if i == 0 and metric in frame.columns and row[metric] is not None:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    best = frame.row(0, named=True)
    lines += [
        "",
        f"Best by {metric} ({mode}): job {best['job']} ({best['overrides']}), checkpoint {best['best_checkpoint']}",
    ]
    (sweep_dir / "sweep_summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return frame


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


class SweepSummary(Callback):
    """Hydra callback: writes the sweep summary when all jobs of a multirun have returned."""

    def __init__(self, metric: str = "val/loss", mode: str = "min"):
        self.metric, self.mode = metric, mode

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_sweep_summary(Path(str(config.hydra.sweep.dir)), self.metric, self.mode)
