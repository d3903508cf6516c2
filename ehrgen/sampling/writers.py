"""Where generated patients go: a synthetic cohort directory, MIMIC-III CSVs, a MEDS dataset.

A synthetic cohort is written in exactly the format ``prepare`` writes (``ehrgen.data.cohort``), so
training, evaluation and the exporters treat real and synthetic cohorts alike. Synthetic patients
all go to the ``train`` split unless told otherwise: a synthetic cohort is a sample, not a study
population to split, and real/synthetic comparisons use all splits of the synthetic cohort.

The exporters read any cohort directory (real or synthetic) part file by part file, so memory is
bounded by one part file. Visit times and ends in the cohort are written as they are; when a
patient's visit times are null, admission dates come from a seeded, plausible (not fitted) process (see
:func:`draw_visit_times`), and the date of birth is the first admission minus the patient's age.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

import ehrgen
from ehrgen.data.build import (
    AGE_CLAMP_ABOVE,
    AGE_CLAMP_TO,
    COOCCURRENCE_FILE,
    code_table,
    cooccurrence_matrix,
    layout_metadata,
)
from ehrgen.data.codes import category_expr, display_code
from ehrgen.data.cohort import (
    POLARS_SCHEMA,
    SPLITS,
    Cohort,
    atomic_directory,
    cohort_metadata,
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
        counts = code_table(frame, split_index, None).select("code", "count", "train_count")
        self._code_counts = (
            pl.concat([self._code_counts, counts])
            .group_by("code")
            .agg(pl.col("count").sum(), pl.col("train_count").sum())
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
        elif (
            isinstance(visits_dtype, pl.List)
            and isinstance(visits_dtype.inner, pl.Struct)
            and "end" not in {f.name for f in visits_dtype.inner.fields}
        ):  # visits with admission times only (schema 1)
            frame = frame.with_columns(
                pl.col("visits").list.eval(
                    pl.struct(
                        pl.element().struct.field("time"),
                        no_time.alias("end"),
                        pl.element().struct.field("codes"),
                    )
                )
            )
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
            ("admission_without_diagnoses", before[2] - after[1]),
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

        codes = self._code_counts.with_columns(category_expr("code").alias("category"))
        if self.descriptions is not None:
            codes = codes.join(self.descriptions, on="code", how="left")
        else:
            codes = codes.with_columns(pl.lit(None, pl.Utf8).alias("description"))
        codes = codes.sort(["count", "code"], descending=[True, False])
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


# ----------------------------------------------------------------------------- plausible dates

_US = 1_000_000
_DAY_S = 86_400
YEAR_S = 365.25 * _DAY_S  # the 365.25-day year every source uses for ages
# MIMIC-III shifts every date into 2100-2200; first admissions fall uniformly in this window.
FIRST_ADMISSION_WINDOW = (datetime(2100, 1, 1), datetime(2190, 1, 1))
LOS_MEDIAN_DAYS, LOS_SIGMA = 5.0, 0.8  # log-normal length of stay
# Lomax (Pareto II) gap from discharge to the next admission: heavy-tailed like readmissions,
# median about 95 days, capped so a long history stays within a few centuries of the window.
GAP_SHAPE, GAP_SCALE_DAYS, GAP_MAX_DAYS = 1.2, 120.0, 15 * 365.0


def datetime_seconds(d: datetime) -> int:
    """Seconds since 1970-01-01 of a naive datetime."""
    return int((d - datetime(1970, 1, 1)).total_seconds())


def draw_visit_times(
    n_visits: np.ndarray,
    given_us: np.ndarray,
    given: np.ndarray,
    rng: np.random.Generator,
    given_end_us: np.ndarray | None = None,
    given_end: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Admission and discharge times (epoch microseconds) of every visit, visits grouped by patient.

    ``n_visits``: visits per patient (each >= 1); ``given_us``/``given``: the cohort's visit times
    and whether each is known, ``given_end_us``/``given_end`` its discharge times. A patient whose
    visit times are all known keeps them and every known discharge; an unknown discharge is drawn
    (a log-normal stay) and capped at the next admission. Otherwise all of the patient's times are
    drawn: first admission uniform in :data:`FIRST_ADMISSION_WINDOW`, log-normal stays, Lomax gaps.
    Whole seconds throughout.
    """
    total = int(n_visits.sum())
    starts = np.cumsum(n_visits) - n_visits
    first = np.zeros(total, dtype=bool)
    first[starts] = True
    last = np.zeros(total, dtype=bool)
    last[starts + n_visits - 1] = True

    lo, hi = (datetime_seconds(d) for d in FIRST_ADMISSION_WINDOW)
    start_s = rng.integers(lo, hi, size=len(n_visits))
    los_s = np.maximum(np.rint(rng.lognormal(np.log(LOS_MEDIAN_DAYS * _DAY_S), LOS_SIGMA, total)), 3600)
    gap_days = np.minimum(rng.pareto(GAP_SHAPE, total) * GAP_SCALE_DAYS, GAP_MAX_DAYS)
    gap_s = np.maximum(np.rint(gap_days * _DAY_S), _DAY_S)
    # admission k = first admission + sum over earlier visits of (stay + gap before the next one)
    step = np.where(first, 0.0, np.roll(los_s, 1) + gap_s)
    offset = np.cumsum(step)
    offset -= np.repeat(offset[starts], n_visits)
    drawn_us = (np.repeat(start_s, n_visits) + offset).astype(np.int64) * _US

    keep = np.repeat(np.logical_and.reduceat(given, starts) if total else given, n_visits)
    admit = np.where(keep, given_us, drawn_us)
    drawn_end = admit + los_s.astype(np.int64) * _US
    next_admit = np.roll(admit, -1)
    drawn_end = np.where(keep & ~last, np.minimum(drawn_end, np.maximum(next_admit, admit)), drawn_end)
    if given_end is None or given_end_us is None:
        return admit, drawn_end
    return admit, np.where(keep & given_end, given_end_us, drawn_end)


def _part_visits(part: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(patients, visits)`` of one part file with dates: patients subject_id, sex, dob;
    visits subject_id, admittime, dischtime, codes (in visit order)."""
    part = part.filter(pl.col("visits").list.len() > 0)
    n_visits = part["visits"].list.len().to_numpy().astype(np.int64)
    visits = (
        part.select("subject_id", "visits")
        .explode("visits")
        .select(
            "subject_id",
            pl.col("visits").struct.field("time").dt.epoch("us").alias("time"),
            pl.col("visits").struct.field("end").dt.epoch("us").alias("end"),
            pl.col("visits").struct.field("codes").alias("codes"),
        )
    )
    given = visits["time"].is_not_null().to_numpy()
    given_end = visits["end"].is_not_null().to_numpy()
    admit, disch = draw_visit_times(
        n_visits,
        visits["time"].fill_null(0).to_numpy(),
        given,
        rng,
        visits["end"].fill_null(0).to_numpy(),
        given_end,
    )
    starts = np.cumsum(n_visits) - n_visits
    age_s = np.rint(part["age"].to_numpy().astype(np.float64) * YEAR_S).astype(np.int64)
    dob = admit[starts] - age_s * _US if len(starts) else admit[:0]
    patients = part.select("subject_id", "sex").with_columns(pl.Series("dob", dob).cast(pl.Datetime("us")))
    visits = visits.select(
        "subject_id",
        pl.Series("admittime", admit).cast(pl.Datetime("us")),
        pl.Series("dischtime", disch).cast(pl.Datetime("us")),
        "codes",
    )
    return patients, visits


def _cohort_parts(cohort: Cohort) -> Iterator[tuple[str, pl.DataFrame]]:
    for split in SPLITS:
        for path in cohort.files(split):
            part = pl.read_parquet(path)
            if part.height:
                yield split, part


# ----------------------------------------------------------------------------- MIMIC-III CSVs

MIMIC3_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
HADM_ID_START = 100_000  # MIMIC-III's hadm_id range starts here
PATIENTS_COLUMNS = ["ROW_ID", "SUBJECT_ID", "GENDER", "DOB", "DOD", "DOD_HOSP", "DOD_SSN", "EXPIRE_FLAG"]
ADMISSIONS_COLUMNS = [
    "ROW_ID", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ADMISSION_TYPE",
    "ADMISSION_LOCATION", "DISCHARGE_LOCATION", "INSURANCE", "LANGUAGE", "RELIGION", "MARITAL_STATUS",
    "ETHNICITY", "EDREGTIME", "EDOUTTIME", "DIAGNOSIS", "HOSPITAL_EXPIRE_FLAG", "HAS_CHARTEVENTS_DATA",
]  # fmt: skip
DIAGNOSES_COLUMNS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"]
D_ICD_COLUMNS = ["ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"]
_ROW_COLUMNS = {
    "PATIENTS": PATIENTS_COLUMNS,
    "ADMISSIONS": ADMISSIONS_COLUMNS,
    "DIAGNOSES_ICD": DIAGNOSES_COLUMNS,
}


def _row_ids(start: int, n: int) -> pl.Series:
    return pl.Series("ROW_ID", np.arange(start, start + n, dtype=np.int64))


def _mimic3_tables(
    patients: pl.DataFrame, visits: pl.DataFrame, hadm_start: int, row_start: dict[str, int]
) -> dict[str, pl.DataFrame]:
    """PATIENTS, ADMISSIONS and DIAGNOSES_ICD rows of one part file."""
    visits = visits.with_columns(
        pl.Series("HADM_ID", np.arange(hadm_start, hadm_start + visits.height, dtype=np.int64))
    )
    null = pl.lit(None, pl.Utf8)
    pat = patients.select(
        _row_ids(row_start["PATIENTS"], patients.height),
        pl.col("subject_id").alias("SUBJECT_ID"),
        pl.when(pl.col("sex") == 0).then(pl.lit("M")).otherwise(pl.lit("F")).alias("GENDER"),
        pl.col("dob").alias("DOB"),
        *(null.alias(c) for c in ("DOD", "DOD_HOSP", "DOD_SSN")),
        pl.lit(0, pl.Int8).alias("EXPIRE_FLAG"),
    )
    named = {"ROW_ID", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "HOSPITAL_EXPIRE_FLAG"}
    adm = visits.select(
        _row_ids(row_start["ADMISSIONS"], visits.height),
        pl.col("subject_id").alias("SUBJECT_ID"),
        "HADM_ID",
        pl.col("admittime").alias("ADMITTIME"),
        pl.col("dischtime").alias("DISCHTIME"),
        *(null.alias(c) for c in ADMISSIONS_COLUMNS if c not in named),
        pl.lit(0, pl.Int8).alias("HOSPITAL_EXPIRE_FLAG"),
    ).select(ADMISSIONS_COLUMNS)
    dx = (
        visits.select(pl.col("subject_id").alias("SUBJECT_ID"), "HADM_ID", pl.col("codes").alias("ICD9_CODE"))
        .explode("ICD9_CODE")
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("HADM_ID").alias("SEQ_NUM"))
    )
    dx = dx.select(
        _row_ids(row_start["DIAGNOSES_ICD"], dx.height), "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"
    )
    return {"PATIENTS": pat, "ADMISSIONS": adm, "DIAGNOSES_ICD": dx}


def _open(path: Path, compress: bool) -> IO[bytes]:
    return gzip.open(path, "wb", compresslevel=6) if compress else open(path, "wb")  # noqa: SIM115


def write_mimic3_csv(
    cohort_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int,
    *,
    compress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Export a cohort as MIMIC-III v1.4 tables that ``data=mimic3`` reads back into the same cohort.

    Writes PATIENTS, ADMISSIONS (full v1.4 header; columns ehrgen cannot know are empty),
    DIAGNOSES_ICD (``SEQ_NUM`` = position in the visit) and, when the cohort has descriptions,
    D_ICD_DIAGNOSES; ``.csv.gz`` when ``compress``. HADM_IDs are consecutive from
    :data:`HADM_ID_START`; dates follow :func:`draw_visit_times` seeded by ``seed``.
    """
    cohort = Cohort(cohort_dir)
    rng = np.random.default_rng(seed)
    suffix = ".csv.gz" if compress else ".csv"
    with (
        atomic_directory(out_dir, overwrite, kind="mimic3", inputs=[cohort_dir]) as tmp,
        contextlib.ExitStack() as files,
    ):
        handles = {
            name: files.enter_context(_open(tmp / f"{name}{suffix}", compress)) for name in _ROW_COLUMNS
        }
        next_row = dict.fromkeys(_ROW_COLUMNS, 1)
        hadm = HADM_ID_START
        for _, part in _cohort_parts(cohort):
            patients, visits = _part_visits(part, rng)
            for name, table in _mimic3_tables(patients, visits, hadm, next_row).items():
                table.write_csv(
                    handles[name], include_header=next_row[name] == 1, datetime_format=MIMIC3_TIME_FORMAT
                )
                next_row[name] += table.height
            hadm += visits.height
        for name, handle in handles.items():
            if next_row[name] == 1:  # no rows at all: still a header
                handle.write((",".join(_ROW_COLUMNS[name]) + "\n").encode())
        titles = cohort.codes().filter(pl.col("description").is_not_null())
        if titles.height:
            titles = titles.sort("code").select(
                _row_ids(1, titles.height),
                pl.col("code").alias("ICD9_CODE"),
                pl.col("description").str.slice(0, 24).alias("SHORT_TITLE"),
                pl.col("description").alias("LONG_TITLE"),
            )
            with _open(tmp / f"D_ICD_DIAGNOSES{suffix}", compress) as handle:
                titles.write_csv(handle)
    return Path(out_dir).expanduser().absolute()


# ----------------------------------------------------------------------------- MEDS

# The published MEDS schema these files follow (PyPI `meds`, meds.schema): data, code metadata,
# subject splits and dataset metadata.
MEDS_VERSION = "0.4.1"
MEDS_DATA_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int64(), nullable=False),
        pa.field("time", pa.timestamp("us")),
        pa.field("code", pa.string(), nullable=False),
        pa.field("numeric_value", pa.float32()),
        pa.field("hadm_id", pa.int64()),  # extension column: the admission (MedsSource groups by it)
    ]
)
# Trajectories (conditional generation): the data schema plus each subject's prediction time.
MEDS_TRAJECTORY_SCHEMA = MEDS_DATA_SCHEMA.append(
    pa.field("prediction_time", pa.timestamp("us"), nullable=False)
)
MEDS_CODES_SCHEMA = pa.schema(
    [
        pa.field("code", pa.string(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("parent_codes", pa.list_(pa.string())),
    ]
)
MEDS_SPLITS_SCHEMA = pa.schema(
    [pa.field("subject_id", pa.int64(), nullable=False), pa.field("split", pa.string(), nullable=False)]
)
MEDS_SPLIT_NAMES = {"train": "train", "val": "tuning", "test": "held_out"}
BIRTH_CODE, MALE_CODE, FEMALE_CODE = "MEDS_BIRTH", "GENDER//M", "GENDER//F"
ADMISSION_CODE, DISCHARGE_CODE = "HOSPITAL_ADMISSION", "HOSPITAL_DISCHARGE"
_STATIC_CODES = {
    BIRTH_CODE: "Birth",
    MALE_CODE: "Male",
    FEMALE_CODE: "Female",
    ADMISSION_CODE: "Hospital admission",
    DISCHARGE_CODE: "Hospital discharge",
}


def _meds_events(patients: pl.DataFrame, visits: pl.DataFrame, hadm_start: int, code_prefix: str) -> pa.Table:
    """Events of one part file, sorted by subject then time (static events first, code order kept)."""
    visits = visits.with_columns(
        pl.Series("hadm_id", np.arange(hadm_start, hadm_start + visits.height, dtype=np.int64))
    )
    no_visit = pl.lit(None, pl.Int64).alias("hadm_id")
    frames = [
        patients.select(
            "subject_id",
            pl.lit(None, pl.Datetime("us")).alias("time"),
            pl.when(pl.col("sex") == 0).then(pl.lit(MALE_CODE)).otherwise(pl.lit(FEMALE_CODE)).alias("code"),
            no_visit,
        ),
        patients.select(
            "subject_id", pl.col("dob").alias("time"), pl.lit(BIRTH_CODE).alias("code"), no_visit
        ),
        visits.select(
            "subject_id", pl.col("admittime").alias("time"), pl.lit(ADMISSION_CODE).alias("code"), "hadm_id"
        ),
        visits.select(
            "subject_id", pl.col("admittime").alias("time"), pl.col("codes").alias("code"), "hadm_id"
        )
        .explode("code")
        .with_columns((pl.lit(code_prefix) + pl.col("code")).alias("code")),
        visits.select(
            "subject_id", pl.col("dischtime").alias("time"), pl.lit(DISCHARGE_CODE).alias("code"), "hadm_id"
        ),
    ]
    events = (
        pl.concat(frames, how="vertical")
        .sort(["subject_id", "time"], nulls_last=False, maintain_order=True)
        .select("subject_id", "time", "code", pl.lit(None, pl.Float32).alias("numeric_value"), "hadm_id")
    )
    return events.to_arrow().cast(MEDS_DATA_SCHEMA)


def _with_prediction_time(events: pa.Table, patients: pl.DataFrame, prediction: pl.DataFrame) -> pa.Table:
    """Events plus each subject's prediction time (its date of birth where none is given)."""
    times = patients.select("subject_id", "dob").join(prediction, on="subject_id", how="left")
    times = times.select("subject_id", pl.coalesce("prediction_time", "dob").alias("prediction_time"))
    out = pl.from_arrow(events).join(times, on="subject_id", how="left", maintain_order="left")
    return out.to_arrow().cast(MEDS_TRAJECTORY_SCHEMA)


def write_meds(
    cohort_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int,
    code_prefix: str = "DIAGNOSIS//ICD//9//",
    *,
    dataset_name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a cohort as a MEDS dataset that ``data=meds`` reads back into the same cohort.

    ``data/part-NNNNN.parquet`` (one per cohort part file, so a subject lives in one file, rows
    sorted by subject then time): ``GENDER//M|F`` (null time, a static event), ``MEDS_BIRTH`` at
    the date of birth, per visit ``HOSPITAL_ADMISSION``, the diagnoses (``code_prefix`` + ICD-9
    code, in visit order) at the admission time and ``HOSPITAL_DISCHARGE``, all visit events with
    ``hadm_id``. ``metadata/``: dataset.json, codes.parquet (code, description, parent_codes as
    ``ICD9CM/<dotted code>``), subject_splits.parquet (train, tuning, held_out). Dates are the
    cohort's, or (patients without times) the ones :func:`write_mimic3_csv` draws with the same seed.

    A conditional generation's cohort (``metadata/prediction_times.parquet``) gives trajectories:
    every row also carries the subject's ``prediction_time`` (MEDS label schema: data up to and
    including it seeded the patient; everything after it was generated), the admission of the
    last real visit kept, or the date of birth when no visit was.
    """
    cohort = Cohort(cohort_dir)
    pt_file = cohort.path / "metadata" / PREDICTION_TIMES_FILE
    prediction = pl.read_parquet(pt_file) if pt_file.is_file() else None
    rng = np.random.default_rng(seed)
    with atomic_directory(out_dir, overwrite, kind="meds", inputs=[cohort_dir]) as tmp:
        (tmp / "data").mkdir()
        (tmp / "metadata").mkdir()
        hadm, n_files = HADM_ID_START, 0
        with pq.ParquetWriter(tmp / "metadata" / "subject_splits.parquet", MEDS_SPLITS_SCHEMA) as splits:
            for split, part in _cohort_parts(cohort):
                patients, visits = _part_visits(part, rng)
                events = _meds_events(patients, visits, hadm, code_prefix)
                if prediction is not None:
                    events = _with_prediction_time(events, patients, prediction)
                pq.write_table(events, tmp / "data" / f"part-{n_files:05d}.parquet", compression="zstd")
                n_files += 1
                hadm += visits.height
                subjects = pa.table(
                    {
                        "subject_id": patients["subject_id"].to_arrow(),
                        "split": pa.array([MEDS_SPLIT_NAMES[split]] * patients.height, pa.string()),
                    }
                )
                splits.write_table(subjects.cast(MEDS_SPLITS_SCHEMA))

        dx = cohort.codes().select("code", "description")
        parents = [[f"ICD9CM/{display_code(c)}"] for c in dx["code"]]  # vocabulary-sized
        static = pl.DataFrame(
            {"code": list(_STATIC_CODES), "description": list(_STATIC_CODES.values())},
            schema={"code": pl.Utf8, "description": pl.Utf8},
        ).with_columns(pl.lit(None, pl.List(pl.Utf8)).alias("parent_codes"))
        codes = pl.concat(
            [
                static,
                dx.select(
                    (pl.lit(code_prefix) + pl.col("code")).alias("code"), pl.col("description").cast(pl.Utf8)
                ).with_columns(pl.Series("parent_codes", parents, dtype=pl.List(pl.Utf8))),
            ]
        )
        pq.write_table(codes.to_arrow().cast(MEDS_CODES_SCHEMA), tmp / "metadata" / "codes.parquet")

        write_json_atomic(
            tmp / "metadata" / "dataset.json",
            {
                "dataset_name": dataset_name or f"ehrgen-{cohort.meta['source']}-{cohort.path.name}",
                "dataset_version": str(cohort.meta.get("created", "")),
                "etl_name": "ehrgen",
                "etl_version": ehrgen.__version__,
                "meds_version": MEDS_VERSION,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "raw_source_id_columns": ["hadm_id"],
            },
        )
    return Path(out_dir).expanduser().absolute()
