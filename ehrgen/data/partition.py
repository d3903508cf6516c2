"""Out-of-core prepare: the event tables split into parts of whole patients, processed one at a time.

A MIMIC-IV-sized cohort with procedures and medications holds hundreds of millions of event rows:
far more than memory. Patients and admissions (a few million rows) stay in memory; the event
tables are streamed once from the source into Parquet files in a scratch folder, one folder per
*part*, where a part is a contiguous range of subject ids (so parts come out in the cohort's own
subject order and the result does not depend on how many there are). Each event row goes to the
part of the admission it names; rows naming no usable admission go to part 0, where the builder
counts them as it would in memory.
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

    def load(self, part: int, frames: dict[str, pl.LazyFrame]) -> dict[str, pl.DataFrame]:
        """The event rows of ``part``, per table (from ``frames`` themselves when not spilled)."""
        if self.root is None:
            return dict(
                zip(self.tables, pl.collect_all(list(frames.values()), engine="streaming"), strict=True)
            )
        out = {}
        for table in self.tables:
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


def patient_parts(subject_ids: pl.Series, n_parts: int) -> pl.DataFrame:
    """``subject_id, part``: ``n_parts`` contiguous ranges of sorted subject ids, equal in patients."""
    ids = subject_ids.sort()
    part = (np.arange(ids.len(), dtype=np.int64) * n_parts // max(ids.len(), 1)).astype(np.uint32)
    return pl.DataFrame({"subject_id": ids, PART_COLUMN: part})


def spill_events(
    frames: dict[str, pl.LazyFrame], visit_parts: pl.DataFrame, n_parts: int, root: Path
) -> EventParts:
    """Stream every event table once into ``root/<table>/part=<i>/`` (in memory when one part).

    ``visit_parts``: ``visit_id, part`` of the usable admissions.
    """
    tables = tuple(frames)
    if n_parts == 1:
        return EventParts(1, None, tables)
    lookup = visit_parts.lazy()
    for table, frame in frames.items():
        (
            frame.join(lookup, on="visit_id", how="left")
            .with_columns(pl.col(PART_COLUMN).fill_null(0))
            .sink_parquet(pl.PartitionBy(root / table, key=PART_COLUMN, include_key=False), mkdir=True)
        )
    return EventParts(n_parts, root, tables)
