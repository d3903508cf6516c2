"""Exporters: any cohort directory (real or synthetic) as MIMIC-III CSVs, MIMIC-IV CSVs or a MEDS dataset.

Each reads the cohort part file by part file, so memory is bounded by one part file, and each
writes what the matching ``prepare`` source reads back into the same cohort (tested). Visit
times and ends in the cohort are written as they are; when a patient's visit times are null,
admission dates come from a seeded, plausible (not fitted) process (see :func:`draw_visit_times`),
and the date of birth is the first admission minus the patient's age. ICD-10-CM codes
(``ICD10CM:`` in the cohort) go where each format puts them: MIMIC-IV's ``icd_version`` 10, MEDS'
``DIAGNOSIS//ICD//10//``; MIMIC-III has no ICD-10 and refuses them.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

import ehrgen
from ehrgen.data.codes import (
    DIAGNOSIS,
    EVENT_TYPES,
    ICD9PCS_PREFIX,
    ICD10CM_PREFIX,
    ICD10PCS_PREFIX,
    MEDICATION,
    PROCEDURE,
    RX_PREFIX,
    display_code,
    event_type_expr,
)
from ehrgen.data.cohort import SPLITS, Cohort, atomic_directory, write_json_atomic
from ehrgen.errors import InputError
from ehrgen.sampling.writers import PREDICTION_TIMES_FILE

log = logging.getLogger(__name__)

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
    """``(patients, visits)`` of one part file with dates: patients subject_id, sex, age, dob;
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
    patients = part.select("subject_id", "sex", "age").with_columns(
        pl.Series("dob", dob).cast(pl.Datetime("us"))
    )
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


def _coded_rows(visits: pl.DataFrame) -> pl.DataFrame:
    """One row per (visit, code): ``hadm`` columns of ``visits`` plus ``code``, its event ``type``,
    its ``value`` (the code without its system mark), ``version`` (9/10, ICD systems) and ``seq``
    (1-based position among the visit's codes of the same type)."""
    code = pl.col("code")
    value, version = code, pl.lit(9, pl.Int64)
    for mark, v in ((ICD10CM_PREFIX, 10), (ICD9PCS_PREFIX, 9), (ICD10PCS_PREFIX, 10), (RX_PREFIX, None)):
        value = pl.when(code.str.starts_with(mark)).then(code.str.slice(len(mark))).otherwise(value)
        version = pl.when(code.str.starts_with(mark)).then(pl.lit(v, pl.Int64)).otherwise(version)
    return (
        visits.explode("codes")
        .rename({"codes": "code"})
        .drop_nulls("code")
        .with_columns(event_type_expr("code").alias("type"), value.alias("value"), version.alias("version"))
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("hadm", "type").alias("seq"))
    )


def _cohort_types(cohort: Cohort) -> set[str]:
    """Event types the cohort holds (its codes table's ``type``, or each code's when absent)."""
    codes = cohort.codes()
    return set(codes.select(event_type_expr("code").alias("type"))["type"].unique().to_list())


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
PRESCRIPTIONS_COLUMNS = [
    "ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "STARTDATE", "ENDDATE", "DRUG_TYPE", "DRUG",
    "DRUG_NAME_POE", "DRUG_NAME_GENERIC", "FORMULARY_DRUG_CD", "GSN", "NDC", "PROD_STRENGTH",
    "DOSE_VAL_RX", "DOSE_UNIT_RX", "FORM_VAL_DISP", "FORM_UNIT_DISP", "ROUTE",
]  # fmt: skip
D_ICD_COLUMNS = ["ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"]
_ROW_COLUMNS = {
    "PATIENTS": PATIENTS_COLUMNS,
    "ADMISSIONS": ADMISSIONS_COLUMNS,
    "DIAGNOSES_ICD": DIAGNOSES_COLUMNS,
    "PROCEDURES_ICD": DIAGNOSES_COLUMNS,
    "PRESCRIPTIONS": PRESCRIPTIONS_COLUMNS,
}
# The table holding each event type, and the D_ICD table of its titles.
MIMIC3_EVENT_TABLES = {
    DIAGNOSIS: ("DIAGNOSES_ICD", "D_ICD_DIAGNOSES"),
    PROCEDURE: ("PROCEDURES_ICD", "D_ICD_PROCEDURES"),
    MEDICATION: ("PRESCRIPTIONS", None),
}


def _row_ids(start: int, n: int) -> pl.Series:
    return pl.Series("ROW_ID", np.arange(start, start + n, dtype=np.int64))


def _mimic3_tables(
    patients: pl.DataFrame, visits: pl.DataFrame, hadm_start: int, row_start: dict[str, int]
) -> dict[str, pl.DataFrame]:
    """PATIENTS, ADMISSIONS, DIAGNOSES_ICD, PROCEDURES_ICD and PRESCRIPTIONS rows of one part file."""
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
    coded = _coded_rows(
        visits.select("subject_id", pl.col("HADM_ID").alias("hadm"), "admittime", "dischtime", "codes")
    )
    out = {"PATIENTS": pat, "ADMISSIONS": adm}
    for kind, (name, _) in MIMIC3_EVENT_TABLES.items():
        rows = coded.filter(pl.col("type") == kind)
        ids = _row_ids(row_start[name], rows.height)
        if kind == MEDICATION:
            named = {"ROW_ID", "SUBJECT_ID", "HADM_ID", "STARTDATE", "ENDDATE", "DRUG_TYPE", "DRUG"}
            out[name] = rows.select(
                ids,
                pl.col("subject_id").alias("SUBJECT_ID"),
                pl.col("hadm").alias("HADM_ID"),
                pl.col("admittime").alias("STARTDATE"),
                pl.col("dischtime").alias("ENDDATE"),
                pl.lit("MAIN").alias("DRUG_TYPE"),
                pl.col("value").alias("DRUG"),
                *(null.alias(c) for c in PRESCRIPTIONS_COLUMNS if c not in named),
            ).select(PRESCRIPTIONS_COLUMNS)
        else:
            out[name] = rows.select(
                ids,
                pl.col("subject_id").alias("SUBJECT_ID"),
                pl.col("hadm").alias("HADM_ID"),
                pl.col("seq").alias("SEQ_NUM"),
                pl.col("value").alias("ICD9_CODE"),
            )
    return out


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
    DIAGNOSES_ICD (``SEQ_NUM`` = position among the visit's diagnoses), PROCEDURES_ICD and
    PRESCRIPTIONS (``DRUG`` = the medication key, from admission to discharge) when the cohort
    holds those types, and, when it has descriptions, D_ICD_DIAGNOSES / D_ICD_PROCEDURES;
    ``.csv.gz`` when ``compress``. HADM_IDs are consecutive from :data:`HADM_ID_START`; dates
    follow :func:`draw_visit_times` seeded by ``seed``. MIMIC-III holds ICD-9 only: a cohort with
    ICD-10-CM or ICD-10-PCS codes is refused before anything is written (:func:`write_mimic4_csv`
    takes both).
    """
    cohort = Cohort(cohort_dir)
    codes = cohort.codes()["code"]
    icd10 = codes.filter(codes.str.starts_with(ICD10CM_PREFIX) | codes.str.starts_with(ICD10PCS_PREFIX))
    if icd10.len():
        raise InputError(
            f"{cohort.path}: {icd10.len()} ICD-10 code(s) (e.g. {icd10[0]}), and MIMIC-III's "
            "DIAGNOSES_ICD and PROCEDURES_ICD hold ICD-9 only: export formats=[mimic4] or [meds] instead"
        )
    kinds = _cohort_types(cohort)
    names = [
        "PATIENTS",
        "ADMISSIONS",
        *(MIMIC3_EVENT_TABLES[k][0] for k in EVENT_TYPES if k in kinds | {DIAGNOSIS}),
    ]
    rng = np.random.default_rng(seed)
    suffix = ".csv.gz" if compress else ".csv"
    with (
        atomic_directory(out_dir, overwrite, kind="mimic3", inputs=[cohort_dir]) as tmp,
        contextlib.ExitStack() as files,
    ):
        handles = {name: files.enter_context(_open(tmp / f"{name}{suffix}", compress)) for name in names}
        next_row = dict.fromkeys(_ROW_COLUMNS, 1)
        hadm = HADM_ID_START
        for _, part in _cohort_parts(cohort):
            patients, visits = _part_visits(part, rng)
            for name, table in _mimic3_tables(patients, visits, hadm, next_row).items():
                if name not in handles or not table.height:  # an empty table gets its header at the end
                    continue
                table.write_csv(
                    handles[name], include_header=next_row[name] == 1, datetime_format=MIMIC3_TIME_FORMAT
                )
                next_row[name] += table.height
            hadm += visits.height
        for name, handle in handles.items():
            if next_row[name] == 1:  # no rows at all: still a header
                handle.write((",".join(_ROW_COLUMNS[name]) + "\n").encode())
        titles = cohort.codes().filter(pl.col("description").is_not_null()).sort("code")
        titles = _coded_rows(
            titles.select(pl.lit(0).alias("hadm"), "description", pl.concat_list("code").alias("codes"))
        )
        for kind, (_, table) in MIMIC3_EVENT_TABLES.items():
            rows = titles.filter(pl.col("type") == kind)
            if table is None or not rows.height:
                continue
            rows = rows.select(
                _row_ids(1, rows.height),
                pl.col("value").alias("ICD9_CODE"),
                pl.col("description").str.slice(0, 24).alias("SHORT_TITLE"),
                pl.col("description").alias("LONG_TITLE"),
            )
            with _open(tmp / f"{table}{suffix}", compress) as handle:
                rows.write_csv(handle)
    return Path(out_dir).expanduser().absolute()


# ----------------------------------------------------------------------------- MIMIC-IV CSVs

MIMIC4_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
MIMIC4_OVER_89 = 91  # MIMIC-IV's anchor_age for every patient older than 89
MIMIC4_COLUMNS = {
    "patients": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
    "admissions": [
        "subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
        "admit_provider_id", "admission_location", "discharge_location", "insurance", "language",
        "marital_status", "race", "edregtime", "edouttime", "hospital_expire_flag",
    ],
    "diagnoses_icd": ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
    "procedures_icd": ["subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"],
    "prescriptions": [
        "subject_id", "hadm_id", "pharmacy_id", "poe_id", "poe_seq", "order_provider_id", "starttime",
        "stoptime", "drug_type", "drug", "formulary_drug_cd", "gsn", "ndc", "prod_strength", "form_rx",
        "dose_val_rx", "dose_unit_rx", "form_val_disp", "form_unit_disp", "doses_per_24_hrs", "route",
    ],
}  # fmt: skip
# The hosp/ table holding each event type, and the d_icd table of its titles.
MIMIC4_EVENT_TABLES = {
    DIAGNOSIS: ("diagnoses_icd", "d_icd_diagnoses"),
    PROCEDURE: ("procedures_icd", "d_icd_procedures"),
    MEDICATION: ("prescriptions", None),
}


def _mimic4_tables(patients: pl.DataFrame, visits: pl.DataFrame, hadm_start: int) -> dict[str, pl.DataFrame]:
    """hosp/patients, admissions, diagnoses_icd, procedures_icd and prescriptions rows of one part file.

    MIMIC-IV has no date of birth: the anchor year is the first admission's year and the anchor
    age the whole years at that admission (91 above 89, as MIMIC-IV writes it), which is exactly
    what ``data=mimic4`` reads back as the age at the first visit.
    """
    visits = visits.with_columns(
        pl.Series("hadm_id", np.arange(hadm_start, hadm_start + visits.height, dtype=np.int64))
    )
    first = visits.group_by("subject_id", maintain_order=True).agg(pl.col("admittime").min().alias("first"))
    null = pl.lit(None, pl.Utf8)
    age = pl.col("age")
    pat = patients.join(first, on="subject_id", how="left", maintain_order="left").select(
        "subject_id",
        pl.when(pl.col("sex") == 0).then(pl.lit("M")).otherwise(pl.lit("F")).alias("gender"),
        pl.when(age > 89).then(MIMIC4_OVER_89).otherwise(age.floor()).cast(pl.Int64).alias("anchor_age"),
        pl.col("first").dt.year().cast(pl.Int64).alias("anchor_year"),
        null.alias("anchor_year_group"),
        null.alias("dod"),
    )
    named = {"subject_id", "hadm_id", "admittime", "dischtime", "hospital_expire_flag"}
    adm = visits.select(
        "subject_id",
        "hadm_id",
        "admittime",
        "dischtime",
        *(null.alias(c) for c in MIMIC4_COLUMNS["admissions"] if c not in named),
        pl.lit(0, pl.Int8).alias("hospital_expire_flag"),
    ).select(MIMIC4_COLUMNS["admissions"])
    coded = _coded_rows(
        visits.select("subject_id", pl.col("hadm_id").alias("hadm"), "admittime", "dischtime", "codes")
    )
    out = {"patients": pat, "admissions": adm}
    for kind, (name, _) in MIMIC4_EVENT_TABLES.items():
        rows = coded.filter(pl.col("type") == kind).rename({"hadm": "hadm_id"})
        if kind == MEDICATION:
            named = {"subject_id", "hadm_id", "starttime", "stoptime", "drug_type", "drug"}
            out[name] = rows.select(
                "subject_id",
                "hadm_id",
                pl.col("admittime").alias("starttime"),
                pl.col("dischtime").alias("stoptime"),
                pl.lit("MAIN").alias("drug_type"),
                pl.col("value").alias("drug"),
                *(null.alias(c) for c in MIMIC4_COLUMNS[name] if c not in named),
            ).select(MIMIC4_COLUMNS[name])
        else:
            out[name] = rows.select(
                "subject_id",
                "hadm_id",
                pl.col("seq").alias("seq_num"),
                pl.col("admittime").dt.date().alias("chartdate"),
                pl.col("value").alias("icd_code"),
                pl.col("version").alias("icd_version"),
            ).select(MIMIC4_COLUMNS[name])
    return out


def write_mimic4_csv(
    cohort_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int,
    *,
    compress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Export a cohort as MIMIC-IV v2.x ``hosp/`` tables that ``data=mimic4`` reads back.

    Writes ``hosp/patients``, ``admissions`` (the v2.2 header; columns ehrgen cannot know are
    empty), ``diagnoses_icd`` (``seq_num`` = position among the visit's diagnoses; ICD-9 and ICD-10
    codes with their ``icd_version``), ``procedures_icd`` and ``prescriptions`` (``drug`` = the
    medication key) when the cohort holds those types, and, when it has descriptions,
    ``d_icd_diagnoses`` / ``d_icd_procedures``;
    ``.csv.gz`` when ``compress`` (as MIMIC-IV ships). Ages become MIMIC-IV's whole-year
    ``anchor_age``, so they read back truncated to whole years; codes, visits and times read
    back unchanged. hadm_ids are consecutive from :data:`HADM_ID_START`; dates follow
    :func:`draw_visit_times` seeded by ``seed``.
    """
    cohort = Cohort(cohort_dir)
    rng = np.random.default_rng(seed)
    suffix = ".csv.gz" if compress else ".csv"
    with (
        atomic_directory(out_dir, overwrite, kind="mimic4", inputs=[cohort_dir]) as tmp,
        contextlib.ExitStack() as files,
    ):
        (tmp / "hosp").mkdir()
        kinds = _cohort_types(cohort) | {DIAGNOSIS}
        names = ["patients", "admissions", *(MIMIC4_EVENT_TABLES[k][0] for k in EVENT_TYPES if k in kinds)]
        handles = {
            name: files.enter_context(_open(tmp / "hosp" / f"{name}{suffix}", compress)) for name in names
        }
        written = dict.fromkeys(MIMIC4_COLUMNS, 0)
        hadm = HADM_ID_START
        for _, part in _cohort_parts(cohort):
            patients, visits = _part_visits(part, rng)
            for name, table in _mimic4_tables(patients, visits, hadm).items():
                if name not in handles or not table.height:  # an empty table gets its header at the end
                    continue
                table.write_csv(
                    handles[name], include_header=written[name] == 0, datetime_format=MIMIC4_TIME_FORMAT
                )
                written[name] += table.height
            hadm += visits.height
        for name, handle in handles.items():
            if written[name] == 0:  # no rows at all: still a header
                handle.write((",".join(MIMIC4_COLUMNS[name]) + "\n").encode())
        titles = cohort.codes().filter(pl.col("description").is_not_null()).sort("code")
        titles = _coded_rows(
            titles.select(pl.lit(0).alias("hadm"), "description", pl.concat_list("code").alias("codes"))
        )
        for kind, (_, table) in MIMIC4_EVENT_TABLES.items():
            rows = titles.filter(pl.col("type") == kind)
            if table is None or not rows.height:
                continue
            rows = rows.select(
                pl.col("value").alias("icd_code"),
                pl.col("version").alias("icd_version"),
                pl.col("description").alias("long_title"),
            )
            with _open(tmp / "hosp" / f"{table}{suffix}", compress) as handle:
                rows.write_csv(handle)
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


# The MEDS spelling of each marked system (ICD-9-CM diagnoses, unmarked, take ``code_prefix``), and
# the OMOP vocabulary of its parent codes (medication keys have none).
MEDS_SYSTEMS = {
    ICD9PCS_PREFIX: ("PROCEDURE//ICD//9//", "ICD9Proc"),
    ICD10PCS_PREFIX: ("PROCEDURE//ICD//10//", "ICD10PCS"),
    RX_PREFIX: ("MEDICATION//", None),
}


def _meds_code(code: pl.Expr, code_prefix: str, icd10_prefix: str) -> pl.Expr:
    """The cohort's code -> its MEDS code (``code_prefix`` + ICD-9, ``icd10_prefix`` + ICD-10
    diagnosis, :data:`MEDS_SYSTEMS` for the others)."""
    out = pl.lit(code_prefix) + code
    spelled = {ICD10CM_PREFIX: icd10_prefix} | {mark: p for mark, (p, _) in MEDS_SYSTEMS.items()}
    for mark, prefix in spelled.items():
        out = (
            pl.when(code.str.starts_with(mark))
            .then(pl.lit(prefix) + code.str.slice(len(mark)))
            .otherwise(out)
        )
    return out


def _meds_parent(code: str) -> list[str] | None:
    """``4019`` -> ``ICD9CM/401.9``, ``ICD10CM:E119`` -> ``ICD10CM/E11.9``, ``ICD9PCS:3893`` ->
    ``ICD9Proc/38.93``; None for a medication key."""
    shown = display_code(code)
    vocabularies = {ICD10CM_PREFIX: "ICD10CM"} | {mark: v for mark, (_, v) in MEDS_SYSTEMS.items()}
    for mark, vocabulary in vocabularies.items():
        if code.startswith(mark):
            return None if vocabulary is None else [f"{vocabulary}/{shown[len(mark) :]}"]
    return [f"ICD9CM/{shown}"]


def _meds_events(
    patients: pl.DataFrame, visits: pl.DataFrame, hadm_start: int, code_prefix: str, icd10_prefix: str
) -> pa.Table:
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
        .with_columns(_meds_code(pl.col("code"), code_prefix, icd10_prefix).alias("code")),
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
    icd10_prefix: str = "DIAGNOSIS//ICD//10//",
    *,
    dataset_name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a cohort as a MEDS dataset that ``data=meds`` reads back into the same cohort.

    ``data/part-NNNNN.parquet`` (one per cohort part file, so a subject lives in one file, rows
    sorted by subject then time): ``GENDER//M|F`` (null time, a static event), ``MEDS_BIRTH`` at
    the date of birth, per visit ``HOSPITAL_ADMISSION``, the diagnoses (``code_prefix`` + ICD-9
    code or ``icd10_prefix`` + ICD-10 code, in visit order) at the admission time and ``HOSPITAL_DISCHARGE``, all visit events with
    ``hadm_id``. ``metadata/``: dataset.json, codes.parquet (code, description, parent_codes as
    ``ICD9CM/<dotted code>`` or ``ICD10CM/<dotted code>``, the OMOP vocabulary spelling MEDS ETLs
    use), subject_splits.parquet (train, tuning, held_out). Dates are the
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
                events = _meds_events(patients, visits, hadm, code_prefix, icd10_prefix)
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
        parents = [_meds_parent(c) for c in dx["code"]]  # vocabulary-sized
        static = pl.DataFrame(
            {"code": list(_STATIC_CODES), "description": list(_STATIC_CODES.values())},
            schema={"code": pl.Utf8, "description": pl.Utf8},
        ).with_columns(pl.lit(None, pl.List(pl.Utf8)).alias("parent_codes"))
        codes = pl.concat(
            [
                static,
                dx.select(
                    _meds_code(pl.col("code"), code_prefix, icd10_prefix).alias("code"),
                    pl.col("description").cast(pl.Utf8),
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


# ----------------------------------------------------------------------------- registry


def _mimic3(cohort: Path, target: Path, seed: int, compress: bool, overwrite: bool) -> None:
    write_mimic3_csv(cohort, target, seed, compress=compress, overwrite=overwrite)


def _mimic4(cohort: Path, target: Path, seed: int, compress: bool, overwrite: bool) -> None:
    write_mimic4_csv(cohort, target, seed, compress=compress, overwrite=overwrite)


def _meds(cohort: Path, target: Path, seed: int, compress: bool, overwrite: bool) -> None:
    write_meds(cohort, target, seed, overwrite=overwrite)


# Every export of a cohort, by the name ehrgen.generate's and the job array's ``formats`` use.
EXPORTERS = {"mimic3": _mimic3, "mimic4": _mimic4, "meds": _meds}
FORMATS = ("cohort", *EXPORTERS)
