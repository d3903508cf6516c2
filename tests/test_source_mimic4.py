"""Mimic4Source on a hand-made MIMIC-IV hosp/ fixture: tables, bad input, and prepare end to end."""

from __future__ import annotations

import gzip
import logging
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ehrgen.config import CONFIG_DIR
from ehrgen.data.build import row_accounting
from ehrgen.data.cohort import Cohort
from ehrgen.data.sources.mimic4 import Mimic4Source
from ehrgen.errors import InputError

PATIENTS = """subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod
1,M,50,2150,2008 - 2010,
2,f,91,2160,2011 - 2013,2163-01-01
3,F,30,2170,2017 - 2019,
4,X,40,2150,2008 - 2010,
5,M,abc,2150,2008 - 2010,
"""
# Upper-case headers, an ISO 'T' timestamp and an unparsable one.
ADMISSIONS = """SUBJECT_ID,HADM_ID,ADMITTIME,DISCHTIME
1,100,2150-03-01 10:00:00,2150-03-05 10:00:00
1,101,2152-06-01 08:00:00,2152-06-02 08:00:00
1,102,2153-01-01 00:00:00,2153-01-02 00:00:00
2,200,2162-05-05T12:00:00,2162-05-06 12:00:00
2,201,not-a-date,2163-01-01 00:00:00
3,300,2171-01-01 00:00:00,2171-01-02 00:00:00
4,400,2150-01-01 00:00:00,2150-01-02 00:00:00
5,500,2150-01-01 00:00:00,2150-01-02 00:00:00
"""
# 14 rows: 9 ICD-9 (one lower-case V code), 4 ICD-10 (one not shaped like ICD-10), 1 unparsable version.
DIAGNOSES = """subject_id,hadm_id,seq_num,icd_code,icd_version
1,100,1,4019,9
1,100,2,v5861,9
1,100,3,I10,10
1,101,1,25000,9
1,101,2,4019,9
1,101,3,4019,x
2,200,2,41401,9
2,200,1,E8497,9
2,201,1,4280,9
3,300,1,E119,10
3,300,2,I10,10
3,300,3,4019,10
4,400,1,4019,9
5,500,1,4019,9
"""
TITLES = """icd_code,icd_version,long_title
4019,9,Unspecified essential hypertension
V5861,9,Long-term (current) use of anticoagulants
I10,10,Essential (primary) hypertension
25000,10,not an ICD-9 title
"""


# 6 rows: ICD-9-CM volume 3 (one twice in its admission) and ICD-10-PCS, one of an unknown admission.
PROCEDURES = """subject_id,hadm_id,seq_num,chartdate,icd_code,icd_version
1,100,1,2150-03-02,3893,9
1,100,2,2150-03-02,3893,9
1,101,1,2152-06-01,9904,9
3,300,1,2171-01-01,02HV33Z,10
3,300,2,2171-01-01,0DT,10
1,999,1,2150-03-02,3893,9
"""
PROCEDURE_TITLES = """icd_code,icd_version,long_title
3893,9,"Venous catheterization, not elsewhere classified"
02HV33Z,10,Insertion of infusion device into superior vena cava
"""
# 5 rows: names with strengths and forms, one repeated drug, one without a name.
PRESCRIPTIONS = """subject_id,hadm_id,pharmacy_id,starttime,drug_type,drug
1,100,1,2150-03-01 12:00:00,MAIN,Heparin 5000 units
1,100,2,2150-03-02 12:00:00,MAIN,Heparin (Porcine)
1,100,3,2150-03-02 12:00:00,BASE,5% Dextrose
2,200,4,2162-05-05 13:00:00,MAIN,
3,300,5,2171-01-01 01:00:00,MAIN,Potassium Chloride (Powder)
"""


def write_hosp(folder: Path, gz: bool = True, titles: bool = True, events: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tables = {"patients": PATIENTS, "ADMISSIONS": ADMISSIONS, "diagnoses_icd": DIAGNOSES}
    if events:
        tables |= {
            "procedures_icd": PROCEDURES,
            "prescriptions": PRESCRIPTIONS,
            "d_icd_procedures": PROCEDURE_TITLES,
        }
    if titles:
        tables["d_icd_diagnoses"] = TITLES
    for name, text in tables.items():
        if gz:
            with gzip.open(folder / f"{name}.csv.gz", "wt") as f:
                f.write(text)
        else:
            (folder / f"{name}.csv").write_text(text)
    return folder


@pytest.fixture
def mimic4_root(tmp_path: Path) -> Path:
    write_hosp(tmp_path / "mimiciv" / "hosp")
    return tmp_path / "mimiciv"


def test_load_tables(mimic4_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ehrgen.data.sources.mimic4"):
        tables = Mimic4Source(str(mimic4_root)).load(mimic4_root / "scratch")
    assert tables.name == "mimic4"
    assert tables.drops == {"icd_version_invalid_rows": 1}
    assert "neither 9 nor 10" in caplog.text

    patients = tables.patients.collect().sort("subject_id")
    assert patients.schema == pl.Schema({"subject_id": pl.Int64, "sex": pl.Int8})
    assert patients.rows() == [(1, 0), (2, 1), (3, 1), (4, None), (5, 0)]

    visits = tables.visits.collect().sort("visit_id")
    assert visits.columns == ["subject_id", "visit_id", "time", "end", "age"]
    assert visits.schema["time"] == visits.schema["end"] == pl.Datetime("us")
    assert visits.schema["age"] == pl.Float64
    assert visits["end"].to_list()[:2] == [datetime(2150, 3, 5, 10), datetime(2152, 6, 2, 8)]
    assert visits["end"].null_count() == 0
    visits = visits.drop("end")
    # age = anchor_age + year(admittime) - anchor_year; unparsable date or anchor_age -> null
    assert visits.rows() == [
        (1, 100, datetime(2150, 3, 1, 10), 50.0),
        (1, 101, datetime(2152, 6, 1, 8), 52.0),
        (1, 102, datetime(2153, 1, 1), 53.0),
        (2, 200, datetime(2162, 5, 5, 12), 93.0),
        (2, 201, None, None),
        (3, 300, datetime(2171, 1, 1), 31.0),
        (4, 400, datetime(2150, 1, 1), 40.0),
        (5, 500, datetime(2150, 1, 1), None),
    ]

    dx = tables.diagnoses.collect().sort("visit_id", "seq")
    assert dx.columns == ["subject_id", "visit_id", "seq", "code"]
    assert dx.rows() == [
        (1, 100, 1, "4019"),
        (1, 100, 2, "v5861"),  # raw: the builder normalises
        (1, 100, 3, "ICD10CM:I10"),  # ICD-10 marked: ICD-9 E871 and ICD-10 E87.1 are different codes
        (1, 101, 1, "25000"),
        (1, 101, 2, "4019"),
        (2, 200, 1, "E8497"),
        (2, 200, 2, "41401"),
        (2, 201, 1, "4280"),
        (3, 300, 1, "ICD10CM:E119"),
        (3, 300, 2, "ICD10CM:I10"),
        (3, 300, 3, "ICD10CM:4019"),  # the builder drops it: not shaped like ICD-10-CM
        (4, 400, 1, "4019"),
        (5, 500, 1, "4019"),
    ]

    titles = tables.descriptions.collect().sort("code")
    assert titles.rows() == [
        ("4019", "Unspecified essential hypertension"),
        ("ICD10CM:25000", "not an ICD-9 title"),
        ("ICD10CM:I10", "Essential (primary) hypertension"),
        ("V5861", "Long-term (current) use of anticoagulants"),
    ]
    assert tables.info["icd_versions"] == [9, 10]


@pytest.mark.parametrize(("versions", "dropped"), [([9], {"icd10_rows": 4}), ([10], {"icd9_rows": 9})])
def test_one_icd_version_drops_and_counts_the_other(
    mimic4_root: Path, versions: list[int], dropped: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ehrgen.data.sources.mimic4"):
        tables = Mimic4Source(mimic4_root, icd_versions=versions).load(mimic4_root / "scratch")
    assert tables.drops == dropped | {"icd_version_invalid_rows": 1}
    kept = [v for v in (9, 10) if v in versions][0]
    assert f"dropped {next(iter(dropped.values()))} ICD-{19 - kept}" in caplog.text
    codes = tables.diagnoses.collect()["code"].cast(pl.Utf8)
    assert codes.str.starts_with("ICD10CM:").all() == (kept == 10)
    assert codes.str.starts_with("ICD10CM:").any() == (kept == 10)
    assert codes.len() == 14 - 1 - next(iter(dropped.values()))
    titles = tables.descriptions.collect()["code"]
    assert titles.str.starts_with("ICD10CM:").all() == (kept == 10)


def test_hosp_folder_plain_csv_without_titles(tmp_path: Path) -> None:
    hosp = write_hosp(tmp_path / "hosp", gz=False, titles=False)
    tables = Mimic4Source(hosp).load(tmp_path)
    assert tables.descriptions is None
    assert tables.diagnoses.collect().height == 13
    assert tables.visits.collect().height == 8


def test_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        Mimic4Source(tmp_path / "nowhere").load(tmp_path)
    with pytest.raises(InputError, match="not set"):
        Mimic4Source(None).load(tmp_path)
    hosp = write_hosp(tmp_path / "root" / "hosp")
    (hosp / "diagnoses_icd.csv.gz").unlink()
    with pytest.raises(InputError, match=r"diagnoses_icd\.csv\(\.gz\) not found.*icd_version"):
        Mimic4Source(tmp_path / "root").load(tmp_path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    hosp = write_hosp(tmp_path / "hosp", gz=False)
    (hosp / "patients.csv").write_text("subject_id,gender,anchor_year\n1,M,2150\n")
    with pytest.raises(InputError, match=r"patients\.csv: missing column\(s\) anchor_age"):
        Mimic4Source(hosp).load(tmp_path)


@pytest.mark.parametrize("versions", [[], [11], [9, 11], "nine", None])
def test_bad_icd_versions_are_named(tmp_path: Path, versions: object) -> None:
    with pytest.raises(
        InputError, match=r"data\.source\.icd_versions=.*expected a non-empty subset of \[9, 10\]"
    ):
        Mimic4Source(tmp_path, icd_versions=versions)


def test_cache_key_identifies_options(tmp_path: Path) -> None:
    key = Mimic4Source(str(tmp_path)).cache_key()
    assert key == {
        "source": "mimic4",
        "raw_dir": str(tmp_path.absolute()),
        "icd_versions": [9, 10],
        "event_types": None,
    }
    assert Mimic4Source(str(tmp_path), icd_versions=[9]).cache_key()["icd_versions"] == [9]


def compose_prepare(raw_dir: Path, cohort_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            config_name="prepare",
            overrides=["data=mimic4", f"data.raw_dir={raw_dir}", f"data.cohort_dir={cohort_dir}", *overrides],
        )


def test_config_instantiates(mimic4_root: Path, tmp_path: Path) -> None:
    cfg = compose_prepare(mimic4_root, tmp_path / "cohort")
    source = instantiate(cfg.data.source)
    assert isinstance(source, Mimic4Source)
    assert source.raw_dir == str(mimic4_root) and source.icd_versions == (9, 10)


def test_prepare_end_to_end(mimic4_root: Path, tmp_path: Path) -> None:
    from ehrgen.prepare import run

    out = run(compose_prepare(mimic4_root, tmp_path / "cohort"))
    cohort = Cohort(out)
    assert cohort.meta["source"] == "mimic4"
    assert cohort.n_patients == 3
    rows = {r["subject_id"]: r for r in cohort.read().to_dicts()}
    assert set(rows) == {1, 2, 3}  # 3 has ICD-10 codes only: kept

    assert rows[1]["sex"] == 0 and rows[1]["age"] == pytest.approx(50.0)
    assert [v["codes"] for v in rows[1]["visits"]] == [["4019", "V5861", "ICD10CM:I10"], ["25000", "4019"]]
    assert [v["time"] for v in rows[1]["visits"]] == [datetime(2150, 3, 1, 10), datetime(2152, 6, 1, 8)]
    # anchor_age 91 (MIMIC-IV's "over 89") + 2 years -> clamped to 90; codes in seq_num order
    assert rows[2]["sex"] == 1 and rows[2]["age"] == pytest.approx(90.0)
    assert [v["codes"] for v in rows[2]["visits"]] == [["E8497", "41401"]]
    assert [v["codes"] for v in rows[3]["visits"]] == [["ICD10CM:E119", "ICD10CM:I10"]]

    drops = cohort.meta["drops"]
    assert "icd10_rows" not in drops
    assert drops["icd_version_invalid_rows"] == 1
    assert drops["diagnosis_malformed_code"] == 1  # ICD10CM:4019
    assert drops["admission_unparsable_time"] == 1  # 201
    assert drops["patient_unknown_sex"] == 1  # 4
    assert drops["admission_without_patient"] == 1  # 400 (patient 4 dropped)
    assert drops["admission_unknown_age"] == 1  # 500 (anchor_age 'abc')
    assert drops["diagnosis_without_admission"] == 3  # 201, 400, 500
    assert drops["admission_without_codes"] == 1  # 102
    assert drops["patient_without_admissions"] == 1  # 5
    accounting = row_accounting(cohort.meta)
    assert accounting["diagnoses"] == {"input": 14, "used": 9, "dropped": 5}

    codes = cohort.codes()
    titles = dict(zip(codes["code"], codes["description"], strict=True))
    assert titles["4019"] == "Unspecified essential hypertension"
    assert titles["V5861"] == "Long-term (current) use of anticoagulants"
    assert titles["25000"] is None  # the fixture's only 25000 title is an ICD-10 row
    assert titles["ICD10CM:I10"] == "Essential (primary) hypertension"
    assert dict(zip(codes["code"], codes["count"], strict=True)) == {
        "4019": 2,
        "V5861": 1,
        "25000": 1,
        "E8497": 1,
        "41401": 1,
        "ICD10CM:I10": 2,
        "ICD10CM:E119": 1,
    }
    categories = dict(zip(codes["code"], codes["category"], strict=True))
    assert categories["ICD10CM:E119"] == "ICD10CM:E11" and categories["E8497"] == "E849"


def test_procedures_and_prescriptions(tmp_path: Path) -> None:
    from ehrgen.prepare import run

    root = write_hosp(tmp_path / "mimiciv" / "hosp", events=True).parent
    cohort = Cohort(run(compose_prepare(root, tmp_path / "cohort")))
    rows = {r["subject_id"]: [v["codes"] for v in r["visits"]] for r in cohort.read().to_dicts()}
    # diagnoses, then procedures, then medications, each in its own order
    assert rows[1][0] == ["4019", "V5861", "ICD10CM:I10", "ICD9PCS:3893", "RX:heparin", "RX:dextrose"]
    assert rows[1][1] == ["25000", "4019", "ICD9PCS:9904"]
    assert rows[3] == [["ICD10CM:E119", "ICD10CM:I10", "ICD10PCS:02HV33Z", "RX:potassium chloride"]]
    drops = cohort.meta["drops"]
    assert drops["procedure_duplicate_in_visit"] == 1
    assert drops["procedure_malformed_code"] == 1  # 0DT: not 7 characters
    assert drops["procedure_without_admission"] == 1  # 999
    assert drops["medication_duplicate_in_visit"] == 1  # heparin twice
    assert drops["medication_null_code"] == 1
    accounting = row_accounting(cohort.meta)
    assert accounting["procedures"] == {"input": 6, "used": 3, "dropped": 3}
    assert accounting["medications"] == {"input": 5, "used": 3, "dropped": 2}
    codes = cohort.codes()
    titles = dict(zip(codes["code"], codes["description"], strict=True))
    assert titles["ICD10PCS:02HV33Z"] == "Insertion of infusion device into superior vena cava"
    assert titles["ICD9PCS:3893"].startswith("Venous catheterization")
    assert dict(zip(codes["code"], codes["type"], strict=True))["RX:heparin"] == "medication"
    assert cohort.meta["counts"]["events"] == {"diagnoses": 9, "procedures": 3, "medications": 3}

    only = Cohort(run(compose_prepare(root, tmp_path / "dx", "data.event_types=[diagnosis]")))
    assert only.codes()["type"].unique().to_list() == ["diagnosis"]
    assert "procedures" not in only.meta["input_rows"]
    with pytest.raises(InputError, match=r"event_types=.*includes diagnosis"):
        Mimic4Source(root, event_types=["procedure"])
    plain = write_hosp(tmp_path / "plain" / "hosp").parent
    with pytest.raises(InputError, match=r"prescriptions\.csv\(\.gz\) not found"):
        run(compose_prepare(plain, tmp_path / "none", "data.event_types=[diagnosis,medication]"))
