"""MIMIC-III v1.4: PATIENTS (gender, dob), ADMISSIONS (admittime), DIAGNOSES_ICD (seq_num order),
and, when present, PROCEDURES_ICD (seq_num order) and PRESCRIPTIONS (file order).

Age at a visit is the time between DOB and ADMITTIME in years (365.25 days). MIMIC-III shifts
the DOB of patients older than 89 by about 300 years; the builder clamps ages above 89 to 90.
Procedures are ICD-9-CM volume 3 codes (``ICD9PCS:``), medications the prescription's ``DRUG``
name (``RX:``, keyed by ingredient in the builder: ``ehrgen.data.codes.drug_key``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ehrgen.data.codes import ICD9PCS_PREFIX, MEDICATION, PROCEDURE, normalize_code_expr
from ehrgen.data.sources.base import (
    RawCsv,
    SourceTables,
    check_event_types,
    find_table,
    optional_table,
    parse_datetime,
    parse_sex,
    wanted,
    years_between,
)


class Mimic3Source:
    """Reads the MIMIC-III tables ehrgen needs (+ D_ICD_DIAGNOSES / D_ICD_PROCEDURES for titles)."""

    name = "mimic3"

    def __init__(self, raw_dir: str | Path | None, event_types: object = None):
        self.raw_dir = raw_dir
        self.event_types = None if event_types is None else check_event_types(event_types)

    def cache_key(self) -> dict[str, object]:
        types = None if self.event_types is None else list(self.event_types)
        return {
            "source": self.name,
            "raw_dir": str(Path(self.raw_dir).expanduser().absolute()),
            "event_types": types,
        }

    def load(self, workdir: Path | None = None) -> SourceTables:
        patients_csv = find_table(self.raw_dir, "PATIENTS", "MIMIC-III PATIENTS (SUBJECT_ID, GENDER, DOB)")
        admissions_csv = find_table(
            self.raw_dir, "ADMISSIONS", "MIMIC-III ADMISSIONS (SUBJECT_ID, HADM_ID, ADMITTIME)"
        )
        diagnoses_csv = find_table(
            self.raw_dir, "DIAGNOSES_ICD", "MIMIC-III DIAGNOSES_ICD (SUBJECT_ID, HADM_ID, SEQ_NUM, ICD9_CODE)"
        )
        procedures_csv = optional_table(
            self.raw_dir, "PROCEDURES_ICD", "MIMIC-III PROCEDURES_ICD (SUBJECT_ID, HADM_ID, SEQ_NUM, ICD9_CODE)",
            wanted(self.event_types, PROCEDURE),
        )  # fmt: skip
        prescriptions_csv = optional_table(
            self.raw_dir,
            "PRESCRIPTIONS",
            "MIMIC-III PRESCRIPTIONS (SUBJECT_ID, HADM_ID, DRUG)",
            wanted(self.event_types, MEDICATION),
        )
        raw = RawCsv()
        # every table at once, in the background
        raw.check(
            *(
                p
                for p in (patients_csv, admissions_csv, diagnoses_csv, procedures_csv, prescriptions_csv)
                if p
            )
        )
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
        procedures = medications = None
        if procedures_csv is not None:
            procedures = raw.scan(
                procedures_csv,
                {"subject_id": pl.Int64, "hadm_id": pl.Int64, "seq_num": pl.Int64, "icd9_code": pl.Utf8},
                "procedures",
            ).select(
                "subject_id",
                pl.col("hadm_id").alias("visit_id"),
                pl.col("seq_num").alias("seq"),
                (pl.lit(ICD9PCS_PREFIX) + pl.col("icd9_code")).alias("code"),
            )
        if prescriptions_csv is not None:
            medications = raw.prescriptions(prescriptions_csv)
        titles = [self._titles(raw, "D_ICD_DIAGNOSES", "")]
        if procedures is not None:
            titles.append(self._titles(raw, "D_ICD_PROCEDURES", ICD9PCS_PREFIX))
        titles = [t for t in titles if t is not None]
        return SourceTables(
            name=self.name,
            patients=patients.select("subject_id", "sex"),
            visits=visits,
            diagnoses=diagnoses,
            procedures=procedures,
            medications=medications,
            descriptions=pl.concat(titles) if titles else None,
            drops=raw.drops,
            info={"raw_dir": str(Path(self.raw_dir).expanduser().absolute()), "input_records": raw.records},
        )

    def _titles(self, raw: RawCsv, table: str, mark: str) -> pl.LazyFrame | None:
        """``code, description`` from a D_ICD_* table when it is there (it is optional)."""
        path = optional_table(self.raw_dir, table, "", None)
        if path is None:
            return None
        titles = raw.scan(path, {"icd9_code": pl.Utf8, "long_title": pl.Utf8}, "descriptions")
        return titles.select(
            normalize_code_expr(pl.lit(mark) + pl.col("icd9_code")).alias("code"),
            pl.col("long_title").alias("description"),
        )
