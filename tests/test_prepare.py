"""prepare on the real MIMIC-III demo and on hand-made raw tables with every kind of bad row."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ehrgen.data.build import load_cooccurrence, row_accounting, visit_code_lists
from ehrgen.data.codes import drug_key, event_type
from ehrgen.data.cohort import Cohort, assign_splits
from ehrgen.data.sources.base import RawCsv
from ehrgen.data.sources.csv_check import check_csv
from ehrgen.errors import InputError
from ehrgen.prepare import cohort_dir_for, run


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- real data


def test_demo_counts_match_raw_tables(demo_cohort: Path, mimic3_demo: Path) -> None:
    cohort = Cohort(demo_cohort)
    patients = cohort.read()
    assert patients.height == 100
    assert patients["subject_id"].n_unique() == 100
    assert int(patients["visits"].list.len().sum()) == 129

    # An independent reading of the raw files (csv module): a code counts once per admission.
    diagnoses = _read_csv(mimic3_demo / "DIAGNOSES_ICD.csv")
    procedures = _read_csv(mimic3_demo / "PROCEDURES_ICD.csv")
    prescriptions = _read_csv(mimic3_demo / "PRESCRIPTIONS.csv")
    px = {(r["hadm_id"], "ICD9PCS:" + r["icd9_code"]) for r in procedures}
    rx = {(r["hadm_id"], "RX:" + drug_key(r["drug"])) for r in prescriptions}
    raw = Counter(r["icd9_code"] for r in diagnoses) + Counter(c for _, c in px) + Counter(c for _, c in rx)
    codes = cohort.codes()
    assert dict(zip(codes["code"], codes["count"], strict=True)) == dict(raw)
    assert (len(diagnoses), len(procedures), len(prescriptions)) == (1761, 506, 10398)
    assert cohort.meta["counts"]["events"] == {
        "diagnoses": 1761,
        "procedures": len(px),
        "medications": len(rx),
    }
    # the repeats of a code within an admission are the only rows not used
    assert cohort.meta["drops"] == {
        "procedure_duplicate_in_visit": len(procedures) - len(px),
        "medication_duplicate_in_visit": len(prescriptions) - len(rx),
    }
    for table, rows in row_accounting(cohort.meta).items():
        assert rows["input"] == rows["used"] + rows["dropped"], table
    assert dict(zip(codes["code"], codes["type"], strict=True))["RX:heparin"] == "medication"
    # descriptions come from D_ICD_DIAGNOSES
    assert (
        codes.filter(pl.col("code") == "4019")["description"].item() == "Unspecified essential hypertension"
    )


def test_demo_patient_fields(demo_cohort: Path, mimic3_demo: Path) -> None:
    patients = Cohort(demo_cohort).read()
    raw_pat = {int(r["subject_id"]): r for r in _read_csv(mimic3_demo / "PATIENTS.csv")}
    raw_adm = _read_csv(mimic3_demo / "ADMISSIONS.csv")
    raw_dx = _read_csv(mimic3_demo / "DIAGNOSES_ICD.csv")
    parse = lambda s: datetime.strptime(s, "%Y-%m-%d %H:%M:%S")  # noqa: E731
    ends = {int(a["hadm_id"]): parse(a["dischtime"]) for a in raw_adm}
    for row in patients.iter_rows(named=True):
        sid = row["subject_id"]
        assert row["sex"] == {"M": 0, "F": 1}[raw_pat[sid]["gender"]]
        adms = sorted(
            (parse(a["admittime"]), int(a["hadm_id"])) for a in raw_adm if int(a["subject_id"]) == sid
        )
        age = (adms[0][0] - parse(raw_pat[sid]["dob"])).total_seconds() / 86400 / 365.25
        assert row["age"] == pytest.approx(90.0 if age > 89 else age, abs=1e-3)
        # visits in admittime order, codes in seq_num order
        assert [v["time"] for v in row["visits"]] == [t for t, _ in adms]
        assert [v["end"] for v in row["visits"]] == [ends[h] for _, h in adms]  # DISCHTIME, exactly
        first_hadm = adms[0][1]
        expected = [
            d["icd9_code"]
            for d in sorted(
                (d for d in raw_dx if int(d["hadm_id"]) == first_hadm), key=lambda d: int(d["seq_num"])
            )
        ]
        codes = row["visits"][0]["codes"]
        assert codes[: len(expected)] == expected  # diagnoses first, then procedures and medications
        assert all(event_type(c) != "diagnosis" for c in codes[len(expected) :])
    assert (patients["age"] == 90.0).sum() > 0, "the demo holds patients over 89 (DOB shifted by ~300 y)"


def test_demo_cooccurrence_matches_bruteforce(demo_cohort: Path) -> None:
    cohort = Cohort(demo_cohort)
    codes = cohort.codes()["code"].to_list()
    index = {c: i for i, c in enumerate(codes)}
    cooc = load_cooccurrence(demo_cohort).toarray()
    expected = np.zeros_like(cooc)
    for row in cohort.read("train").iter_rows(named=True):
        for visit in row["visits"]:
            ids = [index[c] for c in visit["codes"]]
            for a in ids:
                for b in ids:
                    if a != b:
                        expected[a, b] += 1
    np.testing.assert_array_equal(cooc, expected)


def test_gzip_and_upper_case_headers_give_same_cohort(
    tmp_path: Path, mimic3_demo: Path, demo_cohort: Path, compose_cfg
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("PATIENTS", "ADMISSIONS", "DIAGNOSES_ICD", "PROCEDURES_ICD", "PRESCRIPTIONS"):
        text = (mimic3_demo / f"{name}.csv").read_text()
        header, rest = text.split("\n", 1)
        (raw / f"{name}.csv.gz").write_bytes(gzip.compress((header.upper() + "\n" + rest).encode()))
    out = run(
        compose_cfg("prepare", ["data=mimic3", f"data.raw_dir={raw}", f"data.cohort_dir={tmp_path / 'c'}"])
    )
    assert Cohort(out).read().drop("split").equals(Cohort(demo_cohort).read().drop("split"))


def test_splits_are_seeded_and_sharded(tmp_path: Path, mimic3_demo: Path, compose_cfg) -> None:
    out = run(
        compose_cfg(
            "prepare",
            [
                "data=mimic3",
                f"data.raw_dir={mimic3_demo}",
                f"data.cohort_dir={tmp_path / 'c'}",
                "data.shard_size=7",
            ],
        )
    )
    cohort = Cohort(out)
    assert len(cohort.files("train")) == int(np.ceil(cohort.meta["counts"]["patients"]["train"] / 7))
    assert sum(cohort.row_counts("train")) == cohort.meta["counts"]["patients"]["train"]
    everyone = cohort.read()
    assert everyone["subject_id"].n_unique() == everyone.height == 100
    split = assign_splits(everyone["subject_id"].to_numpy(), 42, (0.8, 0.1, 0.1))
    assert list(everyone["split"]) == [("train", "val", "test")[s] for s in split]
    big = assign_splits(np.arange(100_000), 42, (0.8, 0.1, 0.1))
    np.testing.assert_allclose(np.bincount(big) / 1e5, [0.8, 0.1, 0.1], atol=0.01)
    assert not np.array_equal(big, assign_splits(np.arange(100_000), 43, (0.8, 0.1, 0.1)))


def test_default_cohort_dir_is_keyed_by_options(compose_cfg, mimic3_demo: Path) -> None:
    a = cohort_dir_for(compose_cfg("prepare", ["data=mimic3", f"data.raw_dir={mimic3_demo}"]))
    b = cohort_dir_for(
        compose_cfg("prepare", ["data=mimic3", f"data.raw_dir={mimic3_demo}", "data.split_seed=1"])
    )
    assert a.parent == b.parent and a.name.startswith("mimic3-") and a != b


# ----------------------------------------------------------------------------- bad input

PATIENTS = [
    ["ROW_ID", "SUBJECT_ID", "GENDER", "DOB"],
    [1, 1, "M", "2100-01-01 00:00:00"],
    [2, 2, "F", "2080-06-01 00:00:00"],
    [3, 3, "F", "not a date"],  # unparsable DOB -> its admission has no age
    [4, 4, "M", "2090-01-01 00:00:00"],  # no admissions
    [5, 5, "X", "2090-01-01 00:00:00"],  # unknown sex
    [1, 1, "M", "2100-01-01 00:00:00"],  # duplicate patient row
]
ADMISSIONS = [
    ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME"],
    [1, 1, 100, "2150-01-01 10:00:00", "2150-01-04 12:30:00"],
    [2, 1, 101, "2140-01-01 10:00:00", "2139-12-31 00:00:00"],  # earlier: first visit; ends before it starts
    [3, 2, 200, "2150-01-01", "garbage"],  # unparsable dischtime: visit kept, end unknown
    [4, 2, 201, "garbage", ""],  # unparsable admittime
    [5, 3, 300, "2150-01-01 00:00:00", ""],
    [6, 9, 900, "2150-01-01 00:00:00", ""],  # no patient row
    [7, 2, 202, "2151-01-01 00:00:00", ""],  # no diagnoses
    [8, 5, 500, "2150-01-01 00:00:00", ""],
]
DIAGNOSES = [
    ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
    [1, 1, 100, 2, "401.9"],
    [2, 1, 100, 1, "v58.61"],
    [3, 1, 100, 3, "4019"],  # duplicate of 401.9 after normalisation
    [4, 1, 101, 1, "25000"],
    [5, 1, 101, 2, ""],  # empty code
    [6, 1, 101, 3, "I10"],  # ICD-10, not ICD-9 shaped
    [7, 2, 200, 1, "E8497"],
    [8, 2, 201, 1, "4280"],
    [9, 3, 300, 1, "4280"],
    [10, 9, 900, 1, "4280"],
    [11, 1, 777, 1, "4280"],  # admission does not exist
    [12, 5, 500, 1, "4280"],
    [4, 1, 101, 1, "25000"],  # exact duplicate row
]


def _write(raw: Path, tables: dict[str, list[list]]) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        with open(raw / f"{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return raw


def _prepare(raw: Path, out: Path, compose_cfg, *extra: str) -> Path:
    return run(
        compose_cfg("prepare", ["data=mimic3", f"data.raw_dir={raw}", f"data.cohort_dir={out}", *extra])
    )


def test_bad_rows_are_dropped_and_counted(tmp_path: Path, compose_cfg) -> None:
    raw = _write(
        tmp_path / "raw", {"PATIENTS": PATIENTS, "ADMISSIONS": ADMISSIONS, "DIAGNOSES_ICD": DIAGNOSES}
    )
    cohort = Cohort(_prepare(raw, tmp_path / "c", compose_cfg))
    assert cohort.meta["drops"] == {
        "duplicate_patient": 1,
        "patient_unknown_sex": 1,
        "admission_unparsable_time": 1,
        "admission_without_patient": 2,  # subject 9 and subject 5 (dropped for unknown sex)
        "admission_unknown_age": 1,
        "diagnosis_null_code": 1,
        "diagnosis_malformed_code": 1,
        "diagnosis_without_admission": 5,  # 201, 300, 900, 777, 500 were all dropped before
        "duplicate_code_in_visit": 2,
        "admission_without_codes": 1,
        "patient_without_admissions": 2,  # patient 4, and patient 3 who lost its only admission
    }
    rows = {r["subject_id"]: r for r in cohort.read().iter_rows(named=True)}
    assert set(rows) == {1, 2}
    assert [v["codes"] for v in rows[1]["visits"]] == [["25000"], ["V5861", "4019"]]
    assert rows[1]["age"] == pytest.approx(40.0, abs=0.01)
    assert [v["codes"] for v in rows[2]["visits"]] == [["E8497"]]
    # visit ends: kept where they parse and follow the admission, else unknown (counted apart)
    assert [v["end"] for v in rows[1]["visits"]] == [None, datetime(2150, 1, 4, 12, 30)]
    assert [v["end"] for v in rows[2]["visits"]] == [None]
    assert cohort.meta["visit_ends"] == {"known": 1, "missing": 2, "before_admission": 1}
    assert json.loads((cohort.path / "metadata" / "cohort.json").read_text())["input_rows"]["diagnoses"] == 13


def test_missing_raw_dir_file_and_columns(tmp_path: Path, compose_cfg) -> None:
    with pytest.raises(InputError, match="does not exist"):
        _prepare(tmp_path / "nowhere", tmp_path / "c", compose_cfg)
    raw = _write(tmp_path / "raw", {"PATIENTS": PATIENTS, "ADMISSIONS": ADMISSIONS})
    with pytest.raises(InputError, match=r"DIAGNOSES_ICD\.csv\(\.gz\) not found"):
        _prepare(raw, tmp_path / "c", compose_cfg)
    bad = [["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ", "CODE"], [1, 1, 100, 1, "4019"]]
    _write(raw, {"DIAGNOSES_ICD": bad})
    with pytest.raises(InputError, match=r"DIAGNOSES_ICD\.csv: missing column\(s\) seq_num, icd9_code"):
        _prepare(raw, tmp_path / "c", compose_cfg)
    assert not (tmp_path / "c").exists()


def test_empty_result_is_an_error(tmp_path: Path, compose_cfg) -> None:
    raw = _write(
        tmp_path / "raw",
        {
            "PATIENTS": PATIENTS,
            "ADMISSIONS": ADMISSIONS,
            "DIAGNOSES_ICD": [DIAGNOSES[0], [1, 1, 100, 1, "XYZ"]],
        },
    )
    with pytest.raises(
        InputError, match="no patient with a usable diagnosis remains.*diagnosis_malformed_code=1"
    ):
        _prepare(raw, tmp_path / "c", compose_cfg)
    assert list(tmp_path.glob(".c.tmp-*")) == [] and not (tmp_path / "c").exists()


def test_existing_output_is_refused_unless_overwrite(tmp_path: Path, mimic3_demo: Path, compose_cfg) -> None:
    out = _prepare(mimic3_demo, tmp_path / "c", compose_cfg)
    with pytest.raises(InputError, match="already exists; pass overwrite=true"):
        _prepare(mimic3_demo, out, compose_cfg)
    assert _prepare(mimic3_demo, out, compose_cfg, "overwrite=true") == out
    assert Cohort(out).n_patients == 100


def test_crash_leaves_nothing_that_looks_complete(
    tmp_path: Path, mimic3_demo: Path, compose_cfg, monkeypatch
) -> None:
    import ehrgen.data.build as build

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "cooccurrence_matrix", explode)
    with pytest.raises(KeyboardInterrupt):
        _prepare(mimic3_demo, tmp_path / "c", compose_cfg)
    assert list(tmp_path.iterdir()) == [tmp_path / "cache"] or not (tmp_path / "c").exists()
    assert not list(tmp_path.glob(".c.*"))


def test_demo_visit_ends(demo_cohort: Path) -> None:
    meta = Cohort(demo_cohort).meta
    assert meta["visit_ends"] == {"known": 129, "missing": 0, "before_admission": 0}


def test_optional_columns_read_when_present_null_when_absent(tmp_path: Path) -> None:
    with_end = tmp_path / "a.csv"
    with_end.write_text("SUBJECT_ID,DISCHTIME\n1,2150-01-01 00:00:00\n")
    without = tmp_path / "b.csv"
    without.write_text("SUBJECT_ID\n1\n")
    raw = RawCsv()
    cols, optional = {"subject_id": pl.Int64}, {"dischtime": pl.Utf8}
    assert raw.scan(with_end, cols, "admissions", optional).collect().rows() == [(1, "2150-01-01 00:00:00")]
    got = raw.scan(without, cols, "admissions", optional).collect()
    assert got.columns == ["subject_id", "dischtime"] and got.rows() == [(1, None)]


def test_cohort_of_an_older_schema_names_the_version(demo_cohort: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(demo_cohort, old)
    meta_file = old / "metadata" / "cohort.json"
    meta_file.write_text(json.dumps(json.loads(meta_file.read_text()) | {"schema_version": 1}))
    with pytest.raises(InputError, match="schema_version 1, this ehrgen reads 2 .*end times"):
        Cohort(old)


def test_cohort_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist; create it with `python -m ehrgen.prepare"):
        Cohort(tmp_path / "missing")
    (tmp_path / "half").mkdir()
    with pytest.raises(InputError, match="not a complete cohort"):
        Cohort(tmp_path / "half")
    (tmp_path / "file.csv").write_text("x")
    with pytest.raises(InputError, match="file.csv is a file, not a cohort directory"):
        Cohort(tmp_path / "file.csv")


def test_visit_code_lists_orders_by_seq_and_keeps_first_mention() -> None:
    dx = pl.DataFrame(
        {
            "visit_id": [7, 7, 7, 7, 3, 3, 9],
            "seq": [1, 2, 3, 4, 1, 2, None],
            "code": ["4019", "25000", "4019", "V5861", "E8497", "4280", "4280"],
        }
    )
    want = {7: ["4019", "25000", "V5861"], 3: ["E8497", "4280"], 9: ["4280"]}
    got = dict(visit_code_lists(dx).iter_rows())
    assert got == want
    # Rows out of (visit, seq) order, visits interleaved and null seqs take the sorting path.
    shuffled = dx.with_columns(pl.col("code").cast(pl.Categorical)).sample(fraction=1.0, shuffle=True, seed=3)
    assert dict(visit_code_lists(shuffled).iter_rows()) == want
    nulls = pl.DataFrame({"visit_id": [1, 1, 1], "seq": [None, 2, 1], "code": ["A", "B", "C"]})
    assert dict(visit_code_lists(nulls).iter_rows()) == {1: ["C", "B", "A"]}


@pytest.mark.parametrize("seed", range(5))
def test_visit_code_lists_paths_agree_on_random_tables(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 2000
    ordered = pl.DataFrame(
        {
            "visit_id": np.sort(rng.integers(0, 150, n)),
            "seq": rng.integers(0, 40, n),
            "code": rng.choice([f"{c:03d}" for c in range(60)], n),
        }
    ).sort("visit_id", "seq", maintain_order=True)
    fast = visit_code_lists(ordered).sort("visit_id")
    slow = visit_code_lists(ordered.sample(fraction=1.0, shuffle=True, seed=seed)).sort("visit_id")
    assert fast["visit_id"].to_list() == slow["visit_id"].to_list()
    # Ties in seq may legitimately order differently once rows are shuffled; sets and first
    # positions by seq must agree.
    for visit, codes in [*fast.iter_rows(), *slow.iter_rows()]:
        first = ordered.filter(pl.col("visit_id") == visit).group_by("code").agg(pl.col("seq").min())
        seq_of = dict(first.iter_rows())
        assert sorted(codes) == sorted(seq_of)
        assert [seq_of[c] for c in codes] == sorted(seq_of.values())


def test_scan_table_types_columns_while_reading(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('Subject_ID,ICD9_CODE\n" 12",4019\nabc,V586\n1.5,x\n,25000\n+7,\n')
    df = RawCsv().scan(path, {"subject_id": pl.Int64, "icd9_code": pl.Utf8}, "diagnoses").collect()
    assert df.columns == ["subject_id", "icd9_code"]
    assert df["subject_id"].to_list() == [12, None, None, None, 7]
    assert df["icd9_code"].to_list() == ["4019", "V586", "x", "25000", None]
    with pytest.raises(InputError, match=r"missing column\(s\) hadm_id; found Subject_ID, ICD9_CODE"):
        RawCsv().scan(path, {"subject_id": pl.Int64, "hadm_id": pl.Int64}, "diagnoses")


# ----------------------------------------------------------------------------- strict raw reads


def _demo_copy(mimic3_demo: Path, raw: Path) -> Path:
    raw.mkdir()
    for name in ("PATIENTS", "ADMISSIONS", "DIAGNOSES_ICD", "D_ICD_DIAGNOSES"):
        (raw / f"{name}.csv").write_bytes((mimic3_demo / f"{name}.csv").read_bytes())
    return raw


def _edit_line(path: Path, line: int, text: str | None = None, append: str = "") -> None:
    lines = path.read_text().splitlines(keepends=True)
    if text is not None:
        lines[line - 1] = text + "\n"
    lines[line - 1] = lines[line - 1].rstrip("\n") + append + "\n"
    path.write_text("".join(lines))


def test_every_raw_row_is_used_or_counted(mimic3_demo: Path, tmp_path: Path, compose_cfg) -> None:
    """Extra/missing fields, unparsable ids and blank lines were kept or lost silently."""
    raw = _demo_copy(mimic3_demo, tmp_path / "raw")
    clean = Cohort(_prepare(mimic3_demo, tmp_path / "clean", compose_cfg))
    dx = raw / "DIAGNOSES_ICD.csv"
    _edit_line(dx, 11, append=",EXTRA,EXTRA")  # too many fields
    _edit_line(dx, 12, text="112999,10006")  # too few fields
    _edit_line(dx, 13, text="113000,abc,142345,12,4019")  # unparsable SUBJECT_ID
    with open(dx, "a") as f:
        f.write("\n")  # a blank line at the end
    _edit_line(raw / "PATIENTS.csv", 5, text="9999,abc,F,2100-01-01 00:00:00,,,,0")  # unparsable id
    _edit_line(raw / "ADMISSIONS.csv", 3, append=",EXTRA")
    meta = Cohort(_prepare(raw, tmp_path / "c", compose_cfg)).meta
    assert meta["input_rows"] == {
        t: clean.meta["input_rows"][t] + (1 if t == "diagnoses" else 0)
        for t in ("patients", "admissions", "diagnoses")
    }
    assert meta["drops"]["diagnosis_malformed_row"] == 2
    assert meta["drops"]["diagnosis_blank_line"] == 1
    assert meta["drops"]["diagnosis_missing_id"] == 1
    assert meta["drops"]["admission_malformed_row"] == 1
    assert meta["drops"]["patient_missing_id"] == 1
    for table, rows in row_accounting(meta).items():
        assert rows["input"] == rows["used"] + rows["dropped"], table
    for table, rows in row_accounting(clean.meta).items():
        assert rows["input"] == rows["used"] + rows["dropped"], table


def test_the_accounting_holds_on_the_bad_rows_fixture(tmp_path: Path, compose_cfg) -> None:
    raw = _write(
        tmp_path / "raw", {"PATIENTS": PATIENTS, "ADMISSIONS": ADMISSIONS, "DIAGNOSES_ICD": DIAGNOSES}
    )
    meta = Cohort(_prepare(raw, tmp_path / "c", compose_cfg)).meta
    assert row_accounting(meta) == {
        "patients": {"input": len(PATIENTS) - 1, "used": 2, "dropped": len(PATIENTS) - 3},
        "admissions": {"input": 8, "used": 3, "dropped": 5},
        "diagnoses": {"input": 13, "used": 4, "dropped": 9},
    }


@pytest.mark.parametrize(
    ("table", "line", "text", "message"),
    [
        ("DIAGNOSES_ICD", 11, '112999,10006,142345,"7,4019', r"DIAGNOSES_ICD\.csv line 11: unbalanced quote"),
        ("PATIENTS", 4, '236,10017,"F,2075-09-21 00:00:00,,,,0', r"PATIENTS\.csv line 4: unbalanced quote"),
        ("ADMISSIONS", 7, None, r"ADMISSIONS\.csv line 7: not valid UTF-8"),
    ],
)
def test_unparsable_csv_stops_naming_file_and_line_without_rows(
    mimic3_demo: Path, tmp_path: Path, compose_cfg, table: str, line: int, text: str | None, message: str
) -> None:
    raw = _demo_copy(mimic3_demo, tmp_path / "raw")
    path = raw / f"{table}.csv"
    if text is None:
        lines = path.read_bytes().split(b"\n")
        lines[line - 1] = lines[line - 1][:10] + b"\xff\xfe" + lines[line - 1][10:]
        path.write_bytes(b"\n".join(lines))
    else:
        _edit_line(path, line, text=text)
    with pytest.raises(InputError, match=message) as err:
        _prepare(raw, tmp_path / "c", compose_cfg)
    # one line, and no raw row: CSV parsers quote the offending data in their errors
    assert "\n" not in str(err.value) and "10017" not in str(err.value) and "142345" not in str(err.value)
    assert not (tmp_path / "c").exists()


def test_truncated_gzip_names_the_file(mimic3_demo: Path, tmp_path: Path, compose_cfg) -> None:
    raw = _demo_copy(mimic3_demo, tmp_path / "raw")
    packed = gzip.compress((raw / "DIAGNOSES_ICD.csv").read_bytes())
    (raw / "DIAGNOSES_ICD.csv").unlink()
    (raw / "DIAGNOSES_ICD.csv.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(InputError, match=r"DIAGNOSES_ICD\.csv\.gz: cannot be read .*truncated"):
        _prepare(raw, tmp_path / "c", compose_cfg)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_check_csv_agrees_across_chunk_boundaries(tmp_path: Path, chunk: int) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b'a,b,"c"\r\n1,"x,y",3\r\n\r\n4,5\n"6","""q""",7\n8,9,10,11\n  \n12,13,"14"')
    layout = check_csv(path, chunk_bytes=chunk)
    assert (layout.header_fields, layout.records) == (3, 7)
    assert layout.malformed.tolist() == [2, 4, 5] and layout.blank.tolist() == [1]


@pytest.mark.parametrize(
    "override", ["data.shard_size=-1", "data.shard_size=0", "data.row_group_size=0", "data.split_seed=x"]
)
def test_bad_layout_options_fail_before_writing(
    mimic3_demo: Path, tmp_path: Path, compose_cfg, override: str
) -> None:
    """shard_size=-1 wrote a cohort without data files that said complete; 0 crashed."""
    key = override.split("=")[0]
    with pytest.raises(InputError, match=rf"{key}=.*: expected a whole number"):
        _prepare(mimic3_demo, tmp_path / "c", compose_cfg, override)
    assert not (tmp_path / "c").exists()


def test_event_types_choose_the_tables(tmp_path: Path, mimic3_demo: Path, compose_cfg) -> None:
    base = ["data=mimic3", f"data.raw_dir={mimic3_demo}"]
    only = Cohort(
        run(
            compose_cfg(
                "prepare", [*base, f"data.cohort_dir={tmp_path / 'dx'}", "data.event_types=[diagnosis]"]
            )
        )
    )
    assert only.meta["drops"] == {} and set(only.meta["input_rows"]) == {
        "patients",
        "admissions",
        "diagnoses",
    }
    assert (
        only.codes()["type"].unique().to_list() == ["diagnosis"] and int(only.codes()["count"].sum()) == 1761
    )
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("PATIENTS", "ADMISSIONS", "DIAGNOSES_ICD"):
        (raw / f"{name}.csv").write_bytes((mimic3_demo / f"{name}.csv").read_bytes())
    # without the files, the default reads what is there; asking for a missing table is one line
    assert set(Cohort(run(compose_cfg("prepare", ["data=mimic3", f"data.raw_dir={raw}", f"data.cohort_dir={tmp_path / 'a'}"]))).codes()["type"]) == {"diagnosis"}  # fmt: skip
    with pytest.raises(
        InputError, match=r"PRESCRIPTIONS\.csv\(\.gz\) not found: expected MIMIC-III PRESCRIPTIONS"
    ):
        run(compose_cfg("prepare", ["data=mimic3", f"data.raw_dir={raw}", f"data.cohort_dir={tmp_path / 'b'}", "data.event_types=[diagnosis,medication]"]))  # fmt: skip
    with pytest.raises(InputError, match=r"data\.event_types=.*includes diagnosis"):
        run(
            compose_cfg(
                "prepare", [*base, f"data.cohort_dir={tmp_path / 'c'}", "data.event_types=[medication]"]
            )
        )
    with pytest.raises(
        InputError, match=r"data\.event_types=\['diagnosis', 'labs'\]: expected null or a list"
    ):
        run(
            compose_cfg("prepare", [f"data.cohort_dir={tmp_path / 'd'}", "data.event_types=[diagnosis,labs]"])
        )
