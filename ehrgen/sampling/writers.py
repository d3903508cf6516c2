"""Where generated patients go first: a synthetic cohort directory (``ehrgen.sampling.exporters``
turns any cohort into MIMIC-III / MIMIC-IV CSVs or a MEDS dataset).

A synthetic cohort is written in exactly the format ``prepare`` writes (``ehrgen.data.cohort``), so
training, evaluation and the exporters treat real and synthetic cohorts alike. Synthetic patients
all go to the ``train`` split unless told otherwise: a synthetic cohort is a sample, not a study
population to split, and real/synthetic comparisons use all splits of the synthetic cohort.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp

from ehrgen.data.build import (
    AGE_CLAMP_ABOVE,
    AGE_CLAMP_TO,
    COOCCURRENCE_FILE,
    code_counts,
    code_table,
    codes_per_table,
    cooccurrence_matrix,
    layout_metadata,
)
from ehrgen.data.codes import DIAGNOSIS, EVENT_TYPES, event_type_expr
from ehrgen.data.cohort import (
    POLARS_SCHEMA,
    SPLITS,
    atomic_directory,
    cohort_metadata,
    with_visit_ends,
    write_json_atomic,
    write_patient_shards,
)
from ehrgen.errors import InputError

log = logging.getLogger(__name__)

SYNTHETIC_SOURCE = "synthetic"
# Conditional generation: per subject, the time up to which real data seeded the patient.
PREDICTION_TIMES_FILE = "prediction_times.parquet"
VISIT_DTYPE = POLARS_SCHEMA["visits"]

# ----------------------------------------------------------------------------- subject ids


def synthetic_id_offset(max_real_id: int) -> int:
    """The first synthetic subject id: the smallest power of ten above every real id.

    ``99_999 -> 100_000``, ``10_006 -> 100_000``, ``100_000 -> 1_000_000``. Synthetic ids are
    ``offset + index`` (plus a shard base in array jobs), so they never equal a real id and read as
    synthetic at a glance.
    """
    max_real_id = int(max_real_id)
    if max_real_id < 0:
        raise InputError(f"max_real_id must be >= 0 (the largest real subject_id), got {max_real_id}")
    return 10 ** len(str(max_real_id))


# ----------------------------------------------------------------------------- synthetic cohort


def _description_frame(descriptions: pl.DataFrame | Mapping[str, str] | None) -> pl.DataFrame | None:
    """``code, description`` from a training cohort's codes frame or a plain mapping."""
    if descriptions is None:
        return None
    if isinstance(descriptions, Mapping):
        frame = pl.DataFrame(
            {"code": list(descriptions.keys()), "description": list(descriptions.values())},
            schema={"code": pl.Utf8, "description": pl.Utf8},
        )
    else:
        missing = [c for c in ("code", "description") if c not in descriptions.columns]
        if missing:
            raise InputError(
                f"descriptions frame lacks column(s) {', '.join(missing)}; expected code, description"
            )
        frame = descriptions.select(pl.col("code").cast(pl.Utf8), pl.col("description").cast(pl.Utf8))
    return frame.drop_nulls("code").unique("code", keep="first", maintain_order=True)


class SyntheticCohortWriter:
    """Stream generated patients into a cohort directory; atomic, bounded memory.

    ```python
    with SyntheticCohortWriter(out, id_offset=synthetic_id_offset(max_real), descriptions=real.codes(),
                               generation={"ckpt": path, "seed": 1}) as writer:
        for batch in sampler:          # columns sex, age, visits (cohort row schema, times may be null)
            writer.add(batch)
    writer.meta                        # the cohort.json written
    ```
    Subject ids are assigned here: ``id_offset + first_index + running index`` (a ``subject_id``
    column in a batch is ignored). Each batch is normalised as ``prepare`` would: null and repeated
    codes in a visit, empty visits and patients without visits are dropped and counted
    (``cohort.json["drops"]``, same names as ``prepare``), ages above 89 become 90. Only one part
    file's worth of patients and the running code counts are held. ``writer.generation`` can be
    updated until the block ends.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        id_offset: int,
        first_index: int = 0,
        descriptions: pl.DataFrame | Mapping[str, str] | None = None,
        generation: dict[str, Any] | None = None,
        split: str = "train",
        shard_size: int = 50_000,
        row_group_size: int = 1024,
        overwrite: bool = False,
    ):
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if shard_size <= 0 or row_group_size <= 0:
            raise InputError(
                f"shard_size and row_group_size must be positive, got {shard_size}, {row_group_size}"
            )
        if id_offset < 0 or first_index < 0:
            raise InputError(f"id_offset and first_index must be >= 0, got {id_offset}, {first_index}")
        self.out_dir = Path(out_dir).expanduser().absolute()
        self.id_offset = int(id_offset)
        self.first_index = int(first_index)
        self.descriptions = _description_frame(descriptions)
        self.generation: dict[str, Any] = dict(generation or {})
        self.split = split
        self.shard_size = int(shard_size)
        self.row_group_size = int(row_group_size)
        self.overwrite = overwrite
        self.meta: dict[str, Any] | None = None

        self._stack: contextlib.ExitStack | None = None
        self._tmp: Path | None = None
        self._buffer: list[pl.DataFrame] = []
        self._buffered = 0
        self._n_added = 0
        self._n_batches = 0
        self._counts = {"patients": 0, "visits": 0, "codes": 0}
        self._visit_ends = {"known": 0, "missing": 0}
        self._prediction_times: list[pl.DataFrame] = []
        self._rows_per_file: list[int] = []
        self._drops: dict[str, int] = {}
        self._code_counts = pl.DataFrame(schema={"code": pl.Utf8, "count": pl.Int64, "train_count": pl.Int64})

    # ------------------------------------------------------------------ context

    def __enter__(self) -> SyntheticCohortWriter:
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_directory(self.out_dir, self.overwrite, kind="cohort"))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._stack is not None
        stack, self._stack = self._stack, None
        if exc_type is None:
            try:
                self._finish()
            except BaseException as err:
                # atomic_directory removes the temp directory and re-raises.
                stack.__exit__(type(err), err, err.__traceback__)
                raise
        return bool(stack.__exit__(exc_type, exc, tb))

    # ------------------------------------------------------------------ adding

    def add(self, batch: pl.DataFrame | pa.Table) -> np.ndarray:
        """Append patients (columns ``sex``, ``age``, ``visits``, optionally ``prediction_time``:
        where a conditional continuation starts, kept in ``metadata/prediction_times.parquet``);
        return their subject ids."""
        if self._tmp is None:
            raise RuntimeError("SyntheticCohortWriter.add() outside its `with` block")
        frame = batch if isinstance(batch, pl.DataFrame) else pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        self._n_batches += 1
        where = f"batch {self._n_batches}"
        missing = [c for c in ("sex", "age", "visits") if c not in frame.columns]
        if missing:
            raise InputError(f"{where}: missing column(s) {', '.join(missing)}; expected sex, age, visits")
        ids = self.id_offset + self.first_index + self._n_added + np.arange(frame.height, dtype=np.int64)
        self._n_added += frame.height
        if "prediction_time" in frame.columns:
            self._prediction_times.append(
                pl.DataFrame(
                    {"subject_id": ids, "prediction_time": frame["prediction_time"].cast(pl.Datetime("us"))}
                )
            )
        frame, n_visits, n_codes = self._normalise(frame.with_columns(pl.Series("subject_id", ids)), where)
        if frame.height == 0:
            return ids

        split_index = np.full(frame.height, SPLITS.index(self.split), dtype=np.int8)
        self._code_counts = code_table([self._code_counts, code_counts(frame, split_index)], None).select(
            "code", "count", "train_count"
        )
        ends = frame.select(
            pl.col("visits").list.eval(pl.element().struct.field("end").is_not_null()).explode().sum()
        ).item()
        self._visit_ends["known"] += int(ends or 0)
        self._visit_ends["missing"] += n_visits - int(ends or 0)
        self._counts["patients"] += frame.height
        self._counts["visits"] += n_visits
        self._counts["codes"] += n_codes

        self._buffer.append(frame)
        self._buffered += frame.height
        if self._buffered >= self.shard_size:
            self._flush(final=False)
        return ids

    def _normalise(self, frame: pl.DataFrame, where: str) -> tuple[pl.DataFrame, int, int]:
        """Cohort row schema, validated; drop (and count) what ``prepare`` would drop.

        Returns the kept patients and their numbers of visits and codes.
        """
        visits_dtype = frame.schema["visits"]
        no_time = pl.lit(None, pl.Datetime("us"))
        if visits_dtype == pl.List(pl.List(pl.Utf8)):
            # visits given as plain code lists: no times
            frame = frame.with_columns(
                pl.col("visits").list.eval(
                    pl.struct(no_time.alias("time"), no_time.alias("end"), pl.element().alias("codes"))
                )
            )
        else:  # visits with admission times only (schema 1) get a null end
            frame = with_visit_ends(frame)
        try:
            frame = frame.select(POLARS_SCHEMA.names()).cast(dict(POLARS_SCHEMA))
        except pl.exceptions.PolarsError as err:
            raise InputError(
                f"{where}: cannot cast to the cohort row schema (sex int8, age float32, "
                f"visits list<struct<time, end, codes list<str>>>): {type(err).__name__}"
            ) from None
        bad_sex = ~frame["sex"].is_in([0, 1]) | frame["sex"].is_null()
        if bad_sex.any():
            row = int(bad_sex.arg_true()[0])
            raise InputError(f"{where} row {row}: sex {frame['sex'][row]!r}, expected 0 (M) or 1 (F)")
        bad_age = frame["age"].is_null() | frame["age"].is_nan() | (frame["age"] < 0)
        if bad_age.any():
            row = int(bad_age.arg_true()[0])
            raise InputError(f"{where} row {row}: age {frame['age'][row]!r}, expected a number >= 0")

        def n_codes(codes: pl.Expr) -> pl.Expr:
            return pl.col("visits").list.eval(codes.list.len()).list.sum().sum()

        all_codes = pl.element().struct.field("codes")
        n_visits = pl.col("visits").list.len().sum()
        before = frame.select(
            n_codes(all_codes).alias("a"),
            n_codes(all_codes.list.drop_nulls()).alias("b"),
            n_visits.alias("c"),
        ).row(0)
        unique_codes = pl.field("codes").list.drop_nulls().list.unique(maintain_order=True)
        typed = all_codes.list.eval(event_type_expr(pl.element()) != DIAGNOSIS).list.any()
        if frame.select(pl.col("visits").list.eval(typed).list.any().any()).item():
            # procedures or medications: the contract lists a visit's diagnoses, then its procedures,
            # then its medications, each type in its generated order
            rank = event_type_expr(pl.element()).replace_strict(
                list(EVENT_TYPES), list(range(len(EVENT_TYPES)))
            )
            unique_codes = unique_codes.list.eval(pl.element().sort_by(rank, maintain_order=True))
        # as prepare does (build.check_visit_ends): an end before the admission is unknown
        end = pl.when(pl.field("end") >= pl.field("time")).then(pl.field("end")).alias("end")
        age = pl.col("age")
        frame = frame.with_columns(
            pl.col("visits")
            .list.eval(pl.element().struct.with_fields(unique_codes, end))
            .list.eval(pl.element().filter(pl.element().struct.field("codes").list.len() > 0)),
            pl.when(age > AGE_CLAMP_ABOVE).then(AGE_CLAMP_TO).otherwise(age).cast(pl.Float32).alias("age"),
        )
        after = frame.select(n_codes(all_codes).alias("a"), n_visits.alias("c")).row(0)
        kept = frame.filter(pl.col("visits").list.len() > 0)
        for name, n in (
            ("diagnosis_null_code", before[0] - before[1]),
            ("duplicate_code_in_visit", before[1] - after[0]),
            ("admission_without_codes", before[2] - after[1]),
            ("patient_without_admissions", frame.height - kept.height),
        ):
            if n:
                self._drops[name] = self._drops.get(name, 0) + int(n)
        return kept, int(after[1]), int(after[0])

    def _flush(self, final: bool) -> None:
        """Write whole part files from the buffer; keep the remainder unless ``final``."""
        assert self._tmp is not None
        if not self._buffer:
            return
        buffered = pl.concat(self._buffer, rechunk=False)
        n_write = buffered.height if final else (buffered.height // self.shard_size) * self.shard_size
        if n_write:
            self._rows_per_file += write_patient_shards(
                buffered.head(n_write),
                self._tmp / "data" / self.split,
                self.shard_size,
                self.row_group_size,
                first_part=len(self._rows_per_file),
            )
        rest = buffered.slice(n_write)
        self._buffer = [rest] if rest.height else []
        self._buffered = rest.height

    # ------------------------------------------------------------------ closing

    def _finish(self) -> None:
        """Last part file, empty other splits, codes.parquet, cooccurrence.npz, cohort.json."""
        tmp = self._tmp
        assert tmp is not None
        self._flush(final=True)
        if self._counts["patients"] == 0:
            raise InputError(
                f"{self.out_dir}: no patient to write ({self._n_added} generated, all without visits)"
            )
        rows_per_file = {}
        for name in SPLITS:
            if name == self.split:
                rows_per_file[name] = self._rows_per_file
            else:  # an empty part file, as prepare writes for an empty split
                rows_per_file[name] = write_patient_shards(
                    pl.DataFrame(schema=POLARS_SCHEMA),
                    tmp / "data" / name,
                    self.shard_size,
                    self.row_group_size,
                )

        codes = code_table([self._code_counts], self.descriptions)
        (tmp / "metadata").mkdir(parents=True, exist_ok=True)
        codes.write_parquet(tmp / "metadata" / "codes.parquet")

        # Visits are independent, so summing per-part matrices gives the whole-split matrix.
        vocab = codes["code"].to_list()
        cooc = sp.csr_matrix((len(vocab), len(vocab)), dtype=np.int32)
        for path in sorted((tmp / "data" / "train").glob("part-*.parquet")):
            cooc = cooc + cooccurrence_matrix(pl.read_parquet(path, columns=["visits"]), vocab)
        cooc = cooc.tocsr().astype(np.int32)
        sp.save_npz(tmp / "metadata" / COOCCURRENCE_FILE, cooc, compressed=True)

        counts = {
            key: {s: (value if s == self.split else 0) for s in SPLITS} for key, value in self._counts.items()
        }
        counts["events"] = codes_per_table(codes)
        self.meta = cohort_metadata(
            SYNTHETIC_SOURCE,
            counts=counts,
            n_unique_codes=codes.height,
            input_rows={"patients": self._n_added},
            drops=dict(sorted(self._drops.items())),
            split={
                "method": "all synthetic patients in one split",
                "assigned": self.split,
                "seed": None,  # not hashed: every patient is in `assigned`
                "fractions": [float(s == self.split) for s in SPLITS],
            },
            **layout_metadata(self.shard_size, self.row_group_size, rows_per_file, cooc),
            subject_ids={
                "id_offset": self.id_offset,
                "first_index": self.first_index,
                "n_indices": self._n_added,
                "rule": "subject_id = id_offset + first_index + index",
            },
            generation=self.generation,
            visit_ends=dict(self._visit_ends),
        )
        if self._prediction_times:
            pl.concat(self._prediction_times).write_parquet(tmp / "metadata" / PREDICTION_TIMES_FILE)
        write_json_atomic(tmp / "metadata" / "cohort.json", self.meta)
        for reason, n in sorted(self._drops.items()):
            log.info("synthetic cohort: dropped %d %s", n, reason.replace("_", " "))
