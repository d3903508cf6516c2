"""Synthetic example patients at the end of training: printed, and logged as a W&B table.

They come from ``ehrgen.generate`` (demographics-only mode, the trained checkpoint), so what is
shown is exactly what users will generate; never real patients.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl
import torch
from lightning.pytorch.loggers import Logger, WandbLogger

from ehrgen.callbacks import GENERATION_KEY
from ehrgen.config import compose
from ehrgen.data.codes import display_code

log = logging.getLogger(__name__)


def synthetic_examples(ckpt: str, out_dir: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Generate ``n`` patients from ``ckpt`` into ``out_dir``; return them with code titles."""
    from ehrgen.generate import run as generate

    cfg = compose(
        "generate",
        [
            f"ckpt={ckpt}",
            f"out_dir={out_dir}",
            f"n_patients={n}",
            f"seed={seed}",
            "progress=false",
            "overwrite=true",
        ],
    )
    generate(cfg)
    titles = (
        torch.load(ckpt, weights_only=True, map_location="cpu")
        .get(GENERATION_KEY, {})
        .get("code_descriptions", {})
    )
    patients = pl.read_parquet(out_dir / "cohort" / "data" / "train")
    return [
        {
            "sex": "F" if row["sex"] == 1 else "M",
            "age": float(row["age"]),
            "visits": [
                [f"{display_code(c)} {titles.get(c, '')}".strip() for c in visit["codes"]]
                for visit in row["visits"]
            ],
        }
        for row in patients.iter_rows(named=True)
    ]


def log_examples(loggers: list[Logger], examples: list[dict[str, Any]]) -> None:
    """A table of synthetic patients and their code-frequency chart for W&B (synthetic data only)."""
    for lg in loggers:
        if not isinstance(lg, WandbLogger) or not examples:
            continue
        rows = [
            [i, p["sex"], round(p["age"], 1), len(p["visits"]), " | ".join("; ".join(v) for v in p["visits"])]
            for i, p in enumerate(examples)
        ]
        lg.log_table("synthetic/patients", columns=["patient", "sex", "age", "visits", "codes"], data=rows)
        counts = pl.DataFrame({"code": [c.split(" ")[0] for p in examples for v in p["visits"] for c in v]})
        top = counts.group_by("code").len().sort("len", descending=True).head(25)
        import wandb

        table = wandb.Table(data=top.rows(), columns=["code", "count"])
        lg.experiment.log(
            {
                "synthetic/code_frequency": wandb.plot.bar(
                    table, "code", "count", title="Top codes in synthetic patients"
                )
            }
        )
