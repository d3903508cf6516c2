"""A MEDS dataset (Medical Event Data Standard): ``data/**/*.parquet`` + ``metadata/``.

Each data row is one event (``subject_id``, ``time``, ``code``, ``numeric_value``, extra columns).
Diagnoses are events whose code starts with ``code_prefix`` (ICD-9-CM, default ``DIAGNOSIS//ICD//9//``,
the MIMIC-IV MEDS ETL's spelling) or ``icd10_prefix`` (ICD-10-CM, ``DIAGNOSIS//ICD//10//``); the rest
of the code is the diagnosis code, ICD-10 ones marked ``ICD10CM:`` in the cohort
(``ehrgen.data.codes``). ``icd_versions`` keeps one system; the other's events are dropped and
counted (``icd9_rows`` / ``icd10_rows``). Birth is the ``MEDS_BIRTH``
event's time, sex the ``GENDER//M`` / ``GENDER//F`` event. A visit is a hospital admission when the
events carry an admission id column (``hadm_id``), else one timestamp of one subject.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl

from ehrgen.data.codes import (
    DIAGNOSIS,
    EVENT_TYPES,
    ICD9PCS_PREFIX,
    ICD10CM_PREFIX,
    ICD10PCS_PREFIX,
    MEDICATION,
    PROCEDURE,
    RX_PREFIX,
    normalize_code_expr,
)
from ehrgen.data.sources.base import (
    SUPPORTED_ICD_VERSIONS,
    SourceTables,
    check_event_types,
    check_icd_versions,
    parse_datetime,
    years_between,
)
from ehrgen.errors import InputError

log = logging.getLogger(__name__)

_REQUIRED = ("subject_id", "time", "code")


def _time_expr(dtype: pl.DataType, path: Path) -> pl.Expr:
    """``time`` as naive Datetime(us), whatever precision/zone/type a MEDS writer chose."""
    col = pl.col("time")
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return col.cast(pl.Datetime("us"))
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us"))
    if dtype in (pl.Utf8, pl.String):
        return parse_datetime("time")
    if dtype == pl.Null:
        return pl.lit(None, pl.Datetime("us"))
    raise InputError(f"{path}: column time has type {dtype}, expected a timestamp (MEDS time: timestamp[us])")


class MedsSource:
    """Reads ICD-9 and ICD-10 diagnoses, birth and sex from a MEDS dataset root."""

    name = "meds"

    def __init__(
        self,
        raw_dir: str | Path | None,
        code_prefix: str = "DIAGNOSIS//ICD//9//",
        icd10_prefix: str | None = "DIAGNOSIS//ICD//10//",
        visit_column: str | None = "hadm_id",
        birth_code: str = "MEDS_BIRTH",
        male_code: str = "GENDER//M",
        female_code: str = "GENDER//F",
        icd_versions: object = SUPPORTED_ICD_VERSIONS,
        procedure_prefix: str | None = "PROCEDURE//ICD//9//",
        procedure10_prefix: str | None = "PROCEDURE//ICD//10//",
        medication_prefix: str | None = "MEDICATION//",
        event_types: object = None,
    ):
        if not code_prefix:
            raise InputError("data.source.code_prefix is empty: expected the prefix of ICD-9 diagnosis codes")
        self.raw_dir = raw_dir
        self.code_prefix = code_prefix
        self.icd10_prefix = icd10_prefix or None
        if self.icd10_prefix is not None and (
            self.icd10_prefix.startswith(code_prefix) or code_prefix.startswith(self.icd10_prefix)
        ):
            raise InputError(
                f"data.source.icd10_prefix={self.icd10_prefix!r} overlaps code_prefix={code_prefix!r}: "
                "expected two prefixes neither of which starts the other"
            )
        self.icd_versions = check_icd_versions(icd_versions)
        self.procedure_prefixes = {9: procedure_prefix or None, 10: procedure10_prefix or None}
        self.medication_prefix = medication_prefix or None
        self.event_types = None if event_types is None else check_event_types(event_types)
        self.visit_column = visit_column or None
        self.birth_code = birth_code
        self.male_code = male_code
        self.female_code = female_code

    def cache_key(self) -> dict[str, object]:
        raw = None if self.raw_dir is None else str(Path(self.raw_dir).expanduser().absolute())
        return {
            "source": self.name,
            "raw_dir": raw,
            "code_prefix": self.code_prefix,
            "icd10_prefix": self.icd10_prefix,
            "icd_versions": list(self.icd_versions),
            "procedure_prefixes": [self.procedure_prefixes[9], self.procedure_prefixes[10]],
            "medication_prefix": self.medication_prefix,
            "event_types": None if self.event_types is None else list(self.event_types),
            "visit_column": self.visit_column,
            "birth_code": self.birth_code,
            "male_code": self.male_code,
            "female_code": self.female_code,
        }

    # ------------------------------------------------------------------ reading

    def _root(self) -> Path:
        if self.raw_dir is None:
            raise InputError(
                "data.raw_dir is not set: expected a MEDS dataset root holding data/**/*.parquet"
            )
        root = Path(self.raw_dir).expanduser()
        if not root.is_dir():
            raise InputError(f"data.raw_dir {root} does not exist: expected a MEDS dataset root")
        return root

    def _events(self, root: Path) -> tuple[pl.LazyFrame, bool]:
        """All events as (row, subject_id, time, code, visit_key); whether any file has visit_column."""
        files = sorted((root / "data").glob("**/*.parquet"))
        if not files:
            raise InputError(
                f"{root / 'data'}: no *.parquet files found: expected MEDS data/**/*.parquet shards"
            )
        frames, has_visit_column = [], False
        # Shards are normalised one by one: MEDS writers differ in time precision and extra columns.
        for path in files:
            try:
                schema = pl.read_parquet_schema(path)
            except Exception as err:  # pyarrow/polars raise several types for a corrupt footer
                raise InputError(f"{path}: cannot be read as Parquet ({type(err).__name__})") from None
            missing = [c for c in _REQUIRED if c not in schema]
            if missing:
                raise InputError(
                    f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(schema) or 'none'} "
                    "(MEDS data needs subject_id, time, code)"
                )
            if self.visit_column and self.visit_column in schema:
                has_visit_column = True
                visit_key = pl.col(self.visit_column).cast(pl.Int64, strict=False)
            else:
                visit_key = pl.lit(None, pl.Int64)
            frames.append(
                pl.scan_parquet(path).select(
                    pl.col("subject_id").cast(pl.Int64, strict=False),
                    _time_expr(schema["time"], path).alias("time"),
                    pl.col("code").cast(pl.Utf8),
                    visit_key.alias("visit_key"),
                )
            )
        # The row index keeps the writer's event order, used for the within-visit code order.
        return pl.concat(frames, how="vertical").with_row_index("row"), has_visit_column

    def _prefixes(self) -> dict[int, str]:
        """ICD version -> MEDS diagnosis prefix, for the systems the dataset spells (ICD-10's may be null)."""
        return {9: self.code_prefix} | ({10: self.icd10_prefix} if self.icd10_prefix else {})

    def _systems(self) -> list[tuple[str, str, str]]:
        """``(MEDS prefix, event type, cohort mark)`` of every code system read, diagnoses first."""
        wanted = {t: self.event_types is None or t in self.event_types for t in EVENT_TYPES}
        out = [(p, DIAGNOSIS, ICD10CM_PREFIX if v == 10 else "") for v, p in self._prefixes().items()]
        if wanted[PROCEDURE]:
            marks = {9: ICD9PCS_PREFIX, 10: ICD10PCS_PREFIX}
            out += [(p, PROCEDURE, marks[v]) for v, p in self.procedure_prefixes.items() if p]
        out = [
            (p, k, m)
            for p, k, m in out
            if (10 if m in (ICD10CM_PREFIX, ICD10PCS_PREFIX) else 9) in self.icd_versions
        ]
        if wanted[MEDICATION] and self.medication_prefix:
            out.append((self.medication_prefix, MEDICATION, RX_PREFIX))
        return out

    def _cohort_code(self, systems: list[tuple[str, str, str]]) -> pl.Expr:
        """An event's code -> the cohort's code: prefix replaced by the system's mark; a medication
        is named by the last ``//`` part after its prefix (``MEDICATION//Heparin`` -> ``RX:Heparin``)."""
        code = pl.col("code")
        out = pl.lit(None, pl.Utf8)
        for prefix, kind, mark in reversed(systems):
            rest = code.str.slice(len(prefix))
            if kind == MEDICATION:
                rest = rest.str.split("//").list.last()
            out = pl.when(code.str.starts_with(prefix)).then(pl.lit(mark) + rest).otherwise(out)
        return out

    def _kind(self, systems: list[tuple[str, str, str]]) -> pl.Expr:
        out = pl.lit(None, pl.Utf8)
        for prefix, kind, _ in reversed(systems):
            out = pl.when(pl.col("code").str.starts_with(prefix)).then(pl.lit(kind)).otherwise(out)
        return out

    def load(self, workdir: Path | None = None) -> SourceTables:
        root = self._root()
        events, has_visit_column = self._events(root)
        systems = self._systems()
        found = self._kinds_found(events, systems, root)
        systems = [s for s in systems if s[1] in found]

        dx = events.with_columns(self._kind(systems).alias("kind")).filter(pl.col("kind").is_not_null())
        # Admissions: all events sharing an admission id (visit time = earliest of them, end = the
        # latest, e.g. HOSPITAL_DISCHARGE; null for an admission whose events share one time).
        by_admission = (
            events.filter(pl.col("visit_key").is_not_null())
            .group_by("subject_id", "visit_key")
            .agg(pl.col("time").min(), pl.col("time").max().alias("end"))
            .with_columns(pl.when(pl.col("end") > pl.col("time")).then(pl.col("end")).alias("end"))
            .rename({"visit_key": "visit_id"})
        )
        # Coded events without an admission id: one visit per (subject, timestamp). Visit ids are global
        # (the builder keys visits by id alone); negative ones cannot collide with admission ids, and
        # a null time or subject gives a null id, which the builder drops and counts.
        dx_no_admission = dx.filter(pl.col("visit_key").is_null())
        time_visits = (
            dx_no_admission.select("subject_id", "time")
            .drop_nulls()
            .unique()
            .sort("subject_id", "time")
            .with_row_index("k")
            .select("subject_id", "time", (-1 - pl.col("k").cast(pl.Int64)).alias("visit_id"))
        )
        # A visit keyed by one timestamp is a point in time: no end.
        dx_by_time = dx_no_admission.join(time_visits, on=["subject_id", "time"], how="left")
        dx_by_admission = dx.filter(pl.col("visit_key").is_not_null()).with_columns(
            pl.col("visit_key").alias("visit_id")
        )
        visit_times = pl.concat(
            [
                by_admission.select("subject_id", "visit_id", "time", "end"),
                time_visits.select(
                    "subject_id", "visit_id", "time", pl.lit(None, pl.Datetime("us")).alias("end")
                ),
            ],
            how="vertical",
        )

        births = (
            events.filter(pl.col("code") == self.birth_code)
            .group_by("subject_id")
            .agg(pl.col("time").min().alias("birth"))
        )
        visits = visit_times.join(births, on="subject_id", how="left").select(
            "subject_id",
            "visit_id",
            "time",
            "end",
            years_between("time", "birth").alias("age"),
        )

        coded = (
            pl.concat(
                [
                    f.select("row", "subject_id", "visit_id", "kind", "code")
                    for f in (dx_by_admission, dx_by_time)
                ],
                how="vertical",
            )
            .with_columns(
                pl.col("row")
                .rank("ordinal")
                .over("subject_id", "visit_id", "kind")
                .cast(pl.Int64)
                .alias("seq")
            )
            .select("subject_id", "visit_id", "seq", "kind", self._cohort_code(systems).alias("code"))
        )
        tables = {
            kind: coded.filter(pl.col("kind") == kind).select("subject_id", "visit_id", "seq", "code")
            for kind in EVENT_TYPES
            if kind in found
        }

        return SourceTables(
            name=self.name,
            patients=self._patients(events),
            visits=visits,
            diagnoses=tables[DIAGNOSIS],
            procedures=tables.get(PROCEDURE),
            medications=tables.get(MEDICATION),
            descriptions=self._descriptions(root, systems),
            drops=self._count_left_out(events, root),
            info={
                "raw_dir": str(root.absolute()),
                "visits_by": self.visit_column if has_visit_column else "time",
                "meds_dataset": self._dataset_info(root),
            },
        )

    def _patients(self, events: pl.LazyFrame) -> pl.LazyFrame:
        """Every subject in the data; sex from the gender events, null when absent or contradictory."""
        sex = (
            pl.when(pl.col("code") == self.male_code)
            .then(pl.lit(0, pl.Int8))
            .when(pl.col("code") == self.female_code)
            .then(pl.lit(1, pl.Int8))
        )
        sexes = (
            events.filter(pl.col("code").is_in([self.male_code, self.female_code]))
            .group_by("subject_id")
            .agg(sex.min().alias("lo"), sex.max().alias("hi"))
            .select("subject_id", pl.when(pl.col("lo") == pl.col("hi")).then(pl.col("lo")).alias("sex"))
        )
        subjects = events.select("subject_id").unique()
        return subjects.join(sexes, on="subject_id", how="left").select(
            "subject_id", pl.col("sex").cast(pl.Int8)
        )

    def _kinds_found(self, events: pl.LazyFrame, systems: list[tuple[str, str, str]], root: Path) -> set[str]:
        """Event types with at least one event (diagnoses always); one line when a type asked for
        by ``event_types`` has none."""
        kinds = {k for _, k, _ in systems if k != DIAGNOSIS}
        counts = (
            events.select(
                *(
                    pl.any_horizontal([pl.col("code").str.starts_with(p) for p, k2, _ in systems if k2 == k])
                    .sum()
                    .alias(k)
                    for k in sorted(kinds)
                )
            ).collect()
            if kinds
            else pl.DataFrame()
        )
        found = {DIAGNOSIS} | {k for k in kinds if counts[k][0]}
        asked = set(self.event_types or ())
        missing = sorted(asked - found)
        if missing:
            spelled = [p for p, k, _ in systems if k in missing]
            raise InputError(
                f"{root}: data.event_types asks for {', '.join(missing)}, and no event code starts with {spelled}"
            )
        return found

    def _count_left_out(self, events: pl.LazyFrame, root: Path) -> dict[str, int]:
        """Count the diagnosis and procedure events of a version ``icd_versions`` leaves out, so the
        cohort says how many (``icd<v>_rows``, ``procedure_icd<v>_rows``)."""
        left_out = {f"icd{v}_rows": p for v, p in self._prefixes().items() if v not in self.icd_versions}
        if self.event_types is None or PROCEDURE in self.event_types:
            left_out |= {
                f"procedure_icd{v}_rows": p
                for v, p in self.procedure_prefixes.items()
                if p and v not in self.icd_versions
            }
        if not left_out:
            return {}
        counts = events.select(
            *(pl.col("code").str.starts_with(p).sum().alias(k) for k, p in left_out.items())
        ).collect()
        drops = {name: int(counts[name][0] or 0) for name in counts.columns if counts[name][0]}
        for name, n in drops.items():
            log.info(
                "%s: dropped %d %s (data.source.icd_versions=%s)",
                root,
                n,
                name.replace("_", " "),
                list(self.icd_versions),
            )
        return drops

    def _descriptions(self, root: Path, systems: list[tuple[str, str, str]]) -> pl.LazyFrame | None:
        """Diagnosis and procedure titles from ``metadata/codes.parquet`` when it has a description column."""
        path = root / "metadata" / "codes.parquet"
        if not path.is_file():
            return None
        try:
            schema = pl.read_parquet_schema(path)
        except Exception as err:
            raise InputError(f"{path}: cannot be read as Parquet ({type(err).__name__})") from None
        if "code" not in schema or "description" not in schema:
            return None
        return (
            pl.scan_parquet(path)
            .select(pl.col("code").cast(pl.Utf8), pl.col("description").cast(pl.Utf8))
            .filter(self._kind(systems).is_in([DIAGNOSIS, PROCEDURE]) & pl.col("description").is_not_null())
            .select(
                normalize_code_expr(self._cohort_code(systems)).alias("code"),
                "description",
            )
            .unique("code", keep="first", maintain_order=True)
        )

    @staticmethod
    def _dataset_info(root: Path) -> dict[str, object]:
        """Name and versions from ``metadata/dataset.json`` (optional in practice)."""
        path = root / "metadata" / "dataset.json"
        if not path.is_file():
            return {}
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(meta, dict):
            raise InputError(f"{path}: expected a JSON object (MEDS dataset metadata)")
        keys = ("dataset_name", "dataset_version", "etl_name", "etl_version", "meds_version")
        return {k: meta[k] for k in keys if k in meta}
