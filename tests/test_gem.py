"""ICD-9-CM <-> ICD-10-CM through the GEMs: the shipped files, the translation rule, prepare with it."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from ehrgen.data.build import row_accounting
from ehrgen.data.cohort import Cohort
from ehrgen.data.gem import SHIPPED_GEM_DIR, IcdMap, gem_targets, read_gem
from ehrgen.errors import InputError
from ehrgen.prepare import run as prepare
from tests.conftest import compose_config
from tests.test_source_mimic4 import write_hosp


def targets(icd_map: IcdMap, codes: list[str]) -> dict[str, list[str] | None]:
    frame = icd_map.targets(pl.Series(codes))
    return dict(zip(frame["code"], frame["targets"].to_list(), strict=True))


def test_shipped_gems_are_complete_cms_files() -> None:
    forward = read_gem(SHIPPED_GEM_DIR / "icd9cm_to_icd10cm.gem.gz")
    backward = read_gem(SHIPPED_GEM_DIR / "icd10cm_to_icd9cm.gem.gz")
    assert (forward.height, backward.height) == (23912, 78838)
    # every ICD-9 source has a translation or an explicit "no map"; no-map rows say NoDx
    assert forward.filter(pl.col("no_map"))["target"].unique().to_list() == ["NoDx"]
    assert gem_targets(forward)["source"].n_unique() == forward["source"].n_unique()


def test_known_translations_both_ways() -> None:
    assert targets(
        IcdMap(10), ["4019", "25000", "4280", "V3000", "0730", "36570", "ICD10CM:I10", "0009"]
    ) == {
        "4019": ["ICD10CM:I10"],
        "25000": ["ICD10CM:E119"],
        "4280": ["ICD10CM:I509"],
        "V3000": ["ICD10CM:Z3800"],
        "0730": ["ICD10CM:A70", "ICD10CM:J17"],  # ornithosis with pneumonia: a combination
        "36570": [],  # no map
        "ICD10CM:I10": ["ICD10CM:I10"],  # already in the target system
        "0009": None,  # not in the GEM
    }
    assert targets(IcdMap(9), ["ICD10CM:E1122", "ICD10CM:A021", "ICD10CM:R402130", "4019"]) == {
        "ICD10CM:E1122": ["25040"],
        "ICD10CM:A021": ["0031", "99591"],  # Salmonella sepsis: the infection and the sepsis
        "ICD10CM:R402130": [],
        "4019": ["4019"],
    }


# CMS's layout: source, target, flags (approximate, no map, combination, scenario, choice list).
TOY_GEM = """\
1000  A001    10000
1000  A000    10000
2000  B001    10111
2000  C001    10112
2000  C002    10112
2000  B009    10121
2000  D009    10122
3000  NoDx    11000
4000  E001    10000
4000  E002    10111
4000  F002    10112
"""


def test_translation_rule_on_a_toy_gem(tmp_path: Path) -> None:
    (tmp_path / "2018_I9gem.txt").write_text(TOY_GEM)
    got = targets(IcdMap(10, str(tmp_path)), ["1000", "2000", "3000", "4000"])
    assert got == {
        "1000": ["ICD10CM:A001"],  # alternatives: the first listed
        "2000": ["ICD10CM:B001", "ICD10CM:C001"],  # combination: scenario 1, first of each choice list
        "3000": [],
        "4000": ["ICD10CM:E001"],  # a plain entry wins over combinations
    }
    # the data's own use of target codes decides among alternatives (ICD-9 codes never count)
    usage = pl.DataFrame(
        {"code": ["ICD10CM:A000", "ICD10CM:C002", "A001", "ICD10CM:A001"], "n": [5, 2, 50, 1]}
    )
    got = IcdMap(10, str(tmp_path)).targets(pl.Series(["1000", "2000"]), usage)
    assert got["targets"].to_list() == [["ICD10CM:A000"], ["ICD10CM:B001", "ICD10CM:C002"]]


@pytest.mark.parametrize(
    ("text", "message"),
    [("1000 A001 10000\n1000 A000\n", r"2018_I9gem\.txt, line 2: expected 'source target flags'"),
     ("1000 A001 1x000\n", r"line 1: expected"),
     ("\n", "no GEM rows")],
)  # fmt: skip
def test_bad_gem_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "2018_I9gem.txt").write_text(text)
    with pytest.raises(InputError, match=message):
        IcdMap(10, str(tmp_path)).targets(pl.Series(["1000"]))


def test_gem_dir_and_target_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="gem_dir=.*not a folder"):
        IcdMap(10, str(tmp_path / "nowhere")).targets(pl.Series(["4019"]))
    with pytest.raises(InputError, match=r"no GEM file for ICD-10 -> ICD-9.*2018_I10gem"):
        IcdMap(9, str(tmp_path)).targets(pl.Series(["4019"]))
    with pytest.raises(InputError, match=r"icd_map\.to=11"):
        IcdMap(11)
    (tmp_path / "2018_I10gem.txt.gz").write_bytes(gzip.compress(b"E119 25000 10000\n"))
    assert targets(IcdMap(9, str(tmp_path)), ["ICD10CM:E119"]) == {"ICD10CM:E119": ["25000"]}


def prepare_mimic4(tmp_path: Path, *overrides: str) -> Cohort:
    root = write_hosp(tmp_path / "mimiciv" / "hosp").parent
    cfg = compose_config(
        "prepare",
        ["data=mimic4", f"data.raw_dir={root}", f"data.cohort_dir={tmp_path / 'cohort'}", *overrides],
    )
    return Cohort(prepare(cfg))


def test_prepare_into_one_vocabulary(tmp_path: Path) -> None:
    ten = prepare_mimic4(tmp_path / "ten", "data.icd_map.to=10")
    rows = {r["subject_id"]: [v["codes"] for v in r["visits"]] for r in ten.read().to_dicts()}
    # the fixture's 4019, V5861, 25000, E8497, 41401 in ICD-10-CM (GEM: I10, Z7901, E119, W1830XA, I2510)
    assert rows[1] == [["ICD10CM:I10", "ICD10CM:Z7901"], ["ICD10CM:E119", "ICD10CM:I10"]]
    assert rows[3] == [["ICD10CM:E119", "ICD10CM:I10"]]
    assert ten.codes()["code"].str.starts_with("ICD10CM:").all()
    # visit 100: 4019 -> I10 and ICD-10 I10 are one code now: the repeat is counted, not kept
    assert ten.meta["drops"]["duplicate_code_in_visit"] == 1
    assert ten.meta["icd_map"] == {"to": 10, "gem": "icd9cm_to_icd10cm.gem.gz", "codes_added": 0}
    accounting = row_accounting(ten.meta)["diagnoses"]
    assert accounting["input"] == accounting["used"] + accounting["dropped"] == 14

    nine = prepare_mimic4(tmp_path / "nine", "data.icd_map.to=9")
    rows = {r["subject_id"]: [v["codes"] for v in r["visits"]] for r in nine.read().to_dicts()}
    # ICD-10 I10 -> 401.0, 401.1 or 401.9 in the GEM: the data's own 4019 is chosen, then merged
    assert rows[1][0] == ["4019", "V5861"]
    assert rows[3] == [["25000", "4019"]]
    assert not nine.codes()["code"].str.starts_with("ICD10CM:").any()
    accounting = row_accounting(nine.meta)["diagnoses"]
    assert accounting["input"] == accounting["used"] + accounting["dropped"]


def test_prepare_counts_codes_the_gem_cannot_translate(tmp_path: Path) -> None:
    (tmp_path / "gems").mkdir()
    (tmp_path / "gems" / "2018_I9gem.txt").write_text("4019 I10 10000\n25000 NoDx 11000\n")
    cohort = prepare_mimic4(tmp_path, "data.icd_map.to=10", f"data.icd_map.gem_dir={tmp_path / 'gems'}")
    drops = cohort.meta["drops"]
    assert drops["diagnosis_no_gem_map"] == 1  # 25000
    assert drops["diagnosis_not_in_gem"] == 3  # V5861, E8497, 41401 are not in this GEM
    assert set(cohort.codes()["code"]) == {"ICD10CM:I10", "ICD10CM:E119"}
    accounting = row_accounting(cohort.meta)["diagnoses"]
    assert accounting["input"] == accounting["used"] + accounting["dropped"]


def test_prepare_adds_the_codes_of_a_combination(tmp_path: Path) -> None:
    (tmp_path / "gems").mkdir()
    (tmp_path / "gems" / "2018_I10gem.txt").write_text("E119 25000 10000\nI10 4019 10111\nI10 5849 10112\n")
    cohort = prepare_mimic4(tmp_path, "data.icd_map.to=9", f"data.icd_map.gem_dir={tmp_path / 'gems'}")
    rows = {r["subject_id"]: [v["codes"] for v in r["visits"]] for r in cohort.read().to_dicts()}
    assert rows[3] == [["25000", "4019", "5849"]]  # E11.9; I10 as the combination 401.9 + 584.9
    assert cohort.meta["icd_map"]["codes_added"] == 2  # one per translated I10 row
    accounting = row_accounting(cohort.meta)["diagnoses"]
    assert accounting["input"] == accounting["used"] + accounting["dropped"] == 14


def test_missing_gem_dir_fails_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="gem_dir=.*not a folder"):
        prepare_mimic4(tmp_path, "data.icd_map.to=10", f"data.icd_map.gem_dir={tmp_path / 'none'}")
    assert not (tmp_path / "cohort").exists()
