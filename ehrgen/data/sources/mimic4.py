"""MIMIC-IV v2.x ``hosp/``: patients (gender, anchor_age, anchor_year), admissions (admittime),
diagnoses_icd (seq_num order, icd_code, icd_version).

MIMIC-IV has no date of birth: each patient has an ``anchor_age`` in a shifted ``anchor_year``, so the
age at a visit is ``anchor_age + year(admittime) - anchor_year`` (whole years). Diagnoses carry ICD-9
and ICD-10 codes side by side (``icd_version``); both are kept by default, ICD-10 codes as
``ICD10CM:<code>`` (``ehrgen.data.codes``). ``icd_versions`` keeps one of them; the other's rows are
dropped and counted (``icd9_rows`` / ``icd10_rows``). When present (or asked for by
``event_types``), procedures_icd (ICD-9-CM volume 3 and ICD-10-PCS, the same ``icd_versions``; left
out rows counted as ``procedure_icd<v>_rows``) and prescriptions (``drug``) are read too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from ehrgen.data.codes import (
    DIAGNOSIS,
    MEDICATION,
    PROCEDURE,
    normalize_code_expr,
    with_system_expr,
)
from ehrgen.data.sources.base import (
    SUPPORTED_ICD_VERSIONS,
    RawCsv,
    SourceTables,
    check_event_types,
    check_icd_versions,
    find_table,
    optional_table,
    parse_datetime,
    parse_sex,
    wanted,
)

log = logging.getLogger(__name__)


def hosp_dir(raw_dir: str | Path | None) -> Path | None:
    """``raw_dir/hosp`` when ``raw_dir`` is the MIMIC-IV root, else ``raw_dir`` (the hosp folder itself)."""
    if raw_dir is None:
        return None
    root = Path(raw_dir).expanduser()
    return root / "hosp" if (root / "hosp").is_dir() else root


class Mimic4Source:
    """Reads MIMIC-IV ``hosp`` patients, admissions, diagnoses_icd, procedures_icd, prescriptions
    (+ d_icd_diagnoses / d_icd_procedures for titles)."""

    name = "mimic4"

    def __init__(
        self,
        raw_dir: str | Path | None,
        icd_versions: object = SUPPORTED_ICD_VERSIONS,
        event_types: object = None,
    ):
        self.raw_dir = raw_dir
        self.icd_versions = check_icd_versions(icd_versions)
        self.event_types = None if event_types is None else check_event_types(event_types)

    def cache_key(self) -> dict[str, object]:
        raw = None if self.raw_dir is None else str(Path(self.raw_dir).expanduser().absolute())
        types = None if self.event_types is None else list(self.event_types)
        return {
            "source": self.name,
            "raw_dir": raw,
            "icd_versions": list(self.icd_versions),
            "event_types": types,
        }

    def load(self, workdir: Path | None = None) -> SourceTables:
        hosp = hosp_dir(self.raw_dir)
        patients_csv = find_table(
            hosp, "patients", "MIMIC-IV hosp/patients (subject_id, gender, anchor_age, anchor_year)"
        )
        admissions_csv = find_table(
            hosp, "admissions", "MIMIC-IV hosp/admissions (subject_id, hadm_id, admittime)"
        )
        diagnoses_csv = find_table(
            hosp,
            "diagnoses_icd",
            "MIMIC-IV hosp/diagnoses_icd (subject_id, hadm_id, seq_num, icd_code, icd_version)",
        )
        procedures_csv = optional_table(
            hosp,
            "procedures_icd",
            "MIMIC-IV hosp/procedures_icd (subject_id, hadm_id, seq_num, icd_code, icd_version)",
            wanted(self.event_types, PROCEDURE),
        )
        prescriptions_csv = optional_table(
            hosp,
            "prescriptions",
            "MIMIC-IV hosp/prescriptions (subject_id, hadm_id, drug)",
            wanted(self.event_types, MEDICATION),
        )
        raw = RawCsv()
        tables = (patients_csv, admissions_csv, diagnoses_csv, procedures_csv, prescriptions_csv)
        raw.check(*(t for t in tables if t is not None))  # every table at once, in the background
        patients = raw.scan(
            patients_csv,
            {"subject_id": pl.Int64, "gender": pl.Utf8, "anchor_age": pl.Int64, "anchor_year": pl.Int64},
            "patients",
        ).select("subject_id", parse_sex("gender").alias("sex"), "anchor_age", "anchor_year")
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
        visits = admissions.join(
            patients.select("subject_id", "anchor_age", "anchor_year"), on="subject_id", how="left"
        ).select(
            "subject_id",
            "visit_id",
            "time",
            "end",
            (pl.col("anchor_age") + pl.col("time").dt.year().cast(pl.Int64) - pl.col("anchor_year"))
            .cast(pl.Float64)
            .alias("age"),
        )

        diagnoses, version_drops = self._icd_table(raw, diagnoses_csv, "diagnoses", DIAGNOSIS)
        procedures = medications = None
        if procedures_csv is not None:
            procedures, procedure_drops = self._icd_table(raw, procedures_csv, "procedures", PROCEDURE)
            version_drops |= procedure_drops
        if prescriptions_csv is not None:
            medications = raw.prescriptions(prescriptions_csv)

        titles = [self._descriptions(hosp, raw, "d_icd_diagnoses", DIAGNOSIS)]
        if procedures is not None:
            titles.append(self._descriptions(hosp, raw, "d_icd_procedures", PROCEDURE))
        titles = [t for t in titles if t is not None]
        return SourceTables(
            name=self.name,
            patients=patients.select("subject_id", "sex"),
            visits=visits,
            diagnoses=diagnoses,
            procedures=procedures,
            medications=medications,
            descriptions=pl.concat(titles) if titles else None,
            drops=raw.drops | version_drops,
            info={
                "raw_dir": str(Path(self.raw_dir).expanduser().absolute()),
                "icd_versions": list(self.icd_versions),
                "input_records": raw.records,
            },
        )

    def _icd_table(
        self, raw: RawCsv, path: Path, table: str, kind: str
    ) -> tuple[pl.LazyFrame, dict[str, int]]:
        """An ICD-coded table's rows of the kept versions, codes marked for their system; drop counts."""
        rows = raw.scan(
            path,
            {
                "subject_id": pl.Int64,
                "hadm_id": pl.Int64,
                "seq_num": pl.Int64,
                "icd_code": pl.Categorical,
                "icd_version": pl.Int64,
            },
            table,
        )
        drops = self._count_dropped_versions(rows, path, "" if kind == DIAGNOSIS else f"{kind}_")
        kept = rows.filter(pl.col("icd_version").is_in(self.icd_versions))
        if kind == DIAGNOSIS and self.icd_versions == (9,):  # codes stay Categorical: no per-row string work
            code = pl.col("icd_code")
        else:
            code = with_system_expr("icd_code", "icd_version", kind)
        return kept.select(
            "subject_id",
            pl.col("hadm_id").alias("visit_id"),
            pl.col("seq_num").alias("seq"),
            code.alias("code"),
        ), drops

    def _count_dropped_versions(self, rows: pl.LazyFrame, path: Path, prefix: str) -> dict[str, int]:
        """Count rows outside the kept ICD versions (one pass over the version column); the reasons
        are ``<prefix>icd<v>_rows`` and ``<prefix>icd_version_invalid_rows``."""
        version = pl.col("icd_version")
        left_out = [v for v in SUPPORTED_ICD_VERSIONS if v not in self.icd_versions]
        counts = rows.select(
            *((version == v).sum().alias(f"{prefix}icd{v}_rows") for v in left_out),
            (version.is_null() | ~version.is_in([9, 10])).sum().alias(f"{prefix}icd_version_invalid_rows"),
        ).collect()
        drops = {name: int(counts[name][0] or 0) for name in counts.columns if counts[name][0]}
        for v in left_out:
            if f"{prefix}icd{v}_rows" in drops:
                log.info(
                    "%s: dropped %d ICD-%d rows (data.source.icd_versions=%s)",
                    path,
                    drops[f"{prefix}icd{v}_rows"],
                    v,
                    list(self.icd_versions),
                )
        if f"{prefix}icd_version_invalid_rows" in drops:
            log.warning(
                "%s: dropped %d rows whose icd_version is neither 9 nor 10",
                path,
                drops[f"{prefix}icd_version_invalid_rows"],
            )
        return drops

    def _descriptions(self, hosp: Path | None, raw: RawCsv, table: str, kind: str) -> pl.LazyFrame | None:
        """Long titles of the kept ICD versions from a d_icd_* table when the file is there (optional)."""
        titles_csv = optional_table(hosp, table, "", None)
        if titles_csv is None:
            return None
        return (
            raw.scan(
                titles_csv,
                {"icd_code": pl.Utf8, "icd_version": pl.Int64, "long_title": pl.Utf8},
                "descriptions",
            )
            .filter(pl.col("icd_version").is_in(self.icd_versions))
            .select(
                normalize_code_expr(with_system_expr("icd_code", "icd_version", kind)).alias("code"),
                pl.col("long_title").alias("description"),
            )
        )
