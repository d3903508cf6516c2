"""What every raw source hands to the cohort builder, and the CSV helpers they share."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl

from ehrgen.data.codes import DIAGNOSIS, EVENT_TYPES, RX_PREFIX
from ehrgen.data.sources.csv_check import CsvLayout, check_csv
from ehrgen.errors import InputError

log = logging.getLogger(__name__)


def check_event_types(value: object, key: str = "data.event_types") -> tuple[str, ...]:
    """The event types asked for: ``value`` (a list, or None for every type), in EVENT_TYPES order.

    Diagnoses are always among them (cohorts are built around them); one line naming ``key`` when
    ``value`` is not a list of known types.
    """
    if value is None:
        return EVENT_TYPES
    try:
        types = [str(v) for v in ([value] if isinstance(value, str) else value)]
    except TypeError:
        types = []
    if not types or not set(types) <= set(EVENT_TYPES) or DIAGNOSIS not in types:
        raise InputError(
            f"{key}={value!r}: expected null or a list of {list(EVENT_TYPES)} that includes diagnosis"
        )
    return tuple(t for t in EVENT_TYPES if t in types)


def wanted(event_types: Sequence[str] | None, kind: str) -> bool | None:
    """For :func:`optional_table`: True when ``event_types`` asks for ``kind``, False when it leaves
    it out, None (read if present) when ``event_types`` is null."""
    return None if event_types is None else kind in event_types


def optional_table(raw_dir: str | Path | None, name: str, expected: str, wanted: bool | None) -> Path | None:
    """``find_table`` for an event table: None when absent and not asked for (``wanted`` None means
    "if present"); a one-line error when ``wanted`` is True and it is missing; None when False."""
    if wanted is False:
        return None
    try:
        return find_table(raw_dir, name, expected)
    except InputError:
        if wanted:
            raise
        return None


# ICD versions of diagnosis codes a source can keep (ICD-10 codes are marked, ehrgen.data.codes).
SUPPORTED_ICD_VERSIONS = (9, 10)


def check_icd_versions(versions: object, key: str = "data.source.icd_versions") -> tuple[int, ...]:
    """The ICD versions a source keeps, as a sorted tuple; one line naming ``key`` when invalid."""
    try:
        kept = tuple(sorted({int(v) for v in ([versions] if isinstance(versions, int) else versions)}))
    except (TypeError, ValueError):
        kept = ()
    if not kept or not set(kept) <= set(SUPPORTED_ICD_VERSIONS):
        raise InputError(f"{key}={versions!r}: expected a non-empty subset of [9, 10]")
    return kept


@dataclass
class SourceTables:
    """Source-neutral tables; the builder does normalisation, validation, grouping and counting.

    - ``patients``: subject_id Int64, sex Int8 (0=M, 1=F, null when unknown)
    - ``visits``: subject_id Int64, visit_id Int64, time Datetime(us) (null if unparsable),
      end Datetime(us) (discharge; null when the source has none or it does not parse),
      age Float64 (years at this visit, null if unknown)
    - ``diagnoses``: subject_id Int64, visit_id Int64, seq Int64 (order within the visit),
      code Utf8 or Categorical (raw but marked by system, ``ehrgen.data.codes``; the builder
      normalises each distinct code once)
    - ``procedures``, ``medications``: the same columns, or None when the source has none or
      ``data.event_types`` leaves them out
    - ``descriptions``: code Utf8 (normalised), description Utf8; optional
    - ``drops``: reader-level drop counts (e.g. ``icd10_rows``), merged into cohort.json
    """

    name: str
    patients: pl.LazyFrame
    visits: pl.LazyFrame
    diagnoses: pl.LazyFrame
    descriptions: pl.LazyFrame | None = None
    procedures: pl.LazyFrame | None = None
    medications: pl.LazyFrame | None = None
    drops: dict[str, int] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)


class Source(Protocol):
    """A raw source: ``load`` may write scratch files under ``workdir`` (deleted afterwards)."""

    name: str

    def load(self, workdir: Path) -> SourceTables: ...

    def cache_key(self) -> dict[str, object]:
        """Options that identify the cohort this source produces (for the default cohort_dir)."""
        ...


def find_table(raw_dir: str | Path | None, name: str, expected: str) -> Path:
    """Locate ``NAME.csv``/``NAME.csv.gz`` (either case) in ``raw_dir`` or fail in one line."""
    if raw_dir is None:
        raise InputError(f"data.raw_dir is not set: expected a folder holding {name}.csv(.gz) ({expected})")
    root = Path(raw_dir).expanduser()
    if not root.is_dir():
        raise InputError(f"data.raw_dir {root} does not exist: expected a folder holding {name}.csv(.gz)")
    for stem in (name, name.upper(), name.lower()):
        for suffix in (".csv", ".csv.gz"):
            path = root / f"{stem}{suffix}"
            if path.is_file():
                return path
    raise InputError(f"{root / name}.csv(.gz) not found: expected {expected}")


# Drop-reason prefix of each table's rows, as the builder names them (patient_missing_id, ...).
ROW_PREFIX = {
    "patients": "patient",
    "admissions": "admission",
    "diagnoses": "diagnosis",
    "procedures": "procedure",
    "medications": "medication",
    "descriptions": "description",
}


class RawCsv:
    """Reads a source's CSV tables strictly: every data line is used, or dropped and counted.

    ``records[table]`` is the number of data lines of each table; unusable lines (wrong field
    count, blank) are filtered out before any parsing and counted in ``drops`` as
    ``<row>_malformed_row`` / ``<row>_blank_line``. Files that cannot be parsed (unbalanced quote,
    invalid UTF-8, truncated gzip) stop with one line naming the file and line
    (:func:`~ehrgen.data.sources.csv_check.check_csv`).
    """

    def __init__(self) -> None:
        self.drops: dict[str, int] = {}
        self.records: dict[str, int] = {}
        self._layouts: dict[Path, Future[CsvLayout]] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="csv-check")

    def check(self, *paths: Path) -> None:
        """Start the structural pass of ``paths`` in the background (numpy releases the GIL)."""
        for path in paths:
            if path not in self._layouts:
                self._layouts[path] = self._pool.submit(check_csv, path)

    def prescriptions(self, path: Path) -> pl.LazyFrame:
        """A MIMIC (III or IV) prescriptions table as medication events, ``RX:<drug name>``.

        No order within an admission but the file's (MIMIC writes a stay's orders in time order).
        """
        return (
            self.scan(path, {"subject_id": pl.Int64, "hadm_id": pl.Int64, "drug": pl.Utf8}, "medications")
            .with_row_index("seq")
            .select(
                "subject_id",
                pl.col("hadm_id").alias("visit_id"),
                pl.col("seq").cast(pl.Int64),
                (pl.lit(RX_PREFIX) + pl.col("drug")).alias("code"),
            )
        )

    def scan(
        self,
        path: Path,
        columns: dict[str, pl.DataType],
        table: str,
        optional: dict[str, pl.DataType] | None = None,
    ) -> pl.LazyFrame:
        """Scan ``columns`` of the CSV (headers matched case-insensitively, renamed to lower case).

        ``optional`` columns are read when the file has them and are all-null otherwise.

        Non-string columns are typed by the CSV reader itself, which is 3x cheaper than casting
        strings afterwards: a value that does not parse (``abc``, ``1.5`` for an integer) becomes
        null, and the builder drops and counts it like a missing one.
        """
        self.check(path)
        layout = self._layouts[path].result()
        try:
            header = pl.scan_csv(path, infer_schema=False, raise_if_empty=False).collect_schema().names()
        except pl.exceptions.PolarsError as err:
            raise InputError(f"{path}: cannot be read as CSV ({type(err).__name__})") from None
        original = {}
        for name in header:
            original.setdefault(name.strip().lower(), name)
        missing = [c for c in columns if c not in original]
        if missing:
            raise InputError(
                f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'no header'}"
            )
        prefix = ROW_PREFIX[table]
        self.records[table] = self.records.get(table, 0) + layout.records
        for reason, rows in (("malformed_row", layout.malformed), ("blank_line", layout.blank)):
            if len(rows):
                key = f"{prefix}_{reason}"
                self.drops[key] = self.drops.get(key, 0) + len(rows)
                log.warning("%s: dropped %d %s(s) (first at line %d)", path, len(rows), reason, rows[0] + 2)
        present = {c: t for c, t in (optional or {}).items() if c in original and c not in columns}
        absent = {c: t for c, t in (optional or {}).items() if c not in original and c not in columns}
        columns = {**columns, **present}
        typed = {original[c]: dtype for c, dtype in columns.items() if dtype != pl.Utf8}
        unusable = layout.unusable
        lf = pl.scan_csv(
            path,
            infer_schema=False,
            raise_if_empty=False,
            schema_overrides=typed,
            ignore_errors=True,  # values that do not parse become null (counted by the builder)
            truncate_ragged_lines=True,  # ragged lines are the malformed ones dropped just below
            row_index_name="_line" if len(unusable) else None,
        )
        if len(unusable):
            lf = lf.filter(~pl.col("_line").is_in(pl.Series(unusable, dtype=pl.UInt32).implode()))
        return lf.select(
            *(pl.col(original[c]).alias(c) for c in columns),
            *(pl.lit(None, dtype).alias(c) for c, dtype in absent.items()),
        )


def parse_datetime(col: str) -> pl.Expr:
    """Parse MIMIC timestamps (``2164-10-23 21:09:00``, ISO ``T`` form, no seconds, a bare date); null if not.

    Strings are first brought to one ``YYYY-MM-DD HH:MM:SS`` layout and parsed once (trying
    several formats costs 5x more); sub-second digits and a trailing zone designator are dropped.
    """
    s = pl.col(col).str.strip_chars().str.replace("T", " ", literal=True)
    n = s.str.len_bytes()
    s = pl.when(n == 10).then(s + " 00:00:00").when(n == 16).then(s + ":00").otherwise(s.str.slice(0, 19))
    return s.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us")


def parse_sex(col: str) -> pl.Expr:
    """``M``/``F`` (any case, also ``male``/``female``) -> 0/1, anything else -> null."""
    s = pl.col(col).str.strip_chars().str.to_uppercase()
    return (
        pl.when(s.is_in(["M", "MALE"]))
        .then(pl.lit(0, pl.Int8))
        .when(s.is_in(["F", "FEMALE"]))
        .then(pl.lit(1, pl.Int8))
        .otherwise(pl.lit(None, pl.Int8))
    )


def years_between(later: str, earlier: str) -> pl.Expr:
    """Elapsed years (365.25-day years) from column ``earlier`` to column ``later``."""
    return (pl.col(later) - pl.col(earlier)).dt.total_seconds() / (86400.0 * 365.25)
