"""The built-in MIMIC-III simulator: format, determinism, ids, realism, validity, and the reader path."""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ehrgen.data import rules
from ehrgen.data.codes import ICD9_DX_PATTERN
from ehrgen.data.sources import simulator
from ehrgen.data.sources.simulator import SIMULATOR_VERSION, SimulatedSource, write_mimic3_csvs
from ehrgen.data.sources.simulator_codes import CODE_TABLE, CONDITIONS
from ehrgen.errors import InputError

HEADERS = {
    "PATIENTS": "ROW_ID,SUBJECT_ID,GENDER,DOB,DOD,DOD_HOSP,DOD_SSN,EXPIRE_FLAG",
    "ADMISSIONS": "ROW_ID,SUBJECT_ID,HADM_ID,ADMITTIME,DISCHTIME,DEATHTIME,ADMISSION_TYPE,ADMISSION_LOCATION,"
    "DISCHARGE_LOCATION,INSURANCE,LANGUAGE,RELIGION,MARITAL_STATUS,ETHNICITY,EDREGTIME,EDOUTTIME,DIAGNOSIS,"
    "HOSPITAL_EXPIRE_FLAG,HAS_CHARTEVENTS_DATA",
    "DIAGNOSES_ICD": "ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE",
    "D_ICD_DIAGNOSES": "ROW_ID,ICD9_CODE,SHORT_TITLE,LONG_TITLE",
}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
N_BIG = 20_000  # large enough for distribution checks, ~1-2 s to write


def _read(raw: Path, name: str) -> pl.DataFrame:
    return pl.read_csv(raw / f"{name}.csv", infer_schema=False)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """20k simulated patients: raw tables plus per-admission derived columns."""
    raw = tmp_path_factory.mktemp("sim") / "raw"
    rows = write_mimic3_csvs(raw, N_BIG, seed=0)
    ts = "%Y-%m-%d %H:%M:%S"
    patients = _read(raw, "PATIENTS").with_columns(pl.col("DOB").str.to_datetime(ts))
    admissions = (
        _read(raw, "ADMISSIONS")
        .with_columns(pl.col("ADMITTIME", "DISCHTIME").str.to_datetime(ts))
        .join(patients.select("SUBJECT_ID", "GENDER", "DOB"), on="SUBJECT_ID")
        .sort("SUBJECT_ID", "ADMITTIME")
        .with_columns(
            ((pl.col("ADMITTIME") - pl.col("DOB")).dt.total_seconds() / (86400 * 365.25)).alias("age"),
            pl.int_range(pl.len()).over("SUBJECT_ID").alias("k"),
        )
    )
    diagnoses = _read(raw, "DIAGNOSES_ICD")
    visits = (
        diagnoses.group_by("HADM_ID")
        .agg(pl.col("ICD9_CODE"))
        .join(admissions.select("HADM_ID", "SUBJECT_ID", "k", "age", "GENDER"), on="HADM_ID")
    )
    return {
        "raw": raw,
        "rows": rows,
        "patients": patients,
        "admissions": admissions,
        "dx": diagnoses,
        "visits": visits,
    }


# ----------------------------------------------------------------------------- format and determinism


def test_headers_and_value_formats(big: dict) -> None:
    raw = big["raw"]
    for name, header in HEADERS.items():
        with open(raw / f"{name}.csv", newline="") as f:
            first = f.readline().rstrip("\n")
        assert first.replace('"', "") == header, name
        assert first.startswith('"ROW_ID"'), "MIMIC-III quotes header names"
    p, a, d = _read(raw, "PATIENTS"), _read(raw, "ADMISSIONS"), big["dx"]
    assert set(p["GENDER"]) == {"M", "F"}
    assert p["DOB"].str.contains(TIMESTAMP.pattern).all()
    assert p["DOB"].str.ends_with(" 00:00:00").all()
    assert p["DOD"].drop_nulls().str.ends_with(" 00:00:00").all()
    for col in ("ADMITTIME", "DISCHTIME"):
        assert a[col].str.contains(TIMESTAMP.pattern).all()
        years = a[col].str.slice(0, 4).cast(pl.Int32)
        assert years.min() >= 2100 and years.max() <= 2260, "dates shifted into the future as in MIMIC"
    assert set(a["ADMISSION_TYPE"]) == {"EMERGENCY", "ELECTIVE", "URGENT", "NEWBORN"}
    assert a["DIAGNOSIS"].null_count() == 0
    assert d["ICD9_CODE"].str.contains(ICD9_DX_PATTERN).all()
    assert not d["ICD9_CODE"].str.contains(r"\.").any(), "codes are stored without dots"
    titles = _read(raw, "D_ICD_DIAGNOSES")
    assert set(d["ICD9_CODE"]) <= set(titles["ICD9_CODE"])
    assert titles["ICD9_CODE"].is_unique().all()
    hypertension = titles.filter(pl.col("ICD9_CODE") == "4019")
    assert hypertension["LONG_TITLE"].item() == "Unspecified essential hypertension"


def test_returned_counts_match_files(big: dict) -> None:
    for name in HEADERS:
        assert big["rows"][name] == _read(big["raw"], name).height
    assert big["rows"]["PATIENTS"] == N_BIG


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks so that several chunks (and their id offsets) are exercised.
    monkeypatch.setattr(simulator, "CHUNK_PATIENTS", 700)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_mimic3_csvs(a, 2000, seed=7)
    write_mimic3_csvs(b, 2000, seed=7)
    write_mimic3_csvs(c, 2000, seed=8)
    for name in HEADERS:
        assert _sha(a / f"{name}.csv") == _sha(b / f"{name}.csv"), name
    for name in ("PATIENTS", "ADMISSIONS", "DIAGNOSES_ICD"):
        assert _sha(a / f"{name}.csv") != _sha(c / f"{name}.csv"), name
    assert not list(a.glob(".*tmp")), "temporary files are renamed into place"
    _check_ids(a)


def test_id_offset_gives_the_same_patients_under_disjoint_ids(tmp_path: Path, monkeypatch) -> None:
    """Independent truth samples (fidelity benchmark) need ids that never collide."""
    monkeypatch.setattr(simulator, "CHUNK_PATIENTS", 700)
    write_mimic3_csvs(tmp_path / "a", 1500, seed=7)
    write_mimic3_csvs(tmp_path / "b", 1500, seed=7, id_offset=10_000_000)
    for name in ("PATIENTS", "ADMISSIONS", "DIAGNOSES_ICD"):
        a, b = _read(tmp_path / "a", name), _read(tmp_path / "b", name)
        diff = b["SUBJECT_ID"].cast(pl.Int64) - a["SUBJECT_ID"].cast(pl.Int64)
        assert diff.unique().to_list() == [10_000_000], name
        assert a.drop("SUBJECT_ID").equals(b.drop("SUBJECT_ID")), name
    assert SimulatedSource(10, 1).cache_key() != SimulatedSource(10, 1, id_offset=5).cache_key()
    with pytest.raises(InputError, match="id_offset must be an integer >= 0"):
        SimulatedSource(10, 1, id_offset=-1)


def test_failure_leaves_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulator, "CHUNK_PATIENTS", 100)
    real_chunk, calls = simulator._chunk, []

    def failing_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real_chunk(*args, **kwargs)

    monkeypatch.setattr(simulator, "_chunk", failing_chunk)
    with pytest.raises(RuntimeError, match="disk full"):
        write_mimic3_csvs(tmp_path / "raw", 500)
    assert not list((tmp_path / "raw").iterdir())


def test_shift_years_keeps_the_calendar_day() -> None:
    def secs(s: str) -> int:
        return int(np.datetime64(s, "s").astype(np.int64))

    shifted = simulator._shift_years(
        np.array([secs("2104-03-01T12:34:00"), secs("2104-02-29T08:00:00")]), 300
    )
    assert shifted.tolist() == [secs("1804-03-01T00:00:00"), secs("1804-02-29T00:00:00")]
    assert simulator._shift_years(np.array([secs("2104-02-29T08:00:00")]), 1).tolist() == [
        secs("2103-02-28T00:00:00")
    ]


def _check_ids(raw: Path) -> None:
    p, a, d = _read(raw, "PATIENTS"), _read(raw, "ADMISSIONS"), _read(raw, "DIAGNOSES_ICD")
    for table in (p, a, d):
        assert table["ROW_ID"].is_unique().all()
    assert p["SUBJECT_ID"].is_unique().all()
    assert a["HADM_ID"].is_unique().all()
    assert set(a["SUBJECT_ID"]) == set(p["SUBJECT_ID"]), "every patient has an admission and vice versa"
    assert set(d["HADM_ID"]) == set(a["HADM_ID"]), "every admission has a diagnosis and vice versa"
    joined = d.join(a.select("HADM_ID", pl.col("SUBJECT_ID").alias("adm_subject")), on="HADM_ID")
    assert (joined["SUBJECT_ID"] == joined["adm_subject"]).all()
    # SEQ_NUM runs 1..k within each admission, and a code appears once per admission.
    per_visit = d.group_by("HADM_ID").agg(
        pl.col("SEQ_NUM").cast(pl.Int64).sort().alias("seq"),
        pl.col("ICD9_CODE").n_unique().alias("u"),
        pl.len(),
    )
    assert (per_visit["seq"].list.first() == 1).all()
    assert (per_visit["seq"].list.last() == per_visit["len"]).all()
    assert (per_visit["u"] == per_visit["len"]).all()


def test_ids_consistent(big: dict) -> None:
    _check_ids(big["raw"])


def test_timeline_and_deaths(big: dict) -> None:
    a = big["admissions"]
    assert (a["DISCHTIME"] > a["ADMITTIME"]).all()
    nxt = a.with_columns(pl.col("ADMITTIME").shift(-1).over("SUBJECT_ID").alias("next")).drop_nulls("next")
    assert (nxt["next"] > nxt["DISCHTIME"]).all(), "a patient's stays do not overlap"
    dead = a.filter(pl.col("HOSPITAL_EXPIRE_FLAG") == "1")
    assert (dead["DEATHTIME"] == dead["DISCHTIME"].dt.strftime("%Y-%m-%d %H:%M:%S")).all()
    assert (dead["DISCHARGE_LOCATION"] == "DEAD/EXPIRED").all()
    assert a.filter(pl.col("HOSPITAL_EXPIRE_FLAG") == "0")["DEATHTIME"].null_count() == a.height - dead.height
    last = a.group_by("SUBJECT_ID").agg(pl.col("k").max())
    assert (
        dead.join(last, on="SUBJECT_ID", suffix="_max")
        .select(pl.col("k") == pl.col("k_max"))
        .to_series()
        .all()
    )
    p = big["patients"]
    assert ((p["EXPIRE_FLAG"] == "1") == p["DOD"].is_not_null()).all()
    assert set(dead["SUBJECT_ID"]) == set(p.filter(pl.col("DOD_HOSP").is_not_null())["SUBJECT_ID"])
    assert 0.06 < dead.height / a.height < 0.14, "MIMIC-III: ~10% of admissions end in death"
    er = a.filter(pl.col("ADMISSION_LOCATION") == "EMERGENCY ROOM ADMIT")
    assert er["EDREGTIME"].null_count() == 0
    assert a.filter(pl.col("ADMISSION_LOCATION") != "EMERGENCY ROOM ADMIT")["EDREGTIME"].null_count() == (
        a.height - er.height
    )


# ----------------------------------------------------------------------------- realism


def test_demographics_like_mimic(big: dict) -> None:
    a, p = big["admissions"], big["patients"]
    first_age = a.filter(pl.col("k") == 0)["age"].to_numpy()
    assert a.height / p.height == pytest.approx(1.3, abs=0.06)
    assert 0.53 < (p["GENDER"] == "M").mean() < 0.59
    newborn = first_age < 1
    assert 0.065 < newborn.mean() < 0.095
    shifted = first_age > 200
    assert 0.02 < shifted.mean() < 0.07, "a few patients over 89"
    # DOB exactly 300 years before the first admission, as MIMIC-III does
    assert np.all(np.abs(first_age[shifted] - 300.0) < 0.01)
    adults = first_age[~newborn & ~shifted]
    assert adults.min() >= 15 and adults.max() < 90
    assert 58 < np.median(adults) < 72
    assert np.mean((adults >= 50) & (adults <= 85)) > 0.6
    visits = a.group_by("SUBJECT_ID").len()["len"]
    assert (visits == 1).mean() > 0.75 and visits.max() >= 8, "heavy-tailed admissions per patient"


def test_codes_per_visit(big: dict) -> None:
    n = big["visits"]["ICD9_CODE"].list.len()
    assert n.mean() == pytest.approx(11.0, abs=1.0)
    assert n.min() >= 1 and n.max() == 39, "MIMIC-III codes 1-39 diagnoses per admission"


def test_never_violates_validity_rules(big: dict) -> None:
    first = big["admissions"].filter(pl.col("k") == 0).select("SUBJECT_ID", pl.col("age").alias("first_age"))
    v = big["visits"].join(first, on="SUBJECT_ID").with_row_index("visit")
    rows = v.select("visit", "ICD9_CODE").explode("ICD9_CODE")
    codes = sorted(set(rows["ICD9_CODE"]))
    index = {c: i for i, c in enumerate(codes)}
    row, col = rows["visit"].to_numpy(), np.array([index[c] for c in rows["ICD9_CODE"]])
    sex = (v["GENDER"] == "F").cast(pl.Int8).to_numpy()
    for age in (v["first_age"].to_numpy(), v["age"].to_numpy()):  # at the first visit and at this one
        allowed = rules.allowed_code_mask(codes, sex, age)  # [visits, codes]
        assert allowed[row, col].all()
    # ... and the restricted codes do occur, so the check above is not vacuous.
    member = rules.rule_membership(codes)
    used = {r.name: int(member[i, col].sum()) for i, r in enumerate(rules.VALIDITY_RULES)}
    assert min(used.values()) > 20, used


def test_chronic_codes_persist_acute_do_not(big: dict) -> None:
    v = big["visits"].filter(pl.col("k") < 2)
    two = v.group_by("SUBJECT_ID").agg(pl.col("k").n_unique().alias("n")).filter(pl.col("n") == 2)
    v = v.join(two, on="SUBJECT_ID")
    first = v.filter(pl.col("k") == 0).sort("SUBJECT_ID")["ICD9_CODE"].to_list()
    second = v.filter(pl.col("k") == 1).sort("SUBJECT_ID")["ICD9_CODE"].to_list()
    assert len(first) > 1500

    def rates(code: str) -> tuple[float, float]:
        """P(code at visit 2 | at visit 1) and P(code at visit 2 | not at visit 1)."""
        in1 = np.array([code in c for c in first])
        in2 = np.array([code in c for c in second])
        return in2[in1].mean(), in2[~in1].mean()

    for code in ("25000", "4019", "42731", "2449", "496"):
        again, base = rates(code)
        assert again > 0.55 and again > 3 * base, (code, again, base)
    again, base = rates("0389")  # septicemia: acute
    assert again < 0.35


def test_comorbidity_clusters(big: dict) -> None:
    visits = big["visits"]["ICD9_CODE"].to_list()
    n = len(visits)
    count = Counter(c for v in visits for c in set(v))

    def lift(a: str, b: str) -> float:
        both = sum(1 for v in visits if a in v and b in v)
        return both * n / (count[a] * count[b])

    assert lift("0389", "78552") > 5  # septicemia + septic shock
    assert lift("5712", "5723") > 10  # alcoholic cirrhosis + portal hypertension
    assert lift("42731", "V5861") > 2  # atrial fibrillation (25% of admissions) + anticoagulants
    assert lift("25000", "V5867") > 3  # diabetes + insulin
    assert lift("4019", "V3000") == 0  # adults' and newborns' codes never mix


def test_long_tail_of_codes(big: dict) -> None:
    freq = np.sort(np.array(list(Counter(big["dx"]["ICD9_CODE"]).values())))[::-1]
    share = freq / freq.sum()
    assert len(freq) > 600, "several hundred distinct codes occur"
    assert share[: len(freq) // 10].sum() > 0.45, "a head of common codes"
    assert share[len(freq) // 2 :].sum() < 0.15, (
        "and a long tail: the rarer half of the codes is < 15% of rows"
    )
    rank = np.arange(1, len(freq) + 1)
    body = (rank >= 20) & (rank <= 600)
    slope = np.polyfit(np.log(rank[body]), np.log(share[body]), 1)[0]
    assert -1.6 < slope < -0.8, f"Zipf-like rank-frequency slope, got {slope:.2f}"


# ----------------------------------------------------------------------------- the code table


def test_code_table_is_real_billable_icd9(icd9_tables: Path) -> None:
    with open(icd9_tables / "icd9cm_dx_codes_v32.csv", newline="") as f:
        official = {r["code"] for r in csv.DictReader(f)}
    rows = [line.split("|") for line in CODE_TABLE.strip().splitlines()]
    codes = [r[0] for r in rows]
    assert len(codes) >= 500 and len(set(codes)) == len(codes)
    invalid = [c for c in codes if c not in official]
    assert not invalid, f"not billable ICD-9-CM (v32) diagnosis codes: {invalid}"
    assert all(r[1] and r[2] and len(r[1]) <= 24 for r in rows), "short titles fit MIMIC's 24 characters"


def test_conditions_reference_known_codes() -> None:
    world = simulator._world()  # compiles CONDITIONS: raises on an unknown code or a forward dependency
    assert len(world.chronic.names) + len(world.acute.names) == len(CONDITIONS)
    assert len(set(world.chronic.names + world.acute.names)) == len(CONDITIONS)
    # Restricted codes never come from the background: each is gated by its condition.
    member = rules.rule_membership([world.codes[i] for i in world.background_code])
    assert not member.any()


# ----------------------------------------------------------------------------- API and the reader path


@pytest.mark.parametrize("n", [0, -5, 2.5, True, "10"])
def test_bad_n_patients(n: object, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="n_patients"):
        SimulatedSource(n_patients=n)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="n_patients"):
        write_mimic3_csvs(tmp_path, n)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_bad_seed() -> None:
    with pytest.raises(InputError, match="seed"):
        SimulatedSource(n_patients=10, seed=-1)


def test_cache_key() -> None:
    assert SimulatedSource(123, seed=4).cache_key() == {
        "source": "simulated",
        "n_patients": 123,
        "seed": 4,
        "simulator_version": SIMULATOR_VERSION,
    }
    assert SimulatedSource().cache_key()["n_patients"] == 2000


def test_load_through_mimic3_reader(tmp_path: Path) -> None:
    tables = SimulatedSource(n_patients=400, seed=3).load(tmp_path)
    assert tables.name == "simulated"
    assert tables.info["simulator_version"] == SIMULATOR_VERSION and tables.info["n_patients"] == 400
    raw = tmp_path / "raw"
    assert tables.patients.collect().height == 400
    visits = tables.visits.collect()
    assert visits.height == _read(raw, "ADMISSIONS").height
    assert visits["time"].null_count() == 0 and visits["age"].null_count() == 0
    assert tables.diagnoses.collect().height == _read(raw, "DIAGNOSES_ICD").height
    assert tables.descriptions is not None
    assert tables.descriptions.collect().height == len(CODE_TABLE.strip().splitlines())


def test_prepare_builds_clean_valid_cohort(compose_cfg) -> None:
    from ehrgen.data.cohort import Cohort
    from ehrgen.prepare import run

    cfg = compose_cfg("prepare", ["data=simulated", "data.n_patients=1500", "data.seed=2"])
    cohort = Cohort(run(cfg))
    meta = cohort.meta
    assert meta["source"] == "simulated"
    assert meta["drops"] == {}, "the reader keeps every simulated row"
    assert sum(meta["counts"]["patients"].values()) == 1500
    assert meta["info"]["seed"] == 2 and "raw_dir" not in meta["info"]
    df = cohort.read()
    assert (df["age"] == 90.0).sum() > 0, "over-89s are read through MIMIC's 300-year shift"
    assert (df["age"] < 1).sum() > 50
    # Validity on the cohort itself, with the builder's ages (first visit, clamped).
    flat = df.select("sex", "age", pl.col("visits").list.eval(pl.element().struct.field("codes")).alias("c"))
    flat = flat.explode("c").explode("c")
    codes = sorted(set(flat["c"]))
    index = {c: i for i, c in enumerate(codes)}
    allowed = rules.allowed_code_mask(codes, flat["sex"].to_numpy(), flat["age"].to_numpy())
    col = np.array([index[c] for c in flat["c"]])
    assert allowed[np.arange(len(col)), col].all()
    described = cohort.codes()
    assert described["description"].null_count() == 0


def test_gap_effects_name_chronic_conditions() -> None:
    from ehrgen.data.sources.simulator_codes import CONDITIONS, GAP_EFFECTS

    chronic = {c.name for c in CONDITIONS if c.scope == "chronic"}
    assert set(GAP_EFFECTS) <= chronic and all(v < 0 for v in GAP_EFFECTS.values())


ALL_TYPES = ("diagnosis", "procedure", "medication")


@pytest.fixture(scope="module")
def typed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """5,000 simulated patients with procedures and prescriptions, and the same without."""
    root = tmp_path_factory.mktemp("typed")
    rows = write_mimic3_csvs(root / "all", 5000, seed=4, event_types=ALL_TYPES)
    write_mimic3_csvs(root / "dx", 5000, seed=4)
    return {"raw": root / "all", "dx": root / "dx", "rows": rows}


def test_event_tables_only_when_asked_and_diagnoses_unchanged(typed: dict) -> None:
    raw, dx = typed["raw"], typed["dx"]
    assert sorted(p.name for p in dx.iterdir()) == [f"{n}.csv" for n in sorted(simulator.TABLES)]
    assert {p.name for p in raw.iterdir()} == {
        f"{n}.csv"
        for n in (*simulator.TABLES, *(n for names in simulator.TYPED_TABLES.values() for n in names))
    }
    for name in simulator.TABLES:  # procedures and medications come from their own random stream
        assert _sha(raw / f"{name}.csv") == _sha(dx / f"{name}.csv"), name
    assert typed["rows"]["PROCEDURES_ICD"] == _read(raw, "PROCEDURES_ICD").height > 0
    assert typed["rows"]["PRESCRIPTIONS"] == _read(raw, "PRESCRIPTIONS").height > 0
    only_px = tmp = raw.parent / "px"
    write_mimic3_csvs(tmp, 300, seed=4, event_types=("diagnosis", "procedure"))
    assert not (only_px / "PRESCRIPTIONS.csv").exists() and (only_px / "D_ICD_PROCEDURES.csv").exists()


def test_procedures_and_prescriptions_are_mimic_shaped(typed: dict) -> None:
    raw = typed["raw"]
    ts = "%Y-%m-%d %H:%M:%S"
    admissions = _read(raw, "ADMISSIONS").with_columns(pl.col("ADMITTIME", "DISCHTIME").str.to_datetime(ts))
    px = _read(raw, "PROCEDURES_ICD")
    rx = _read(raw, "PRESCRIPTIONS").with_columns(pl.col("STARTDATE", "ENDDATE").str.to_datetime(ts))
    titles = _read(raw, "D_ICD_PROCEDURES")
    assert set(px["ICD9_CODE"]) <= set(titles["ICD9_CODE"])
    assert all(re.fullmatch(r"\d{2,4}", c) for c in titles["ICD9_CODE"])
    # every row belongs to an admission of its own subject
    for table in (px, rx):
        joined = table.join(admissions, on="HADM_ID", how="left", suffix="_adm")
        assert joined["SUBJECT_ID_adm"].null_count() == 0
        assert (joined["SUBJECT_ID"] == joined["SUBJECT_ID_adm"]).all()
    # procedures numbered 1..n within an admission, each code once
    assert (
        px.group_by("HADM_ID")
        .agg(
            (pl.col("SEQ_NUM").cast(pl.Int64).sort() == pl.int_range(1, pl.len() + 1)).all().alias("ok"),
            (pl.col("ICD9_CODE").n_unique() == pl.len()).alias("distinct"),
        )
        .select(pl.col("ok").all() & pl.col("distinct").all())
        .item()
    )
    # orders start on a day of the stay and end after they start
    stay = rx.join(admissions.select("HADM_ID", "ADMITTIME", "DISCHTIME"), on="HADM_ID")
    assert (stay["STARTDATE"] >= stay["ADMITTIME"].dt.truncate("1d")).all()
    assert (stay["STARTDATE"] <= stay["DISCHTIME"]).all() and (stay["ENDDATE"] > stay["STARTDATE"]).all()
    # MIMIC-like rates: several procedures and many orders (medicines ordered more than once)
    n_adm = admissions.height
    assert 2.0 < px.height / n_adm < 5.0
    per_adm = rx.group_by("HADM_ID").agg(pl.len().alias("rows"), pl.col("DRUG").n_unique().alias("drugs"))
    assert 10 < per_adm["drugs"].mean() < 30 and 1.8 < (per_adm["rows"] / per_adm["drugs"]).mean() < 2.8


def test_treatments_follow_the_latent_conditions(typed: dict) -> None:
    """Who gets a treatment depends on the diagnoses the same condition emits, as in real data."""
    raw = typed["raw"]
    dx = _read(raw, "DIAGNOSES_ICD")
    rx = _read(raw, "PRESCRIPTIONS")
    px = _read(raw, "PROCEDURES_ICD")
    admissions = _read(raw, "ADMISSIONS").select("HADM_ID")

    def share(with_dx: pl.Series, given: pl.DataFrame, column: str, value: str) -> tuple[float, float]:
        treated = set(given.filter(pl.col(column) == value)["HADM_ID"])
        has = admissions["HADM_ID"].is_in(with_dx.implode())
        got = admissions["HADM_ID"].is_in(pl.Series(list(treated)).implode())
        return float(got.filter(has).mean()), float(got.filter(~has).mean())

    diabetic = dx.filter(pl.col("ICD9_CODE").str.starts_with("250"))["HADM_ID"]
    with_dm, without_dm = share(diabetic, rx, "DRUG", "MetFORMIN (Glucophage)")
    assert with_dm > 5 * without_dm
    newborn = _read(raw, "ADMISSIONS").filter(pl.col("ADMISSION_TYPE") == "NEWBORN")["HADM_ID"]
    vit_k, adults_vit_k = share(newborn, rx, "DRUG", "Phytonadione")
    assert vit_k > 0.8 and adults_vit_k == 0.0  # newborn routine only
    mi = dx.filter(pl.col("ICD9_CODE").str.starts_with("410"))["HADM_ID"]
    cath_mi, cath_other = share(mi, px, "ICD9_CODE", "8856")
    assert cath_mi > 10 * cath_other


def test_typed_source_prepares_every_event_type(tmp_path: Path) -> None:
    from ehrgen.data.build import row_accounting
    from ehrgen.data.cohort import Cohort

    source = SimulatedSource(n_patients=600, seed=5, event_types=None)
    assert source.event_types == ALL_TYPES
    assert source.cache_key()["event_types"] == list(ALL_TYPES)
    assert "event_types" not in SimulatedSource(600, 5, event_types=["diagnosis"]).cache_key()
    tables = source.load(tmp_path / "work")
    assert tables.procedures is not None and tables.medications is not None
    from ehrgen.data.build import build_cohort

    out = tmp_path / "cohort"
    meta = build_cohort(tables, out)
    assert set(Cohort(out).codes()["type"]) == set(ALL_TYPES)
    for table, n in row_accounting(meta).items():
        assert n["input"] == n["used"] + n["dropped"], table
    raw = tmp_path / "work" / "raw"
    assert meta["input_rows"]["medications"] == _read(raw, "PRESCRIPTIONS").height
    assert set(meta["drops"]) == {"medication_duplicate_in_visit"}, "only repeated orders are dropped"
