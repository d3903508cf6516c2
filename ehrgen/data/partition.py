"""Out-of-core prepare: the event tables split into parts of whole patients, processed one at a time.

A MIMIC-IV-sized cohort with procedures and medications holds hundreds of millions of event rows:
far more than memory. Patients and admissions (a few million rows) stay in memory; the event
tables are streamed once from the source into Parquet files in a scratch folder, one folder per
*part*, where a part is a contiguous range of subject ids (so parts come out in the cohort's own
subject order and the result does not depend on how many there are). Each event row goes to the
part of its own subject id (null ids to part 0); the builder checks it against every admission,
so each dropped row is counted under the same reason as in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

PART_COLUMN = "part"


@dataclass(frozen=True)
class EventParts:
    """Where each event table's rows are: in memory (one part) or in ``root/<table>/part=<i>/``."""

    n_parts: int
    root: Path | None
    tables: tuple[str, ...]

    def load(
        self, part: int, frames: dict[str, pl.LazyFrame], tables: tuple[str, ...] | None = None
    ) -> dict[str, pl.DataFrame]:
        """The event rows of ``part``, per table (all, or ``tables``; from ``frames`` themselves
        when not spilled)."""
        tables = self.tables if tables is None else tables
        if self.root is None:
            collected = pl.collect_all([frames[t] for t in tables], engine="streaming")
            return dict(zip(tables, collected, strict=True))
        out = {}
        for table in tables:
            folder = self.root / table / f"{PART_COLUMN}={part}"
            files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
            out[table] = (
                pl.read_parquet(files).cast({"code": pl.Categorical})
                if files
                else frames[table].clear().collect()
            )
        return out


def number_of_parts(event_rows: int, rows_per_part: int | None) -> int:
    """Parts for ``event_rows`` input event rows, about ``rows_per_part`` each (None: one part)."""
    if rows_per_part is None or event_rows <= rows_per_part:
        return 1
    return math.ceil(event_rows / rows_per_part)


def part_bounds(subject_ids: pl.Series, n_parts: int) -> np.ndarray:
    """The first subject id of parts 1..n-1: ``n_parts`` contiguous ranges equal in patients."""
    ids = subject_ids.sort().to_numpy()
    return ids[(np.arange(1, n_parts, dtype=np.int64) * len(ids)) // n_parts] if len(ids) else ids[:0]


def part_of(subject_ids: pl.Series | np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The part of each subject id (any id, known patient or not)."""
    return np.searchsorted(bounds, np.asarray(subject_ids), side="right").astype(np.uint32)


def part_expr(bounds: np.ndarray) -> pl.Expr:
    """:func:`part_of` as a streaming expression over ``subject_id`` (null ids: part 0).

    A sum of comparisons: elementwise, so the spill streams (a ``search_sorted`` against the
    bounds would materialise the column; a join with the admissions' parts costs 0.5 GB).
    """
    if not len(bounds):
        return pl.lit(0, pl.UInt32)
    above = [(pl.col("subject_id") >= int(b)).cast(pl.UInt32) for b in bounds]
    return pl.sum_horizontal(above).fill_null(0).cast(pl.UInt32)


def spill_events(frames: dict[str, pl.LazyFrame], bounds: np.ndarray, root: Path) -> EventParts:
    """Stream every event table once into ``root/<table>/part=<i>/`` (in memory with one part).

    A row goes to the part of its own subject id: a row naming another patient's admission is
    then found (and counted as a mismatch) through the admissions of every part.
    """
    tables = tuple(frames)
    if not len(bounds):
        return EventParts(1, None, tables)
    for table, frame in frames.items():
        frame.with_columns(part_expr(bounds).alias(PART_COLUMN)).sink_parquet(
            pl.PartitionBy(root / table, key=PART_COLUMN, include_key=False), mkdir=True
        )
    return EventParts(len(bounds) + 1, root, tables)
