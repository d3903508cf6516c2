"""MIMIC-III v1.4: PATIENTS (gender, dob), ADMISSIONS (admittime), DIAGNOSES_ICD (seq_num order).

Age at a visit is the time between DOB and ADMITTIME in years (365.25 days). MIMIC-III shifts
the DOB of patients older than 89 by about 300 years; the builder clamps ages above 89 to 90.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ehrgen.data.codes import normalize_code_expr
from ehrgen.data.sources.base import (
    RawCsv,
    SourceTables,
    find_table,
    parse_datetime,
    parse_sex,
    years_between,
)


class Mimic3Source:
    """Reads the three MIMIC-III tables ehrgen needs (+ D_ICD_DIAGNOSES for titles when present)."""

    name = "mimic3"

    def __init__(self, raw_dir: str | Path | None):
        self.raw_dir = raw_dir

    def cache_key(self) -> dict[str, object]:
        return {"source": self.name, "raw_dir": str(Path(self.raw_dir).expanduser().absolute())}

    def load(self, workdir: Path | None = None) -> SourceTables:
        patients_csv = find_table(self.raw_dir, "PATIENTS", "MIMIC-III PATIENTS (SUBJECT_ID, GENDER, DOB)")
        admissions_csv = find_table(
            self.raw_dir, "ADMISSIONS", "MIMIC-III ADMISSIONS (SUBJECT_ID, HADM_ID, ADMITTIME)"
        )
        diagnoses_csv = find_table(
            self.raw_dir, "DIAGNOSES_ICD", "MIMIC-III DIAGNOSES_ICD (SUBJECT_ID, HADM_ID, SEQ_NUM, ICD9_CODE)"
        )
        raw = RawCsv()
        raw.check(patients_csv, admissions_csv, diagnoses_csv)  # all three at once, in the background
        patients = raw.scan(
            patients_csv, {"subject_id": pl.Int64, "gender": pl.Utf8, "dob": pl.Utf8}, "patients"
        ).select(
            "subject_id",
            parse_sex("gender").alias("sex"),
            parse_datetime("dob").alias("dob"),
        )
        admissions = raw.scan(
            admissions_csv,
            {"subject_id": pl.Int64, "hadm_id": pl.Int64, "admittime": pl.Utf8},
            "admissions",
            optional={"dischtime": pl.Utf8},
        ).select(
            "subject_id",
            pl.col("hadm_id").alias("visit_id"),
            parse_datetime("admittime").alias("time"),
            parse_datetime("dischtime").alias("end"),
        )
        # Duplicate PATIENTS rows must not duplicate admissions here; the builder counts them.
        births = patients.select("subject_id", "dob").unique("subject_id", keep="first")
        visits = admissions.join(births, on="subject_id", how="left").select(
            "subject_id",
            "visit_id",
            "time",
            "end",
            years_between("time", "dob").alias("age"),
        )
        # Codes as Categorical: the builder normalises and validates each distinct code once.
        diagnoses = raw.scan(
            diagnoses_csv,
            {"subject_id": pl.Int64, "hadm_id": pl.Int64, "seq_num": pl.Int64, "icd9_code": pl.Categorical},
            "diagnoses",
        ).select(
            "subject_id",
            pl.col("hadm_id").alias("visit_id"),
            pl.col("seq_num").alias("seq"),
            pl.col("icd9_code").alias("code"),
        )
        descriptions = None
        try:
            titles_csv = find_table(self.raw_dir, "D_ICD_DIAGNOSES", "")
        except ValueError:
            titles_csv = None
        if titles_csv is not None:
            titles = raw.scan(titles_csv, {"icd9_code": pl.Utf8, "long_title": pl.Utf8}, "descriptions")
            descriptions = titles.select(
                normalize_code_expr("icd9_code").alias("code"), pl.col("long_title").alias("description")
            )
        return SourceTables(
            name=self.name,
            patients=patients.select("subject_id", "sex"),
            visits=visits,
            diagnoses=diagnoses,
            descriptions=descriptions,
            drops=raw.drops,
            info={"raw_dir": str(Path(self.raw_dir).expanduser().absolute()), "input_records": raw.records},
        )
