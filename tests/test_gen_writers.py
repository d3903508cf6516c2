"""Synthetic cohort writer (format, ids, streaming, atomicity) and the MIMIC-III / MEDS exporters,
checked by reading their output back through ehrgen's own readers."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from ehrgen.data.build import cooccurrence_matrix, load_cooccurrence
from ehrgen.data.codes import event_type
from ehrgen.data.cohort import PATIENT_SCHEMA, SPLITS, Cohort
from ehrgen.errors import InputError
from ehrgen.prepare import run as prepare
from ehrgen.sampling.exporters import (
    FIRST_ADMISSION_WINDOW,
    HADM_ID_START,
    MEDS_CODES_SCHEMA,
    MEDS_DATA_SCHEMA,
    write_meds,
    write_mimic3_csv,
    write_mimic4_csv,
)
from ehrgen.sampling.writers import SyntheticCohortWriter, synthetic_id_offset
from tests.conftest import compose_config

VOCAB = ["4019", "25000", "V5861", "E8497", "41401", "4280", "5849", "2724", "V053", "99591", "E9342"]
TITLES = {"4019": "Unspecified essential hypertension", "4280": "Congestive heart failure, unspecified"}
VISIT = pl.List(pl.List(pl.Utf8))
YEAR_S = 365.25 * 86400


def random_batch(rng: np.random.Generator, n: int, messy: bool = False) -> pl.DataFrame:
    """``n`` generated-looking patients (no times); ``messy`` adds repeats, empty visits, no visits."""
    visits = []
    for _ in range(n):
        k = int(rng.integers(0 if messy else 1, 5))
        patient = []
        for _ in range(k):
            codes = list(rng.choice(VOCAB, size=int(rng.integers(0 if messy else 1, 5)), replace=messy))
            patient.append(codes)
        visits.append(patient)
    return pl.DataFrame(
        {"sex": rng.integers(0, 2, n), "age": rng.uniform(0, 95, n), "visits": visits},
        schema={"sex": pl.Int64, "age": pl.Float64, "visits": VISIT},
    )


def expected_rows(batch: pl.DataFrame, first_id: int) -> dict[int, tuple[int, float, list[list[str]]]]:
    """What the writer should keep of a batch, by the rules prepare applies (plain Python)."""
    out = {}
    for i, row in enumerate(batch.iter_rows(named=True)):
        visits = [list(dict.fromkeys(c for c in v if c is not None)) for v in row["visits"]]
        visits = [v for v in visits if v]
        if visits:
            age = 90.0 if row["age"] > 89 else row["age"]
            out[first_id + i] = (row["sex"], age, visits)
    return out


def cohort_rows(path: Path) -> dict[int, tuple[int, float, list[list[str]], list[datetime | None]]]:
    frame = Cohort(path).read()
    return {
        r["subject_id"]: (
            r["sex"],
            r["age"],
            [v["codes"] for v in r["visits"]],
            [v["time"] for v in r["visits"]],
        )
        for r in frame.iter_rows(named=True)
    }


def write_synthetic(out: Path, batches: list[pl.DataFrame], **kwargs) -> SyntheticCohortWriter:
    kwargs = {"id_offset": 1000, "shard_size": 40, "descriptions": TITLES, **kwargs}
    with SyntheticCohortWriter(out, **kwargs) as writer:
        for batch in batches:
            writer.add(batch)
    return writer


@pytest.fixture(scope="module")
def synthetic_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(3)
    out = tmp_path_factory.mktemp("syn") / "cohort"
    write_synthetic(out, [random_batch(rng, 60) for _ in range(3)], generation={"seed": 3})
    return out


# ICD-10-CM codes beside the ICD-9 ones; ICD10CM:E871 (hypo-osmolality) shares its string with the
# ICD-9 category E871 (a misadventure): the exports must keep the two apart.
# procedures and medications of each system beside them
MIXED_VOCAB = [
    *VOCAB, "ICD10CM:E119", "ICD10CM:I10", "ICD10CM:E871", "ICD10CM:S72001A", "E8710",
    "ICD9PCS:3893", "ICD9PCS:966", "ICD10PCS:02HV33Z", "RX:heparin", "RX:potassium chloride", "RX:d5w",
]  # fmt: skip
ICD9_TYPED_VOCAB = [c for c in MIXED_VOCAB if not c.startswith(("ICD10CM:", "ICD10PCS:"))]
MIXED_TITLES = {
    **TITLES,
    "ICD10CM:I10": "Essential (primary) hypertension",
    "ICD9PCS:3893": "Venous catheterization, not elsewhere classified",
    "ICD10PCS:02HV33Z": "Insertion of infusion device into superior vena cava",
}


def vocabulary_cohort(root: Path, vocab: list[str], seed: int) -> Path:
    """100 generated-looking patients over ``vocab`` (codes of every type in any order)."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(2):
        batch = random_batch(rng, 50)
        visits = [
            [list(rng.choice(vocab, size=len(v) + 2, replace=False)) for v in p] for p in batch["visits"]
        ]
        batches.append(batch.with_columns(pl.Series("visits", visits, dtype=VISIT)))
    write_synthetic(root / "cohort", batches, descriptions=MIXED_TITLES)
    return root / "cohort"


@pytest.fixture(scope="module")
def mixed_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return vocabulary_cohort(tmp_path_factory.mktemp("mixed"), MIXED_VOCAB, 5)


def test_writer_orders_each_visit_by_event_type(mixed_cohort: Path) -> None:
    rank = {"diagnosis": 0, "procedure": 1, "medication": 2}
    visits = [v["codes"] for p in Cohort(mixed_cohort).read()["visits"].to_list() for v in p]
    assert all([rank[event_type(c)] for c in v] == sorted(rank[event_type(c)] for c in v) for v in visits)
    assert sum(any(event_type(c) == "medication" for c in v) for v in visits) > 20
    counts = Cohort(mixed_cohort).meta["counts"]
    assert sum(counts["events"].values()) == counts["codes"]["train"]
    assert set(counts["events"]) == {"diagnoses", "procedures", "medications"}


def test_mimic3_export_of_procedures_and_prescriptions(tmp_path: Path) -> None:
    cohort = vocabulary_cohort(tmp_path, ICD9_TYPED_VOCAB, 6)
    raw = write_mimic3_csv(cohort, tmp_path / "mimic3", seed=7)
    procedures = pl.read_csv(raw / "PROCEDURES_ICD.csv", schema_overrides={"ICD9_CODE": pl.Utf8})
    assert set(procedures["ICD9_CODE"]) == {"3893", "966"}
    rx = pl.read_csv(raw / "PRESCRIPTIONS.csv")
    assert rx.columns[:8] == [
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "STARTDATE",
        "ENDDATE",
        "DRUG_TYPE",
        "DRUG",
    ]
    assert set(rx["DRUG"]) == {"heparin", "potassium chloride", "d5w"}
    titles = pl.read_csv(raw / "D_ICD_PROCEDURES.csv", schema_overrides={"ICD9_CODE": pl.Utf8})
    assert titles["ICD9_CODE"].to_list() == ["3893"]
    back = prepare_from("mimic3", raw, tmp_path / "back")
    assert Cohort(back).meta["drops"] == {}
    assert {s: v[2] for s, v in cohort_rows(back).items()} == {
        s: v[2] for s, v in cohort_rows(cohort).items()
    }
    codes = Cohort(back).codes()
    assert (
        dict(zip(codes["code"], codes["description"], strict=True))["ICD9PCS:3893"]
        == MIXED_TITLES["ICD9PCS:3893"]
    )


def prepare_from(data: str, raw: Path, out: Path) -> Path:
    cfg = compose_config(
        "prepare", [f"data={data}", f"data.raw_dir={raw}", f"data.cohort_dir={out}"], out.parent
    )
    return prepare(cfg)


# ----------------------------------------------------------------------------- ids


def test_synthetic_id_offset() -> None:
    assert synthetic_id_offset(99_999) == 100_000
    assert synthetic_id_offset(10_006) == 100_000
    assert synthetic_id_offset(100_000) == 1_000_000
    assert synthetic_id_offset(0) == 10
    with pytest.raises(InputError, match="max_real_id"):
        synthetic_id_offset(-1)


# ----------------------------------------------------------------------------- synthetic cohort


def test_writer_content_counts_and_drops(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, n, messy=True) for n in (25, 50, 33)]
    batches[1] = batches[1].with_columns(
        pl.col("visits").list.eval(pl.element().list.concat(pl.lit([None], VISIT.inner)))
    )
    out = tmp_path / "syn"
    writer = SyntheticCohortWriter(out, id_offset=5000, first_index=200, shard_size=20, descriptions=TITLES)
    with writer:
        ids = [writer.add(batches[0]), writer.add(batches[1].to_arrow()), writer.add(batches[2])]
        writer.generation["elapsed_s"] = 1.5

    # ids: offset + shard base + running index over every generated patient, dropped ones included
    assert np.concatenate(ids).tolist() == list(range(5200, 5200 + 108))
    expected: dict = {}
    start = 5200
    for batch in batches:
        expected |= expected_rows(batch, start)
        start += batch.height
    got = cohort_rows(out)
    assert got.keys() == expected.keys()
    for sid, (sex, age, visits) in expected.items():
        assert got[sid][0] == sex and got[sid][2] == visits
        assert got[sid][1] == pytest.approx(age, abs=1e-4)
        assert got[sid][3] == [None] * len(visits)

    cohort = Cohort(out)
    meta = cohort.meta
    n_visits = sum(len(v[2]) for v in expected.values())
    n_codes = sum(len(c) for v in expected.values() for c in v[2])
    assert meta["source"] == "synthetic" and meta["complete"] is True
    assert meta["counts"] == {
        "patients": {"train": len(expected), "val": 0, "test": 0},
        "visits": {"train": n_visits, "val": 0, "test": 0},
        "codes": {"train": n_codes, "val": 0, "test": 0},
        "events": {"diagnoses": n_codes},
    }
    raw_visits = [v for b in batches for p in b["visits"].to_list() for v in p]
    n_null = sum(c is None for v in raw_visits for c in v)
    n_raw = sum(len(v) for v in raw_visits)
    assert meta["drops"]["diagnosis_null_code"] == n_null == batches[1]["visits"].list.len().sum()
    assert meta["drops"]["duplicate_code_in_visit"] == n_raw - n_null - n_codes
    assert meta["drops"]["admission_without_codes"] == len(raw_visits) - n_visits
    assert meta["drops"]["patient_without_admissions"] == 108 - len(expected)
    assert meta["generation"] == {"elapsed_s": 1.5}
    assert meta["subject_ids"]["id_offset"] == 5000 and meta["subject_ids"]["first_index"] == 200

    # part files of shard_size patients; a patient never spans two
    sizes = cohort.row_counts("train")
    assert sizes == [20] * (len(expected) // 20) + ([len(expected) % 20] if len(expected) % 20 else [])
    assert meta["shards"]["rows_per_file"]["train"] == sizes
    assert [f.name for f in cohort.files("train")] == [f"part-{i:05d}.parquet" for i in range(len(sizes))]

    codes = cohort.codes()
    counted = Counter(c for v in expected.values() for visit in v[2] for c in visit)
    assert dict(zip(codes["code"], codes["count"], strict=True)) == dict(counted)
    assert codes["train_count"].to_list() == codes["count"].to_list()
    assert codes["count"].to_list() == sorted(codes["count"].to_list(), reverse=True)
    assert dict(zip(codes["code"], codes["category"], strict=True))["E8497"] == "E849"
    assert dict(zip(codes["code"], codes["description"], strict=True))["4019"] == TITLES["4019"]

    brute = cooccurrence_matrix(cohort.read("train"), codes["code"].to_list())
    streamed = load_cooccurrence(out)
    assert streamed.dtype == np.int32 and (streamed != brute).nnz == 0 and streamed.nnz > 0
    assert meta["cooccurrence"]["nnz"] == streamed.nnz


def test_writer_format_matches_prepare(synthetic_cohort: Path, demo_cohort: Path) -> None:
    real, syn = Cohort(demo_cohort), Cohort(synthetic_cohort)
    assert pq.read_schema(syn.files("train")[0]).equals(pq.read_schema(real.files("train")[0]))
    assert pq.read_schema(syn.files("train")[0]).equals(PATIENT_SCHEMA)
    assert syn.codes().schema == real.codes().schema
    assert sorted(p.name for p in (syn.path / "metadata").iterdir()) == sorted(
        p.name for p in (real.path / "metadata").iterdir()
    )
    shared_keys = set(real.meta) - {"info", "options", "input_rows"}
    assert shared_keys <= set(syn.meta)
    for key in ("counts", "shards", "age", "cooccurrence", "split"):
        assert set(real.meta[key]) <= set(syn.meta[key]), key
    # empty splits hold one empty part file, as prepare writes them
    assert syn.row_counts("val") == [0] and syn.row_counts("test") == [0]
    assert syn.splits() == ["train"]


def test_writer_other_split_and_table_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    batch = random_batch(rng, 10)
    write_synthetic(tmp_path / "syn", [batch.to_arrow()], split="test", descriptions=None)
    cohort = Cohort(tmp_path / "syn")
    assert cohort.splits() == ["test"] and cohort.n_patients == 10
    assert cohort.codes()["train_count"].sum() == 0
    assert cohort.codes()["description"].null_count() == cohort.codes().height
    assert load_cooccurrence(tmp_path / "syn").nnz == 0  # the train-split matrix, as in prepare
    with pytest.raises(InputError, match="unknown split"):
        SyntheticCohortWriter(tmp_path / "x", id_offset=0, split="tuning")


def test_writer_streams_part_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    with SyntheticCohortWriter(tmp_path / "syn", id_offset=0, shard_size=10) as writer:
        for _ in range(5):
            writer.add(random_batch(rng, 7))
            # only less than one part file's worth of patients is ever held
            assert writer._buffered < 10
        temps = list(tmp_path.glob(".syn.tmp-*"))
        assert len(temps) == 1 and len(list((temps[0] / "data" / "train").glob("part-*"))) == 3
        assert not (tmp_path / "syn").exists()
    assert Cohort(tmp_path / "syn").row_counts("train") == [10, 10, 10, 5]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_writer_is_atomic(tmp_path: Path, error: type[BaseException]) -> None:
    rng = np.random.default_rng(4)
    with pytest.raises(error), SyntheticCohortWriter(tmp_path / "syn", id_offset=0, shard_size=5) as writer:
        writer.add(random_batch(rng, 12))
        raise error("stop")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_existing_and_empty(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    out = tmp_path / "syn"
    write_synthetic(out, [random_batch(rng, 5)])
    with pytest.raises(InputError, match="already exists"):
        write_synthetic(out, [random_batch(rng, 5)])
    write_synthetic(out, [random_batch(rng, 7)], overwrite=True)
    assert Cohort(out).n_patients == 7

    empty = pl.DataFrame(
        {"sex": [0], "age": [50.0], "visits": [[[]]]},
        schema={"sex": pl.Int8, "age": pl.Float32, "visits": VISIT},
    )
    with pytest.raises(InputError, match="no patient to write"):
        write_synthetic(tmp_path / "empty", [empty])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_writer_rejects_bad_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    good = random_batch(rng, 4)
    cases = [
        (good.drop("age"), r"batch 1: missing column\(s\) age"),
        (good.with_columns(pl.Series("sex", [0, 1, 2, 0])), r"batch 1 row 2: sex 2"),
        (good.with_columns(pl.Series("age", [1.0, None, 3.0, 4.0])), r"batch 1 row 1: age None"),
        (good.with_columns(pl.Series("age", [1.0, 2.0, -3.0, 4.0])), r"batch 1 row 2: age -3"),
    ]
    for batch, message in cases:
        with (
            pytest.raises(InputError, match=message),
            SyntheticCohortWriter(tmp_path / "syn", id_offset=0) as w,
        ):
            w.add(batch)
        assert not (tmp_path / "syn").exists()


# ----------------------------------------------------------------------------- MIMIC-III


def test_mimic3_export_reads_back_into_same_cohort(synthetic_cohort: Path, tmp_path: Path) -> None:
    raw = write_mimic3_csv(synthetic_cohort, tmp_path / "mimic3", seed=7)
    headers = {p.name: p.read_text().splitlines()[0] for p in raw.glob("*.csv")}
    assert headers["PATIENTS.csv"] == "ROW_ID,SUBJECT_ID,GENDER,DOB,DOD,DOD_HOSP,DOD_SSN,EXPIRE_FLAG"
    assert headers["DIAGNOSES_ICD.csv"] == "ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE"
    assert headers["ADMISSIONS.csv"].startswith("ROW_ID,SUBJECT_ID,HADM_ID,ADMITTIME,DISCHTIME,")

    back = prepare_from("mimic3", raw, tmp_path / "back")
    assert Cohort(back).meta["drops"] == {}
    want, got = cohort_rows(synthetic_cohort), cohort_rows(back)
    assert got.keys() == want.keys()
    for sid, (sex, age, visits, _) in want.items():
        assert got[sid][0] == sex and got[sid][2] == visits
        assert got[sid][1] == pytest.approx(age, abs=1e-4)
        times = got[sid][3]
        assert FIRST_ADMISSION_WINDOW[0] <= times[0] < FIRST_ADMISSION_WINDOW[1]
        assert all(a < b for a, b in zip(times, times[1:], strict=False))
    codes = Cohort(back).codes()
    assert dict(zip(codes["code"], codes["description"], strict=True))["4280"] == TITLES["4280"]

    adm = pl.read_csv(raw / "ADMISSIONS.csv", try_parse_dates=True)
    assert adm["HADM_ID"].to_list() == list(range(HADM_ID_START, HADM_ID_START + adm.height))
    assert (adm["DISCHTIME"] > adm["ADMITTIME"]).all()
    # next admission after the previous discharge
    gaps = (
        adm.sort("SUBJECT_ID", "ADMITTIME")
        .select(
            (pl.col("ADMITTIME") - pl.col("DISCHTIME").shift(1))
            .over("SUBJECT_ID")
            .dt.total_days()
            .alias("gap")
        )["gap"]
        .drop_nulls()
    )
    assert (gaps >= 1).all() and gaps.median() > 14

    # seeded: same seed, same files; another seed, other dates
    again = write_mimic3_csv(synthetic_cohort, tmp_path / "again", seed=7)
    other = write_mimic3_csv(synthetic_cohort, tmp_path / "other", seed=8)
    assert (again / "ADMISSIONS.csv").read_bytes() == (raw / "ADMISSIONS.csv").read_bytes()
    assert (other / "ADMISSIONS.csv").read_bytes() != (raw / "ADMISSIONS.csv").read_bytes()
    assert (other / "DIAGNOSES_ICD.csv").read_bytes() == (raw / "DIAGNOSES_ICD.csv").read_bytes()
    with pytest.raises(InputError, match="already exists"):
        write_mimic3_csv(synthetic_cohort, raw, seed=7)


def test_mimic3_export_of_real_demo_keeps_times(demo_cohort: Path, tmp_path: Path) -> None:
    raw = write_mimic3_csv(demo_cohort, tmp_path / "mimic3", seed=0, compress=True)
    assert (raw / "DIAGNOSES_ICD.csv.gz").is_file()
    back = prepare_from("mimic3", raw, tmp_path / "back")
    assert Cohort(back).read().equals(Cohort(demo_cohort).read())
    assert Cohort(back).codes().sort("code").equals(Cohort(demo_cohort).codes().sort("code"))


def test_mimic3_export_refuses_icd10(mixed_cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=r"ICD-10 code\(s\) \(e\.g\. ICD10(CM|PCS):.*hold ICD-9 only.*mimic4"
    ):
        write_mimic3_csv(mixed_cohort, tmp_path / "mimic3", seed=7)
    assert not (tmp_path / "mimic3").exists()


def test_mimic4_export_reads_back_into_same_cohort(mixed_cohort: Path, tmp_path: Path) -> None:
    raw = write_mimic4_csv(mixed_cohort, tmp_path / "mimic4", seed=7)
    hosp = raw / "hosp"
    headers = {p.name: p.read_text().splitlines()[0] for p in hosp.glob("*.csv")}
    assert headers["patients.csv"] == "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod"
    assert headers["diagnoses_icd.csv"] == "subject_id,hadm_id,seq_num,icd_code,icd_version"
    assert headers["admissions.csv"].startswith("subject_id,hadm_id,admittime,dischtime,deathtime,")
    assert headers["d_icd_diagnoses.csv"] == "icd_code,icd_version,long_title"
    dx = pl.read_csv(hosp / "diagnoses_icd.csv", schema_overrides={"icd_code": pl.Utf8})
    # ICD-10 rows are unmarked codes with icd_version 10, as MIMIC-IV stores them
    versions = dict(zip(dx["icd_code"], dx["icd_version"], strict=False))
    assert versions["E119"] == 10 and versions["4019"] == 9 and versions["E8710"] == 9
    px = pl.read_csv(hosp / "procedures_icd.csv", schema_overrides={"icd_code": pl.Utf8})
    assert set(px.select("icd_code", "icd_version").unique().rows()) == {
        ("3893", 9),
        ("966", 9),
        ("02HV33Z", 10),
    }
    assert set(pl.read_csv(hosp / "prescriptions.csv")["drug"]) == {"heparin", "potassium chloride", "d5w"}
    assert {v for c, v in dx.select("icd_code", "icd_version").unique().rows() if c == "E871"} <= {10}

    back = prepare_from("mimic4", raw, tmp_path / "back")
    assert Cohort(back).meta["drops"] == {}
    want, got = cohort_rows(mixed_cohort), cohort_rows(back)
    assert got.keys() == want.keys()
    for sid, (sex, age, visits, _) in want.items():
        assert got[sid][0] == sex and got[sid][2] == visits
        assert got[sid][1] == (90.0 if age > 89 else float(np.floor(age)))  # MIMIC-IV: whole years
    # same seed: the same dates as the MEDS export
    via_meds = cohort_rows(
        prepare_from("meds", write_meds(mixed_cohort, tmp_path / "meds", 7), tmp_path / "bm")
    )
    assert all(got[sid][3] == via_meds[sid][3] for sid in want)
    codes = Cohort(back).codes()
    titles = dict(zip(codes["code"], codes["description"], strict=True))
    assert titles["ICD10CM:I10"] == MIXED_TITLES["ICD10CM:I10"] and titles["4280"] == TITLES["4280"]
    assert codes.filter(pl.col("code") == "ICD10CM:E871")["category"].item() == "ICD10CM:E87"


def test_mimic4_export_of_real_demo(demo_cohort: Path, tmp_path: Path) -> None:
    raw = write_mimic4_csv(demo_cohort, tmp_path / "mimic4", seed=0, compress=True)
    assert (raw / "hosp" / "diagnoses_icd.csv.gz").is_file()
    back = Cohort(prepare_from("mimic4", raw, tmp_path / "back")).read()
    real = Cohort(demo_cohort).read()
    assert back.drop("age").equals(real.drop("age"))
    ages = real["age"].to_numpy()
    np.testing.assert_array_equal(back["age"].to_numpy(), np.where(ages > 89, 90, np.floor(ages)))


# ----------------------------------------------------------------------------- MEDS


def test_meds_export_follows_published_schema(synthetic_cohort: Path, tmp_path: Path) -> None:
    root = write_meds(synthetic_cohort, tmp_path / "meds", seed=7)
    files = sorted((root / "data").glob("*.parquet"))
    assert files
    seen: set[int] = set()
    for path in files:
        table = pq.read_table(path)
        assert table.schema.equals(MEDS_DATA_SCHEMA)
        frame = pl.from_arrow(table)
        subjects = set(frame["subject_id"].unique())
        assert not subjects & seen  # a subject lives in one file
        seen |= subjects
        assert frame["numeric_value"].null_count() == frame.height
        # sorted by subject, then time with static (null-time) events first
        key = frame.select("subject_id", pl.col("time").is_not_null().alias("timed"), "time")
        assert key.equals(key.sort("subject_id", "timed", "time"))
        statics = frame.filter(pl.col("time").is_null())
        assert statics["code"].is_in(["GENDER//M", "GENDER//F"]).all() and statics.height == len(subjects)
        assert frame.filter(pl.col("code") == "MEDS_BIRTH").height == len(subjects)
    assert seen == set(Cohort(synthetic_cohort).read()["subject_id"])

    codes = pq.read_table(root / "metadata" / "codes.parquet")
    assert codes.schema.equals(MEDS_CODES_SCHEMA)
    data_codes = set(pl.concat([pl.read_parquet(f) for f in files])["code"])
    assert data_codes <= set(codes.column("code").to_pylist())
    rows = {r["code"]: r for r in codes.to_pylist()}
    assert rows["DIAGNOSIS//ICD//9//4019"]["parent_codes"] == ["ICD9CM/401.9"]
    assert rows["DIAGNOSIS//ICD//9//4019"]["description"] == TITLES["4019"]
    splits = pl.read_parquet(root / "metadata" / "subject_splits.parquet")
    assert set(splits["split"]) == {"train"} and set(splits["subject_id"]) == seen
    dataset = json.loads((root / "metadata" / "dataset.json").read_text())
    assert dataset["etl_name"] == "ehrgen" and dataset["meds_version"]


def test_meds_export_validates_with_meds_package(synthetic_cohort: Path, tmp_path: Path) -> None:
    meds = pytest.importorskip("meds", reason="PyPI package `meds` (the published MEDS schema) not installed")
    root = write_meds(synthetic_cohort, tmp_path / "meds", seed=7)
    for path in sorted((root / meds.data_subdirectory).glob("*.parquet")):
        meds.DataSchema.validate(pq.read_table(path))
    meds.CodeMetadataSchema.validate(pq.read_table(root / meds.code_metadata_filepath))
    meds.SubjectSplitSchema.validate(pq.read_table(root / meds.subject_splits_filepath))
    meds.DatasetMetadataSchema.validate(json.loads((root / meds.dataset_metadata_filepath).read_text()))
    # our own constants mirror the package's required columns
    from ehrgen.sampling.exporters import MEDS_VERSION

    for field in meds.DataSchema.schema():
        if field.name in MEDS_DATA_SCHEMA.names:
            assert MEDS_DATA_SCHEMA.field(field.name).type == field.type
    assert meds.__version__ == MEDS_VERSION


def test_meds_export_reads_back_into_same_cohort(synthetic_cohort: Path, tmp_path: Path) -> None:
    root = write_meds(synthetic_cohort, tmp_path / "meds", seed=7)
    back = prepare_from("meds", root, tmp_path / "back")
    assert Cohort(back).meta["drops"] == {}
    want, got = cohort_rows(synthetic_cohort), cohort_rows(back)
    assert got.keys() == want.keys()
    for sid, (sex, age, visits, _) in want.items():
        assert got[sid][0] == sex and got[sid][2] == visits
        assert got[sid][1] == pytest.approx(age, abs=1e-4)
    # same seed: the same dates as the MIMIC-III export
    via_mimic = cohort_rows(
        prepare_from("mimic3", write_mimic3_csv(synthetic_cohort, tmp_path / "m3", 7), tmp_path / "b3")
    )
    assert all(got[sid][3] == via_mimic[sid][3] for sid in want)
    codes = Cohort(back).codes()
    assert dict(zip(codes["code"], codes["description"], strict=True))["4019"] == TITLES["4019"]


def test_meds_export_keeps_icd10_apart(mixed_cohort: Path, tmp_path: Path) -> None:
    root = write_meds(mixed_cohort, tmp_path / "meds", seed=7)
    rows = {r["code"]: r for r in pq.read_table(root / "metadata" / "codes.parquet").to_pylist()}
    assert rows["DIAGNOSIS//ICD//10//E119"]["parent_codes"] == ["ICD10CM/E11.9"]
    assert rows["DIAGNOSIS//ICD//10//E871"]["parent_codes"] == ["ICD10CM/E87.1"]
    assert rows["DIAGNOSIS//ICD//9//E8710"]["parent_codes"] == ["ICD9CM/E871.0"]
    assert rows["PROCEDURE//ICD//9//3893"]["parent_codes"] == ["ICD9Proc/38.93"]
    assert rows["PROCEDURE//ICD//10//02HV33Z"]["parent_codes"] == ["ICD10PCS/02HV33Z"]
    assert rows["MEDICATION//potassium chloride"]["parent_codes"] is None
    assert rows["DIAGNOSIS//ICD//10//I10"]["description"] == MIXED_TITLES["ICD10CM:I10"]
    back = prepare_from("meds", root, tmp_path / "back")
    want, got = cohort_rows(mixed_cohort), cohort_rows(back)
    assert {sid: v[2] for sid, v in got.items()} == {sid: v[2] for sid, v in want.items()}


def test_meds_export_of_real_demo(demo_cohort: Path, tmp_path: Path) -> None:
    root = write_meds(demo_cohort, tmp_path / "meds", seed=0)
    splits = pl.read_parquet(root / "metadata" / "subject_splits.parquet")
    real = Cohort(demo_cohort).read()
    names = {"train": "train", "val": "tuning", "test": "held_out"}
    want = dict(zip(real["subject_id"], real["split"].replace_strict(names), strict=True))
    assert dict(zip(splits["subject_id"], splits["split"], strict=True)) == want
    assert set(names) == set(SPLITS)
    back = prepare_from("meds", root, tmp_path / "back")
    assert Cohort(back).read().equals(real)


def test_exports_write_each_event_table_once_and_only_when_present(
    synthetic_cohort: Path, tmp_path: Path
) -> None:
    # a diagnosis-only cohort: no procedure or prescription tables at all
    m3 = write_mimic3_csv(synthetic_cohort, tmp_path / "m3", seed=1)
    m4 = write_mimic4_csv(synthetic_cohort, tmp_path / "m4", seed=1)
    assert not (m3 / "PROCEDURES_ICD.csv").exists() and not (m3 / "PRESCRIPTIONS.csv").exists()
    assert sorted(p.name for p in (m4 / "hosp").iterdir()) == [
        "admissions.csv",
        "d_icd_diagnoses.csv",
        "diagnoses_icd.csv",
        "patients.csv",
    ]
    # a typed cohort whose first part file holds no procedure: one header, then the rows
    rng = np.random.default_rng(2)
    plain, typed = random_batch(rng, 40), random_batch(rng, 40)
    typed = typed.with_columns(pl.col("visits").list.eval(pl.element().list.concat(pl.lit(["ICD9PCS:3893"]))))
    out = tmp_path / "typed"
    write_synthetic(out, [plain, typed], shard_size=40)
    m3 = write_mimic3_csv(out, tmp_path / "t3", seed=1)
    m4 = write_mimic4_csv(out, tmp_path / "t4", seed=1)
    for path in (m3 / "PROCEDURES_ICD.csv", m4 / "hosp" / "procedures_icd.csv"):
        lines = path.read_text().splitlines()
        assert sum(line.lower().startswith("row_id") or line.startswith("subject_id") for line in lines) == 1
        assert len(lines) == 1 + sum(len(p) for p in typed["visits"].to_list())
    back = Cohort(prepare_from("mimic4", m4, tmp_path / "back"))
    assert back.meta["drops"] == {} and back.meta["counts"]["events"]["procedures"] == len(lines) - 1
