"""SourceTables -> cohort directory: normalise, validate, count drops, group, split, shard.

Every row that cannot be used is dropped *and counted* (``cohort.json["drops"]`` and the log);
nothing is silently lost and nothing half-written is left behind (``atomic_directory``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from ehrgen.data.codes import (
    DIAGNOSIS,
    MARK_PATTERN,
    MEDICATION,
    PROCEDURE,
    TYPE_PATTERNS,
    category_expr,
    event_type_expr,
    normalize_code_expr,
)
from ehrgen.data.cohort import (
    POLARS_SCHEMA,
    SPLITS,
    assign_splits,
    cohort_metadata,
    write_json_atomic,
    write_patient_shards,
)
from ehrgen.data.gem import IcdMap
from ehrgen.data.partition import PART_COLUMN, number_of_parts, part_bounds, part_of, spill_events
from ehrgen.data.sources.base import ROW_PREFIX, SourceTables
from ehrgen.errors import InputError

log = logging.getLogger(__name__)

# MIMIC-III shifts DOBs of patients over 89 by ~300 years and MIMIC-IV caps anchor_age at 91:
# every age above this is reported as AGE_CLAMP_TO.
AGE_CLAMP_ABOVE = 89.0
AGE_CLAMP_TO = 90.0
COOCCURRENCE_FILE = "cooccurrence.npz"


def _collect(lf: pl.LazyFrame) -> pl.DataFrame:
    return lf.collect(engine="streaming")


def _count_drop(drops: dict[str, int], name: str, n: int) -> None:
    if n:
        drops[name] = drops.get(name, 0) + int(n)


# The event tables a source may hand over: SourceTables field (= input table name), the prefix of
# its drop reasons, its event type. Visits list their codes in this order of tables.
EVENT_TABLES = (
    ("diagnoses", "diagnosis", DIAGNOSIS),
    ("procedures", "procedure", PROCEDURE),
    ("medications", "medication", MEDICATION),
)


def _normalised_codes(raw: pl.Series, pattern: str) -> pl.DataFrame:
    """Per distinct raw code: ``norm`` (normalised, Categorical; null unless shaped like ``pattern``,
    its event type's codes), ``empty``."""
    norm = normalize_code_expr(pl.col("code").cast(pl.Utf8))
    # A medication whose name holds no ingredient word normalises to the bare mark: empty too.
    value = norm.str.replace(MARK_PATTERN, "")
    return pl.DataFrame({"code": raw}).select(
        "code",
        pl.when(norm.str.contains(pattern)).then(norm).cast(pl.Categorical).alias("norm"),
        (value == "").alias("empty"),
    )


def visit_code_lists(dx: pl.DataFrame) -> pl.DataFrame:
    """``visit_id, codes``: each visit's distinct codes in ``seq`` order, a code at its first mention."""
    visit, seq = pl.col("visit_id"), pl.col("seq")
    out_of_order = dx.select(((visit == visit.shift()) & (seq < seq.shift())).sum() + seq.null_count()).item()
    if not out_of_order:
        # Runs of equal visit_id group by a sorted key (no hashing, 5x faster); right when each
        # visit is one run, as MIMIC ships its rows.
        codes = (
            dx.with_columns(visit.rle_id().alias("run"))
            .group_by("run", maintain_order=True)
            .agg(visit.first(), pl.col("code"))
        )
    if out_of_order or codes["visit_id"].n_unique() != codes.height:
        codes = dx.group_by("visit_id").agg(
            pl.col("code").sort_by("seq", nulls_last=True, maintain_order=True)
        )
    return codes.select("visit_id", pl.col("code").list.unique(maintain_order=True).alias("codes"))


def read_people(
    tables: SourceTables,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int], dict[str, int]]:
    """Return ``(patients, visits, drops, input_rows)``: the usable patients (subject_id, sex) and
    admissions (subject_id, visit_id, time, end, age), cleaned and counted.

    These two tables are small (one row per patient or admission) and stay in memory; the event
    tables are read part by part (:func:`attach_codes`). ``input_rows`` holds the two tables'
    input rows and, for CSV sources, every table's raw data lines.
    """
    drops = dict(tables.drops)
    with _parse_errors(tables):
        patients, visits = pl.collect_all(
            [
                tables.patients.select("subject_id", "sex"),
                tables.visits.select("subject_id", "visit_id", "time", "end", "age"),
            ],
            engine="streaming",
        )
    input_rows = {"patients": patients.height, "admissions": visits.height}
    # CSV sources count raw data lines, including those already dropped while reading.
    input_rows |= dict(tables.info.get("input_records") or {})

    # -- patients
    _count_drop(drops, "patient_missing_id", patients["subject_id"].null_count())
    patients = patients.drop_nulls("subject_id")
    n = patients.height
    patients = patients.filter(pl.col("subject_id").is_first_distinct())
    _count_drop(drops, "duplicate_patient", n - patients.height)
    _count_drop(drops, "patient_unknown_sex", patients["sex"].null_count())
    patients = patients.drop_nulls("sex")

    # -- admissions
    n = visits.height
    visits = visits.drop_nulls(["subject_id", "visit_id"])
    _count_drop(drops, "admission_missing_id", n - visits.height)
    n = visits.height
    visits = visits.filter(pl.col("visit_id").is_first_distinct())
    _count_drop(drops, "duplicate_admission", n - visits.height)
    _count_drop(drops, "admission_unparsable_time", visits["time"].null_count())
    visits = visits.drop_nulls("time")
    n = visits.height
    visits = visits.join(patients.select("subject_id"), on="subject_id", how="semi")
    _count_drop(drops, "admission_without_patient", n - visits.height)
    _count_drop(drops, "admission_unknown_age", visits["age"].null_count())
    visits = visits.drop_nulls("age")
    _count_drop(drops, "admission_negative_age", (visits["age"] < 0).sum())
    visits = visits.filter(pl.col("age") >= 0)
    return patients, visits, drops, input_rows


@contextlib.contextmanager
def _parse_errors(tables: SourceTables) -> Iterator[None]:
    """A source table polars cannot parse: one line naming the source, never the reader's message
    (it quotes raw rows, which must not reach logs)."""
    try:
        yield
    except pl.exceptions.PolarsError as err:
        where = tables.info.get("raw_dir") or tables.name
        raise InputError(
            f"{where}: a {tables.name} table could not be parsed ({type(err).__name__})"
        ) from None


def event_frames(tables: SourceTables) -> dict[str, pl.LazyFrame]:
    """The source's event tables (EVENT_TABLES order): subject_id, visit_id, seq, code."""
    return {
        table: getattr(tables, table).select("subject_id", "visit_id", "seq", "code")
        for table, _, _ in EVENT_TABLES
        if getattr(tables, table) is not None
    }


def attach_codes(
    events: dict[str, pl.DataFrame],
    visits: pl.DataFrame,
    patients: pl.DataFrame,
    drops: dict[str, int],
    icd_map: IcdMap | None = None,
    usage: pl.DataFrame | None = None,
    every_visit: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Return ``(visits, patients, added)`` for the usable admissions with codes and their patients.

    ``visits`` gain ``codes`` (the visit's distinct codes: diagnoses, then procedures, then
    medications, each in ``seq`` order); ``events`` are reduced to visit-level lists straight
    away, so per-event rows never carry visit columns. ``icd_map`` translates every diagnosis into
    one ICD version (``ehrgen.data.gem``), choosing among alternatives by ``usage`` (code, n;
    default: these rows' own counts); ``added`` is the number of diagnoses beyond one per input
    row that the map's combination entries created. Drops are counted into ``drops``.
    ``every_visit`` (visit_id, visit_subject of every part's admissions): a part of a cohort
    checks its rows against those too, since a row may name another patient's admission.
    """
    # Each distinct raw code is normalised and validated once, not once per row.
    visit_subject = _visit_subject(visits)
    lists, added = [], 0
    for table, reason, kind in EVENT_TABLES:
        if table not in events:
            continue
        rows = events.pop(table)
        named = _named_admissions(rows, visit_subject, every_visit)
        rows = _usable_events(rows, named, reason, TYPE_PATTERNS[kind], drops)
        if kind == DIAGNOSIS and icd_map is not None:
            rows, added = _map_codes(rows, icd_map, drops, usage)
        visit_codes = visit_code_lists(rows)
        duplicate = "duplicate_code_in_visit" if kind == DIAGNOSIS else f"{reason}_duplicate_in_visit"
        _count_drop(drops, duplicate, rows.height - int(visit_codes["codes"].list.len().sum() or 0))
        lists.append(visit_codes)
        del rows
    if len(lists) > 1:  # one list per visit, the tables' codes in EVENT_TABLES order
        visit_codes = (
            pl.concat([v.with_columns(pl.lit(i, pl.Int8).alias("rank")) for i, v in enumerate(lists)])
            .sort("visit_id", "rank")
            .group_by("visit_id", maintain_order=True)
            .agg(pl.col("codes").list.explode(keep_nulls=False, empty_as_null=False))
        )
    _count_drop(drops, "admission_without_codes", visits.height - visit_codes.height)
    visits = visits.join(visit_codes, on="visit_id", how="inner")
    with_visits = patients.join(visits.select("subject_id"), on="subject_id", how="semi")
    _count_drop(drops, "patient_without_admissions", patients.height - with_visits.height)
    return visits, with_visits, added


def _named_admissions(
    rows: pl.DataFrame, visit_subject: pl.DataFrame, every_visit: pl.DataFrame | None
) -> pl.DataFrame:
    """``visit_subject`` plus the admissions of ``every_visit`` that ``rows`` name outside it (few:
    a small lookup, rather than joining millions of rows against every admission)."""
    if every_visit is None:
        return visit_subject
    outside = rows.select(pl.col("visit_id").unique().drop_nulls()).join(
        visit_subject, on="visit_id", how="anti"
    )
    return pl.concat(
        [visit_subject, every_visit.filter(pl.col("visit_id").is_in(outside["visit_id"].implode()))]
    )


def _usable_events(
    rows: pl.DataFrame, visit_subject: pl.DataFrame, reason: str, pattern: str, drops: dict[str, int]
) -> pl.DataFrame:
    """``visit_id, seq, code`` of an event table's usable rows; the rest counted as ``<reason>_*``."""
    rows = rows.with_columns(pl.col("code").cast(pl.Categorical))
    code_map = _normalised_codes(rows["code"].unique().drop_nulls(), pattern)
    # Eager joins: the same two as one lazy plan cost 1.4x the CPU.
    rows = rows.join(code_map, on="code", how="left", maintain_order="left").join(
        visit_subject, on="visit_id", how="left", maintain_order="left"
    )
    # Each dropped row is counted once, under the first reason that applies.
    null_code = pl.col("code").is_null() | pl.col("empty")
    shaped = pl.col("norm").is_not_null()
    admitted = pl.col("visit_subject").is_not_null()
    has_ids = pl.col("visit_id").is_not_null() & pl.col("subject_id").is_not_null()
    mismatch = pl.col("subject_id") != pl.col("visit_subject")
    counts = rows.select(
        null_code.sum().alias(f"{reason}_null_code"),
        (~null_code & ~shaped).sum().alias(f"{reason}_malformed_code"),
        (shaped & (pl.col("visit_id").is_null() | pl.col("subject_id").is_null()))
        .sum()
        .alias(f"{reason}_missing_id"),
        (shaped & has_ids & ~admitted).sum().alias(f"{reason}_without_admission"),
        (shaped & has_ids & admitted & mismatch).sum().alias(f"{reason}_subject_mismatch"),
    )
    for name, n in counts.row(0, named=True).items():
        _count_drop(drops, name, n)
    return rows.filter(shaped & has_ids & admitted & ~mismatch).select(
        "visit_id", "seq", pl.col("norm").alias("code")
    )


def diagnosis_usage(dx: pl.DataFrame) -> pl.DataFrame:
    """``code, n``: how often each (normalised) code occurs in usable diagnosis rows."""
    return dx.group_by("code").agg(pl.len().alias("n")).drop_nulls("code")


def _map_codes(
    dx: pl.DataFrame, icd_map: IcdMap, drops: dict[str, int], usage: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, int]:
    """Diagnosis rows with every code translated by ``icd_map`` (each distinct code looked up once;
    the code counts of ``usage``, by default the rows' own, choose among a GEM's alternatives).

    Rows whose code the GEM does not map are dropped and counted; a combination entry turns one
    row into several codes, at the row's ``seq``. Returns the rows and the number of codes added.
    """
    own = diagnosis_usage(dx)
    targets = icd_map.targets(own["code"].cast(pl.Utf8), own if usage is None else usage).with_columns(
        pl.col("code").cast(dx.schema["code"])
    )
    dx = dx.join(targets, on="code", how="left", maintain_order="left")
    counts = dx.select(
        pl.col("targets").is_null().sum().alias("diagnosis_not_in_gem"),
        (pl.col("targets").list.len() == 0).sum().alias("diagnosis_no_gem_map"),
        (pl.col("targets").list.len().cast(pl.Int64) - 1).clip(lower_bound=0).sum().alias("added"),
    ).row(0, named=True)
    _count_drop(drops, "diagnosis_not_in_gem", counts["diagnosis_not_in_gem"])
    _count_drop(drops, "diagnosis_no_gem_map", counts["diagnosis_no_gem_map"])
    dx = (
        dx.filter(pl.col("targets").list.len() > 0)
        .select("visit_id", "seq", pl.col("targets").alias("code"))
        .explode("code")
        .with_columns(pl.col("code").cast(pl.Categorical))
    )
    return dx, int(counts["added"] or 0)


# Which input table each drop reason takes its rows from (the rest of each table is used).
# (the reader's own row prefixes, plus the builder's and MIMIC-IV reader's other reason names)
DROP_TABLE_PREFIXES = {
    "patients": (f"{ROW_PREFIX['patients']}_", "duplicate_patient"),
    "admissions": (f"{ROW_PREFIX['admissions']}_", "duplicate_admission"),
    "diagnoses": (
        f"{ROW_PREFIX['diagnoses']}_",
        "duplicate_code_in_visit",
        "icd9_",
        "icd10_",
        "icd_version_",
    ),
    "procedures": (f"{ROW_PREFIX['procedures']}_",),
    "medications": (f"{ROW_PREFIX['medications']}_",),
}


def codes_per_table(codes: pl.DataFrame) -> dict[str, int]:
    """Code occurrences per event table (``diagnoses``, ...) from a ``codes.parquet`` table."""
    tables = {kind: table for table, _, kind in EVENT_TABLES}
    totals = codes.group_by("type").agg(pl.col("count").sum()).rows()
    return {tables[kind]: int(n) for table, _, kind in EVENT_TABLES for k, n in totals if k == kind}


def row_accounting(meta: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per input table of a prepared cohort: ``input`` rows = ``used`` + ``dropped`` (by reason).

    Used rows are the cohort's patients, visits and (distinct per visit) codes of each event
    table (``counts.events``; all codes are diagnoses in cohorts written before other event
    types existed); codes an ICD map's combination entries added (``icd_map.codes_added``) are
    not input rows.
    """
    counts = meta["counts"]
    used = {
        "patients": sum(counts["patients"].values()),
        "admissions": sum(counts["visits"].values()),
        **dict(counts.get("events") or {"diagnoses": sum(counts["codes"].values())}),
    }
    used["diagnoses"] -= int((meta.get("icd_map") or {}).get("codes_added", 0))
    out = {}
    for table, prefixes in DROP_TABLE_PREFIXES.items():
        if table not in meta["input_rows"]:
            continue
        dropped = sum(n for reason, n in meta["drops"].items() if reason.startswith(prefixes))
        out[table] = {"input": int(meta["input_rows"][table]), "used": used.get(table, 0), "dropped": dropped}
    return out


def check_visit_ends(visits: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Null every visit end before its admission (the visit is kept, its stay unknown); count them.

    Returns the visits and ``{"known", "missing", "before_admission"}`` over the usable visits.
    """
    before = pl.col("end") < pl.col("time")
    counts = visits.select(
        pl.col("end").is_not_null().sum().alias("known"),
        pl.col("end").is_null().sum().alias("missing"),
        before.sum().alias("before_admission"),
    ).row(0, named=True)
    counts = {k: int(v or 0) for k, v in counts.items()}
    counts["known"] -= counts["before_admission"]
    counts["missing"] += counts["before_admission"]
    return visits.with_columns(pl.when(~before).then(pl.col("end")).alias("end")), counts


def group_patients(visits: pl.DataFrame, patients: pl.DataFrame) -> pl.DataFrame:
    """One row per patient in the cohort row schema, visits ordered by time (then visit id)."""
    age = pl.col("age").first()
    return (
        visits.sort("subject_id", "time", "visit_id")
        .group_by("subject_id", maintain_order=True)
        .agg(age, pl.struct("time", "end", "codes").alias("visits"))
        .join(patients, on="subject_id", how="inner", maintain_order="left")
        .select(
            pl.col("subject_id").cast(pl.Int64),
            pl.col("sex").cast(pl.Int8),
            pl.when(pl.col("age") > AGE_CLAMP_ABOVE)
            .then(AGE_CLAMP_TO)
            .otherwise(pl.col("age"))
            .cast(pl.Float32)
            .alias("age"),
            "visits",
        )
    )


def code_counts(patients: pl.DataFrame, split: np.ndarray) -> pl.DataFrame:
    """``code, count, train_count``: code occurrences (all splits, and the train split's)."""
    return (
        patients.select(pl.Series("is_train", split == 0), "visits")
        .explode("visits")
        .select("is_train", pl.col("visits").struct.field("codes").alias("code"))
        .explode("code")
        .group_by("code")
        .agg(
            pl.len().cast(pl.Int64).alias("count"),
            pl.col("is_train").sum().cast(pl.Int64).alias("train_count"),
        )
        .with_columns(pl.col("code").cast(pl.Utf8))
    )


def code_table(counts: list[pl.DataFrame], descriptions: pl.DataFrame | None) -> pl.DataFrame:
    """``codes.parquet`` from :func:`code_counts` of parts of a cohort: code, count (all splits),
    train_count, category, type, description; most frequent first."""
    codes = (
        pl.concat(counts)
        .group_by("code")
        .agg(pl.col("count").sum(), pl.col("train_count").sum())
        .with_columns(category_expr("code").alias("category"), event_type_expr("code").alias("type"))
    )
    if descriptions is not None:
        codes = codes.join(descriptions.unique("code", keep="first"), on="code", how="left")
    else:
        codes = codes.with_columns(pl.lit(None, pl.Utf8).alias("description"))
    return codes.sort(["count", "code"], descending=[True, False])


def cooccurrence_matrix(patients: pl.DataFrame, codes: list[str]) -> sp.csr_matrix:
    """Symmetric visit-level code x code counts (zero diagonal), indexed like ``codes``."""
    occ = (
        patients.select("visits")
        .explode("visits")
        .with_row_index("visit")
        .select("visit", pl.col("visits").struct.field("codes").alias("code"))
        .explode("code")
    )
    index = pl.DataFrame({"code": codes, "idx": np.arange(len(codes), dtype=np.int32)})
    occ = occ.join(index.cast({"code": occ.schema["code"]}), on="code", how="inner")
    n_visits = int(occ["visit"].max()) + 1 if occ.height else 0
    incidence = sp.csr_matrix(
        (np.ones(occ.height, dtype=np.float32), (occ["visit"].to_numpy(), occ["idx"].to_numpy())),
        shape=(n_visits, len(codes)),
    )
    counts = (incidence.T @ incidence).tocsr()
    counts.setdiag(0)
    counts.eliminate_zeros()
    return counts.astype(np.int32)


def load_cooccurrence(cohort_path: Path) -> sp.csr_matrix:
    """The train-split co-occurrence matrix of a cohort (rows/cols follow codes.parquet order)."""
    return sp.load_npz(Path(cohort_path) / "metadata" / COOCCURRENCE_FILE).tocsr()


def layout_metadata(
    shard_size: int, row_group_size: int, rows_per_file: dict[str, list[int]], cooc: sp.spmatrix
) -> dict[str, Any]:
    """The ``shards``, ``age`` and ``cooccurrence`` sections of cohort.json (real or synthetic)."""
    return {
        "shards": {
            "patients_per_file": shard_size,
            "row_group_size": row_group_size,
            "rows_per_file": rows_per_file,
        },
        "age": {"unit": "years at first visit", "clamp_above": AGE_CLAMP_ABOVE, "clamped_to": AGE_CLAMP_TO},
        "cooccurrence": {
            "file": f"metadata/{COOCCURRENCE_FILE}",
            "split": "train",
            "level": "visit",
            "nnz": int(cooc.nnz),
        },
    }


class _ShardWriter:
    """Patients of one split, appended in subject order, written as full ``shard_size`` part files
    (the last one partial): the same files whether the cohort arrives in one part or many."""

    def __init__(self, split_dir: Path, shard_size: int, row_group_size: int):
        self.split_dir, self.shard_size, self.row_group_size = split_dir, shard_size, row_group_size
        self.buffer: list[pl.DataFrame] = []
        self.buffered = 0
        self.rows_per_file: list[int] = []

    def add(self, patients: pl.DataFrame) -> None:
        self.buffer.append(patients)
        self.buffered += patients.height
        if self.buffered >= self.shard_size:
            self._write(final=False)

    def close(self) -> list[int]:
        if self.buffered or not self.rows_per_file:  # an empty split still gets one empty file
            self._write(final=True)
        return self.rows_per_file

    def _write(self, final: bool) -> None:
        frame = pl.concat(self.buffer) if self.buffer else pl.DataFrame(schema=POLARS_SCHEMA)
        n = frame.height if final else frame.height - frame.height % self.shard_size
        self.rows_per_file += write_patient_shards(
            frame.head(n), self.split_dir, self.shard_size, self.row_group_size, len(self.rows_per_file)
        )
        rest = frame.slice(n)
        self.buffer, self.buffered = [rest], rest.height


class _Cooccurrence:
    """Train-split visit co-occurrence summed over parts, re-indexed by the final code order.

    Each part's product runs in a background thread (scipy releases the GIL) while the caller
    writes shards and reads the next part; one part at a time, so memory holds at most two parts.
    """

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.total = sp.csr_matrix((0, 0), dtype=np.int32)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: Future[None] | None = None

    def add(self, train: pl.DataFrame, codes: pl.Series) -> None:
        """``train``: patients of the train split; ``codes``: every code their visits hold."""
        for code in codes.to_list():
            self.index.setdefault(code, len(self.index))
        self._wait()
        self._pending = self._pool.submit(self._add, train, list(self.index))

    def _add(self, train: pl.DataFrame, vocab: list[str]) -> None:
        part = cooccurrence_matrix(train, vocab)
        self.total.resize(part.shape)
        self.total = (self.total + part).tocsr()

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def result(self, codes: list[str]) -> sp.csr_matrix:
        self._wait()
        self._pool.shutdown()
        size = len(self.index)
        self.total.resize((size, size))
        order = np.array([self.index.get(c, -1) for c in codes], dtype=np.int64)
        if (order < 0).any():  # codes no train visit holds
            self.total.resize((size + 1, size + 1))
            order[order < 0] = size
        return self.total[order][:, order].tocsr().astype(np.int32).sorted_indices()


def build_cohort(
    tables: SourceTables,
    out_dir: Path,
    *,
    split_seed: int = 42,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    shard_size: int = 50_000,
    row_group_size: int = 1024,
    icd_map: IcdMap | None = None,
    extra_meta: dict[str, Any] | None = None,
    scratch: Path | None = None,
    rows_per_part: int | None = None,
) -> dict[str, Any]:
    """Write a complete cohort into ``out_dir`` (an empty temp directory); return cohort.json.

    With ``rows_per_part`` and a ``scratch`` folder, event tables larger than that many rows are
    spilled there and processed in parts of whole patients (``ehrgen.data.partition``); the cohort
    written is the same either way.
    """
    patients, visits, drops, input_rows = read_people(tables)
    frames = event_frames(tables)
    input_rows = {t: n for t, n in input_rows.items() if t in ("patients", "admissions", *frames)}
    with _parse_errors(tables):
        n_parts = 1
        if rows_per_part is not None and scratch is not None:
            uncounted = [t for t in frames if t not in input_rows]  # sources without raw line counts
            heights = pl.collect_all([frames[t].select(pl.len()) for t in uncounted], engine="streaming")
            input_rows |= {t: int(h.item()) for t, h in zip(uncounted, heights, strict=True)}
            n_parts = number_of_parts(sum(input_rows[t] for t in frames), rows_per_part)
        bounds = part_bounds(patients["subject_id"], n_parts)
        spilled = spill_events(frames, bounds, Path(scratch or "."))
    visits = visits.with_columns(pl.Series(PART_COLUMN, part_of(visits["subject_id"], bounds)))
    patients = patients.with_columns(pl.Series(PART_COLUMN, part_of(patients["subject_id"], bounds)))
    # a row may name another patient's admission, in another part
    every_visit = _visit_subject(visits) if n_parts > 1 else None
    if n_parts > 1:
        log.info(
            "%d event rows: processed in %d parts of whole patients",
            sum(input_rows[t] for t in frames),
            n_parts,
        )

    usage = None
    if icd_map is not None and n_parts > 1 and "diagnoses" in frames:
        # a GEM's alternatives are chosen by the whole cohort's usage, as in memory
        usage = pl.concat(
            [
                diagnosis_usage(_usable_events(dx, _named_admissions(dx, _visit_subject(visits.filter(pl.col(PART_COLUMN) == i)), every_visit),
                                               "diagnosis", TYPE_PATTERNS[DIAGNOSIS], {}))
                for i in range(n_parts)
                for dx in [spilled.load(i, frames, ("diagnoses",))["diagnoses"]]
            ]
        ).group_by("code").agg(pl.col("n").sum())  # fmt: skip

    writers = {name: _ShardWriter(out_dir / "data" / name, shard_size, row_group_size) for name in SPLITS}
    counts: dict[str, dict[str, int]] = {
        key: dict.fromkeys(SPLITS, 0) for key in ("patients", "visits", "codes")
    }
    visit_ends = {"known": 0, "missing": 0, "before_admission": 0}
    per_part_codes, cooc, added = [], _Cooccurrence(), 0
    for i in range(n_parts):
        with _parse_errors(tables):
            events = spilled.load(i, frames)
        if n_parts == 1:  # the tables' rows, where the source did not count its raw lines
            input_rows = {t: rows.height for t, rows in events.items()} | input_rows
        part_visits = visits.filter(pl.col(PART_COLUMN) == i).drop(PART_COLUMN)
        part_patients = patients.filter(pl.col(PART_COLUMN) == i).drop(PART_COLUMN)
        part_visits, part_patients, n_added = attach_codes(
            events, part_visits, part_patients, drops, icd_map, usage, every_visit
        )
        added += n_added
        part_visits, ends = check_visit_ends(part_visits)
        visit_ends = {k: visit_ends[k] + ends[k] for k in visit_ends}
        cohort = group_patients(part_visits, part_patients)
        del part_visits, events
        split = assign_splits(cohort["subject_id"].to_numpy(), split_seed, tuple(split_fractions))
        per_part_codes.append(code_counts(cohort, split))
        cooc.add(
            cohort.filter(pl.Series(split == 0)), per_part_codes[-1].filter(pl.col("train_count") > 0)["code"]
        )
        n_visits = cohort["visits"].list.len()
        n_codes = cohort["visits"].list.eval(pl.element().struct.field("codes").list.len()).list.sum()
        for s, name in enumerate(SPLITS):
            mask = pl.Series(split == s)
            writers[name].add(cohort.filter(mask))
            counts["patients"][name] += int(mask.sum())
            counts["visits"][name] += int(n_visits.filter(mask).sum())
            counts["codes"][name] += int(n_codes.filter(mask).sum())
    if sum(counts["patients"].values()) == 0:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(drops.items())) or "no input rows"
        raise InputError(f"{tables.name}: no patient with a usable diagnosis remains (dropped: {reasons})")
    if visit_ends["before_admission"]:
        log.warning(
            "%d visit(s) end before their admission: their end is unknown", visit_ends["before_admission"]
        )

    descriptions = _collect(tables.descriptions) if tables.descriptions is not None else None
    codes = code_table(per_part_codes, descriptions)
    (out_dir / "metadata").mkdir(parents=True, exist_ok=True)
    codes.write_parquet(out_dir / "metadata" / "codes.parquet")
    files = {name: writer.close() for name, writer in writers.items()}  # the last product runs meanwhile
    counts["events"] = codes_per_table(codes)
    cooc_matrix = cooc.result(codes["code"].to_list())
    sp.save_npz(out_dir / "metadata" / COOCCURRENCE_FILE, cooc_matrix, compressed=False)

    meta = cohort_metadata(
        tables.name,
        counts=counts,
        n_unique_codes=codes.height,
        input_rows=input_rows,
        drops=dict(sorted(drops.items())),
        split={
            "seed": split_seed,
            "fractions": list(split_fractions),
            "method": "splitmix64(subject_id, seed)",
        },
        **layout_metadata(shard_size, row_group_size, files, cooc_matrix),
        info=tables.info,
        visit_ends=visit_ends,
        **({"icd_map": icd_map.describe() | {"codes_added": added}} if icd_map is not None else {}),
        **(extra_meta or {}),
    )
    write_json_atomic(out_dir / "metadata" / "cohort.json", meta)
    for reason, n in sorted(drops.items()):
        log.info("dropped %d %s", n, reason.replace("_", " "))
    return meta


def _visit_subject(visits: pl.DataFrame) -> pl.DataFrame:
    """``visit_id, visit_subject``: the admissions event rows are checked against."""
    return visits.select("visit_id", pl.col("subject_id").alias("visit_subject"))


def token_cooccurrence(cohort_path: Path, tokenizer: Any) -> sp.csr_matrix:
    """Train-split co-occurrence in the tokenizer's content order (codes, or categories).

    Row/column ``i`` is token ``tokenizer.content_range[0] + i``. Code level re-indexes the
    cohort's cached matrix (codes outside the vocabulary drop out); category level counts visits
    holding both categories, from the train split.
    """
    from ehrgen.data.cohort import Cohort

    cohort = Cohort(cohort_path)
    lo, hi = tokenizer.content_range
    tokens = [tokenizer.id_to_token(i) for i in range(lo, hi)]
    if tokenizer.level == "code":
        cohort_codes = cohort.codes()["code"].to_list()
        position = {code: i for i, code in enumerate(tokens)}
        src = np.array([i for i, c in enumerate(cohort_codes) if c in position], dtype=np.int64)
        dst = np.array([position[cohort_codes[i]] for i in src], dtype=np.int64)
        project = sp.csr_matrix(
            (np.ones(len(src), dtype=np.int32), (src, dst)), shape=(len(cohort_codes), len(tokens))
        )
        return (project.T @ load_cooccurrence(cohort.path) @ project).tocsr()
    train = cohort.read("train").select(
        pl.col("visits").list.eval(
            pl.struct(
                pl.element().struct.field("time"),
                pl.element().struct.field("codes").list.eval(category_expr(pl.element())).list.unique(),
            )
        )
    )
    return cooccurrence_matrix(train, tokens)
