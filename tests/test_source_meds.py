"""MedsSource on a hand-made MEDS dataset: tables, visit grouping, bad input, prepare end to end."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ehrgen.config import CONFIG_DIR
from ehrgen.data.cohort import Cohort
from ehrgen.data.sources.meds import MedsSource
from ehrgen.errors import InputError

DX9 = "DIAGNOSIS//ICD//9//"
YEAR = 365.25 * 86400.0

# MEDS data schema (+ hadm_id): subject_id int64, time timestamp[us], code str, numeric_value f32.
SCHEMA = {
    "subject_id": pl.Int64,
    "time": pl.Datetime("us"),
    "code": pl.Utf8,
    "numeric_value": pl.Float32,
    "hadm_id": pl.Int64,
}
# Subject 1: admissions 10 (two ICD-9, one ICD-10, dotted codes), 11 (a lab only), 12 (one code).
# Subjects 3 (no gender), 4 (both genders), 5 (no birth) are dropped by the builder.
TRAIN = [
    (1, datetime(2100, 1, 1), "MEDS_BIRTH", None, None),
    (1, None, "GENDER//M", None, None),
    (1, datetime(2150, 1, 1), "HOSPITAL_ADMISSION//EW EMER.", None, 10),
    (1, datetime(2150, 1, 5), DX9 + "401.9", None, 10),
    (1, datetime(2150, 1, 5), DX9 + "V58.61", None, 10),
    (1, datetime(2150, 1, 5), "DIAGNOSIS//ICD//10//I10", None, 10),
    (1, datetime(2151, 1, 1), "LAB//50912", 1.2, 11),
    (1, datetime(2152, 7, 2), DX9 + "250.00", None, 12),
    (3, datetime(2090, 1, 1), "MEDS_BIRTH", None, None),
    (3, datetime(2150, 1, 1), DX9 + "4019", None, 30),
    (4, datetime(2090, 1, 1), "MEDS_BIRTH", None, None),
    (4, None, "GENDER//M", None, None),
    (4, None, "GENDER//F", None, None),
    (4, datetime(2150, 1, 1), DX9 + "4019", None, 40),
    (5, None, "GENDER//M", None, None),
    (5, datetime(2150, 1, 1), DX9 + "4019", None, 50),
]
# Subject 2 lives in a shard without hadm_id and with tz-aware nanosecond times: visits by timestamp.
TUNING = [
    (2, datetime(2080, 6, 15), "MEDS_BIRTH"),
    (2, None, "GENDER//F"),
    (2, datetime(2150, 3, 1, 10), DX9 + "41401"),
    (2, datetime(2150, 3, 1, 10), DX9 + "E849.7"),
    (2, datetime(2151, 1, 1), DX9 + "4280"),
    (2, None, DX9 + "4019"),  # no time: no visit
]


def years(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() / YEAR


def write_meds(root: Path, metadata: bool = True) -> Path:
    (root / "data" / "train").mkdir(parents=True)
    (root / "data" / "tuning").mkdir(parents=True)
    pl.DataFrame(TRAIN, schema=SCHEMA, orient="row").write_parquet(root / "data" / "train" / "0.parquet")
    tuning = pl.DataFrame(TUNING, schema={k: SCHEMA[k] for k in ("subject_id", "time", "code")}, orient="row")
    tuning = tuning.with_columns(
        pl.col("time").cast(pl.Datetime("ns")).dt.replace_time_zone("UTC"),
        pl.lit(None, pl.Float32).alias("numeric_value"),
    )
    tuning.write_parquet(root / "data" / "tuning" / "0.parquet")
    if metadata:
        (root / "metadata").mkdir()
        (root / "metadata" / "dataset.json").write_text(
            json.dumps({"dataset_name": "toy", "meds_version": "0.3.3", "etl_name": "hand"})
        )
        pl.DataFrame(
            {
                "code": [DX9 + "401.9", "DIAGNOSIS//ICD//10//I10", "LAB//50912", DX9 + "V58.61"],
                "description": [
                    "Unspecified essential hypertension",
                    "Essential hypertension",
                    "Creatinine",
                    None,
                ],
                "parent_codes": [["ICD9CM/401.9"], None, None, None],
            }
        ).write_parquet(root / "metadata" / "codes.parquet")
    return root


@pytest.fixture
def meds_root(tmp_path: Path) -> Path:
    return write_meds(tmp_path / "meds")


def test_load_tables(meds_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ehrgen.data.sources.meds"):
        tables = MedsSource(str(meds_root)).load(meds_root / "scratch")
    assert tables.name == "meds"
    assert tables.drops == {}
    assert tables.info["visits_by"] == "hadm_id"
    assert tables.info["meds_dataset"] == {"dataset_name": "toy", "meds_version": "0.3.3", "etl_name": "hand"}

    patients = tables.patients.collect().sort("subject_id")
    assert patients.schema == pl.Schema({"subject_id": pl.Int64, "sex": pl.Int8})
    assert patients.rows() == [(1, 0), (2, 1), (3, None), (4, None), (5, 0)]

    visits = tables.visits.collect().sort("subject_id", "time")
    assert visits.columns == ["subject_id", "visit_id", "time", "end", "age"]
    assert visits.schema["time"] == visits.schema["end"] == pl.Datetime("us")
    # an admission ends at its latest event; one-time admissions and timestamp visits have no end
    ends = dict(zip(visits["visit_id"].to_list(), visits["end"].to_list(), strict=True))
    assert ends == {
        10: datetime(2150, 1, 5),
        11: None,
        12: None,
        -1: None,
        -2: None,
        30: None,
        40: None,
        50: None,
    }
    visits = visits.drop("end")
    b1, b2 = datetime(2100, 1, 1), datetime(2080, 6, 15)
    expected = [
        # admission visits start at their earliest event, not at the diagnoses' time
        (1, 10, datetime(2150, 1, 1), years(datetime(2150, 1, 1), b1)),
        (1, 11, datetime(2151, 1, 1), years(datetime(2151, 1, 1), b1)),
        (1, 12, datetime(2152, 7, 2), years(datetime(2152, 7, 2), b1)),
        # timestamp visits get distinct negative ids
        (2, -1, datetime(2150, 3, 1, 10), years(datetime(2150, 3, 1, 10), b2)),
        (2, -2, datetime(2151, 1, 1), years(datetime(2151, 1, 1), b2)),
        (3, 30, datetime(2150, 1, 1), 60.0),
        (4, 40, datetime(2150, 1, 1), 60.0),
        (5, 50, datetime(2150, 1, 1), None),
    ]
    assert visits.height == len(expected)
    for got, want in zip(visits.rows(), expected, strict=True):
        assert got[:3] == want[:3]
        assert got[3] == (None if want[3] is None else pytest.approx(want[3], abs=0.01))

    dx = tables.diagnoses.collect().sort("subject_id", "visit_id", "seq")
    assert dx.columns == ["subject_id", "visit_id", "seq", "code"]
    assert dx.rows() == [
        (1, 10, 1, "401.9"),  # raw: the builder normalises
        (1, 10, 2, "V58.61"),
        (1, 10, 3, "ICD10CM:I10"),  # ICD-10 kept, marked as the other system
        (1, 12, 1, "250.00"),
        (2, None, 1, "4019"),  # no time -> no visit id -> dropped and counted by the builder
        (2, -2, 1, "4280"),
        (2, -1, 1, "41401"),
        (2, -1, 2, "E849.7"),
        (3, 30, 1, "4019"),
        (4, 40, 1, "4019"),
        (5, 50, 1, "4019"),
    ]

    # diagnosis codes with a description, normalised
    assert tables.descriptions.collect().rows() == [
        ("4019", "Unspecified essential hypertension"),
        ("ICD10CM:I10", "Essential hypertension"),
    ]


def test_one_icd_version_drops_and_counts_the_other(
    meds_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ehrgen.data.sources.meds"):
        nine = MedsSource(meds_root, icd_versions=[9]).load(meds_root)
    assert nine.drops == {"icd10_rows": 1}
    assert "dropped 1 icd10 rows" in caplog.text
    assert not nine.diagnoses.collect()["code"].str.starts_with("ICD10CM:").any()
    assert nine.descriptions.collect()["code"].to_list() == ["4019"]
    ten = MedsSource(meds_root, icd_versions=[10]).load(meds_root)
    assert ten.drops == {"icd9_rows": 10}
    assert ten.diagnoses.collect()["code"].to_list() == ["ICD10CM:I10"]
    with pytest.raises(InputError, match="overlaps code_prefix"):
        MedsSource(meds_root, code_prefix="DIAGNOSIS//ICD//", icd10_prefix="DIAGNOSIS//ICD//10//")
    with pytest.raises(InputError, match=r"icd_versions=\[8\]"):
        MedsSource(meds_root, icd_versions=[8])


def test_visits_by_time_when_no_visit_column(meds_root: Path) -> None:
    tables = MedsSource(meds_root, visit_column=None).load(meds_root)
    assert tables.info["visits_by"] == "time"
    visits = tables.visits.filter(pl.col("subject_id") == 1).collect().sort("time")
    # the admission and lab events no longer form visits; diagnoses at one timestamp do
    assert visits.select("visit_id", "time").rows() == [
        (-1, datetime(2150, 1, 5)),
        (-2, datetime(2152, 7, 2)),
    ]
    dx = tables.diagnoses.filter(pl.col("subject_id") == 1).collect().sort("visit_id", "seq")
    assert dx.select("visit_id", "code").rows() == [
        (-2, "250.00"),
        (-1, "401.9"),
        (-1, "V58.61"),
        (-1, "ICD10CM:I10"),
    ]
    # ids are unique across subjects (the builder keys visits by id alone)
    all_visits = tables.visits.collect()
    assert all_visits["visit_id"].n_unique() == all_visits.height


def test_custom_prefix_and_no_metadata(tmp_path: Path) -> None:
    root = write_meds(tmp_path / "meds", metadata=False)
    tables = MedsSource(root, code_prefix="DIAGNOSIS//ICD//10//", icd10_prefix=None).load(root)
    assert tables.descriptions is None and tables.drops == {} and tables.info["meds_dataset"] == {}
    assert tables.diagnoses.collect()["code"].to_list() == ["I10"]


def test_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not set"):
        MedsSource(None).load(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        MedsSource(tmp_path / "nowhere").load(tmp_path)
    with pytest.raises(InputError, match=r"no \*\.parquet files.*data/\*\*/\*\.parquet"):
        MedsSource(tmp_path).load(tmp_path)
    with pytest.raises(InputError, match="code_prefix is empty"):
        MedsSource(tmp_path, code_prefix="")


def test_bad_files_are_named(tmp_path: Path) -> None:
    root = write_meds(tmp_path / "meds")
    bad = root / "data" / "train" / "1.parquet"
    pl.DataFrame({"subject_id": [1], "timestamp": [datetime(2150, 1, 1)], "code": ["X"]}).write_parquet(bad)
    with pytest.raises(InputError, match=r"1\.parquet: missing column\(s\) time"):
        MedsSource(root).load(tmp_path)
    bad.write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"1\.parquet: cannot be read as Parquet"):
        MedsSource(root).load(tmp_path)
    bad.unlink()
    (root / "metadata" / "dataset.json").write_text("{oops")
    with pytest.raises(InputError, match=r"dataset\.json: not valid JSON"):
        MedsSource(root).load(tmp_path)


def test_string_times_unparsable_to_null(tmp_path: Path) -> None:
    root = tmp_path / "meds"
    (root / "data").mkdir(parents=True)
    pl.DataFrame(
        {
            "subject_id": [7, 7, 7, 7],
            "time": ["2000-01-01", None, "2040-01-01T00:00:00", "garbage"],
            "code": ["MEDS_BIRTH", "GENDER//F", DX9 + "4019", DX9 + "25000"],
        }
    ).write_parquet(root / "data" / "0.parquet")
    tables = MedsSource(root).load(root)
    assert tables.visits.collect().select("visit_id", "time").rows() == [(-1, datetime(2040, 1, 1))]
    assert tables.diagnoses.collect().sort("code").select("visit_id", "code").rows() == [
        (None, "25000"),
        (-1, "4019"),
    ]


def compose_prepare(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="prepare", overrides=["data=meds", *overrides])


def test_config_instantiates(meds_root: Path, tmp_path: Path) -> None:
    cfg = compose_prepare([f"data.raw_dir={meds_root}", "data.source.visit_column=null"])
    source = instantiate(cfg.data.source)
    assert isinstance(source, MedsSource)
    assert source.raw_dir == str(meds_root) and source.visit_column is None
    assert source.code_prefix == DX9 and source.birth_code == "MEDS_BIRTH"


def test_prepare_end_to_end(meds_root: Path, tmp_path: Path) -> None:
    from ehrgen.prepare import run

    out = run(compose_prepare([f"data.raw_dir={meds_root}", f"data.cohort_dir={tmp_path / 'cohort'}"]))
    cohort = Cohort(out)
    assert cohort.meta["source"] == "meds"
    assert cohort.n_patients == 2
    rows = {r["subject_id"]: r for r in cohort.read().to_dicts()}
    assert set(rows) == {1, 2}

    assert rows[1]["sex"] == 0
    assert rows[1]["age"] == pytest.approx(years(datetime(2150, 1, 1), datetime(2100, 1, 1)), abs=1e-4)
    assert [v["codes"] for v in rows[1]["visits"]] == [["4019", "V5861", "ICD10CM:I10"], ["25000"]]
    assert [v["time"] for v in rows[1]["visits"]] == [datetime(2150, 1, 1), datetime(2152, 7, 2)]
    assert rows[2]["sex"] == 1
    assert rows[2]["age"] == pytest.approx(years(datetime(2150, 3, 1, 10), datetime(2080, 6, 15)), abs=1e-4)
    assert [v["codes"] for v in rows[2]["visits"]] == [["41401", "E8497"], ["4280"]]

    drops = cohort.meta["drops"]
    assert "icd10_rows" not in drops
    assert drops["patient_unknown_sex"] == 2  # 3 (no gender event), 4 (both)
    assert drops["admission_without_patient"] == 2  # 30, 40
    assert drops["admission_unknown_age"] == 1  # 50 (no MEDS_BIRTH)
    assert drops["diagnosis_missing_id"] == 1  # subject 2's untimed diagnosis
    assert drops["diagnosis_without_admission"] == 3  # the diagnoses of 30, 40, 50
    assert drops["admission_without_codes"] == 1  # 11 (a lab only)
    assert drops["patient_without_admissions"] == 1  # 5
    assert "diagnosis_malformed_code" not in drops
    assert cohort.meta["info"]["meds_dataset"]["dataset_name"] == "toy"

    codes = cohort.codes()
    assert dict(zip(codes["code"], codes["description"], strict=True))["4019"] == (
        "Unspecified essential hypertension"
    )
    assert set(codes["code"]) == {"25000", "41401", "4019", "4280", "E8497", "V5861", "ICD10CM:I10"}


def test_procedures_and_medications(tmp_path: Path) -> None:
    from ehrgen.prepare import run

    rows = [
        (7, datetime(2100, 1, 1), "MEDS_BIRTH", None, None),
        (7, None, "GENDER//F", None, None),
        (7, datetime(2150, 1, 1), "MEDICATION//START//Heparin 5000 units", None, 70),
        (7, datetime(2150, 1, 1), DX9 + "401.9", None, 70),
        (7, datetime(2150, 1, 2), "PROCEDURE//ICD//9//38.93", None, 70),
        (7, datetime(2150, 1, 2), "PROCEDURE//ICD//10//02HV33Z", None, 70),
        (7, datetime(2150, 1, 3), "MEDICATION//START//Heparin (Porcine)", None, 70),
        (7, datetime(2150, 1, 3), "MEDICATION//5% Dextrose", None, 70),
        (7, datetime(2150, 1, 4), "LAB//50912", 1.0, 70),
    ]
    (tmp_path / "meds" / "data").mkdir(parents=True)
    pl.DataFrame(rows, schema=SCHEMA, orient="row").write_parquet(tmp_path / "meds" / "data" / "0.parquet")
    cfg = compose_prepare([f"data.raw_dir={tmp_path / 'meds'}", f"data.cohort_dir={tmp_path / 'cohort'}"])
    cohort = Cohort(run(cfg))
    (patient,) = cohort.read().to_dicts()
    # diagnoses, procedures, medications, each in event order; a drug prescribed twice counts once
    assert [v["codes"] for v in patient["visits"]] == [
        ["4019", "ICD9PCS:3893", "ICD10PCS:02HV33Z", "RX:heparin", "RX:dextrose"]
    ]
    assert cohort.meta["drops"]["medication_duplicate_in_visit"] == 1
    assert cohort.meta["counts"]["events"] == {"diagnoses": 1, "procedures": 2, "medications": 2}

    only = MedsSource(tmp_path / "meds", event_types=["diagnosis"]).load(tmp_path)
    assert only.procedures is None and only.medications is None
    nine = MedsSource(tmp_path / "meds", icd_versions=[9]).load(tmp_path)
    assert nine.drops == {"procedure_icd10_rows": 1}
    assert nine.procedures.collect()["code"].to_list() == ["ICD9PCS:38.93"]  # raw: the builder normalises
    with pytest.raises(InputError, match="event_types asks for medication, and no event code starts with"):
        MedsSource(tmp_path / "meds", medication_prefix="RX//", event_types=["diagnosis", "medication"]).load(
            tmp_path
        )
