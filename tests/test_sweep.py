"""Hydra multirun sweeps of loss weights: per-job outputs and W&B runs, and the sweep summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from test_train import TINY

from ehrgen.sweep import write_sweep_summary


def test_summary_table_marks_the_best_job(tmp_path: Path) -> None:
    import json

    for job, loss in [("0", 2.0), ("1", 1.5), ("2", 3.0)]:
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / "summary.json").write_text(
            json.dumps({"metrics": {"val/loss": loss, "train/loss": 9.0}, "best_checkpoint": f"{job}.ckpt"})
        )
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- model.loss.w_cooc={job}\n")
    frame = write_sweep_summary(tmp_path)
    assert frame["job"].to_list() == ["1", "0", "2"]
    assert "train/loss" not in frame.columns
    md = (tmp_path / "sweep_summary.md").read_text().splitlines()
    assert md[2].startswith("| **1** | **model.loss.w_cooc=1** | **1.5**")
    assert "Best by val/loss (min): job 1" in md[-1]
    assert pl.read_csv(tmp_path / "sweep_summary.csv").height == 3


@pytest.mark.slow
def test_local_multirun_grid_with_wandb_offline(tmp_path: Path) -> None:
    env = {**os.environ, "EHRGEN_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "ehrgen.train",
        "-m",
        *TINY,
        "data.n_patients=120",
        "trainer.max_epochs=1",
        "logger=wandb",
        "model.loss.w_age=0.001,0.01",
        "model.loss.w_cooc=0.0,0.1",
        f"hydra.sweep.dir={sweep}",
    ]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    run_ids = set()
    for job in jobs:
        assert (job / "summary.json").is_file()
        assert list((job / "checkpoints").glob("best-*.ckpt"))
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1
        run_ids.add((job / "wandb_id.txt").read_text())
    assert len(run_ids) == 4  # one W&B run per job
    summary = pl.read_csv(sweep / "sweep_summary.csv")
    assert summary.height == 4 and summary["val/loss"].is_sorted()
    assert "model.loss.w_cooc=0.1" in " ".join(summary["overrides"].to_list())
