"""Code normalisation (ICD-9-CM, ICD-10-CM), the category rule against the official ICD-9 tables,
and the validity rules."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ehrgen.data.codes import (
    category_expr,
    category_of,
    code_system,
    display_code,
    drug_key,
    event_type,
    event_type_expr,
    is_diagnosis_code,
    is_icd9_dx,
    is_icd10_dx,
    is_known_code,
    normalize_code,
    normalize_code_expr,
    with_system_expr,
)
from ehrgen.data.rules import FEMALE, MALE, VALIDITY_RULES, allowed_code_mask, rule_membership


@pytest.mark.parametrize(
    ("raw", "norm"), [(" 401.9", "4019"), ("v58.61", "V5861"), ("e849.7", "E8497"), ("250 00", "25000")]
)
def test_normalize(raw: str, norm: str) -> None:
    assert normalize_code(raw) == norm
    assert pl.select(normalize_code_expr(pl.lit(raw))).item() == norm


def test_shapes_and_display() -> None:
    assert all(is_icd9_dx(c) for c in ["4019", "001", "25000", "V5861", "V27", "E8497", "E849"])
    assert not any(is_icd9_dx(c) for c in ["I10", "40", "401999", "V1", "E84", "4019A", ""])
    assert [display_code(c) for c in ["4019", "E8497", "V5861", "042"]] == [
        "401.9",
        "E849.7",
        "V58.61",
        "042",
    ]


def test_icd10_codes_are_marked_and_never_taken_for_icd9() -> None:
    good = [
        "ICD10CM:I10",
        "ICD10CM:E119",
        "ICD10CM:O9A211",
        "ICD10CM:S72001A",
        "ICD10CM:U071",
        "ICD10CM:Z3A20",
    ]
    bad = ["I10", "ICD10CM:4019", "ICD10CM:I1", "ICD10CM:I10000000", "ICD10CM:1I0", "icd10cm:I10", "ICD10CM:"]
    assert all(is_icd10_dx(c) and is_diagnosis_code(c) and not is_icd9_dx(c) for c in good)
    assert not any(is_icd10_dx(c) for c in bad)
    assert not is_diagnosis_code("I10") and is_diagnosis_code("4019")
    assert normalize_code("ICD10CM:e11.9") == "ICD10CM:E119"
    # ICD-9 E871 (a misadventure) and ICD-10 E87.1 (hypo-osmolality) stay two codes, two categories
    assert category_of("E8710") == "E871" and category_of("ICD10CM:E871") == "ICD10CM:E87"
    assert [code_system(c) for c in ["E8710", "ICD10CM:E871"]] == ["icd9cm", "icd10cm"]
    assert [display_code(c) for c in ["ICD10CM:E119", "ICD10CM:I10", "ICD10CM:S72001A"]] == [
        "ICD10CM:E11.9",
        "ICD10CM:I10",
        "ICD10CM:S72.001A",
    ]
    frame = pl.DataFrame({"code": ["E119", "4019", "E8497"], "version": [10, 9, 9]})
    marked = frame.select(with_system_expr("code", "version"))["code"].to_list()
    assert marked == ["ICD10CM:E119", "4019", "E8497"]
    assert pl.DataFrame({"c": marked}).select(category_expr("c"))["c"].to_list() == [
        "ICD10CM:E11",
        "401",
        "E849",
    ]


def test_category_rule_agrees_with_official_tables(icd9_tables: Path) -> None:
    with open(icd9_tables / "icd9cm_dx_codes_v32.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 14567
    mismatches = [(r["code"], r["category"]) for r in rows if category_of(r["code"]) != r["category"]]
    assert mismatches == []
    frame = pl.DataFrame({"code": [r["code"] for r in rows]})
    assert frame.select(category_expr("code"))["code"].to_list() == [r["category"] for r in rows]
    with open(icd9_tables / "icd9cm_categories.csv", newline="") as f:
        categories = {r["code"] for r in csv.DictReader(f)}
    assert {r["category"] for r in rows} <= categories


def test_rule_table_covers_the_documented_ranges(icd9_tables: Path) -> None:
    with open(icd9_tables / "icd9cm_dx_codes_v32.csv", newline="") as f:
        codes = [r["code"] for r in csv.DictReader(f)]
    member = rule_membership(codes)
    by_name = {rule.name: member[i] for i, rule in enumerate(VALIDITY_RULES)}

    def expect(prefix_ranges: list[tuple[str, int, int]]) -> np.ndarray:
        out = []
        for c in codes:
            letter = c[0] if c[0] in "VE" else ""
            num = int(c[len(letter) : len(letter) + (2 if letter == "V" else 3)]) if letter != "E" else -1
            out.append(any(letter == p and lo <= num <= hi for p, lo, hi in prefix_ranges))
        return np.array(out)

    np.testing.assert_array_equal(
        by_name["pregnancy"], expect([("", 630, 679), ("V", 22, 24), ("V", 27, 27)])
    )
    np.testing.assert_array_equal(by_name["perinatal"], expect([("", 760, 779), ("V", 29, 39)]))
    np.testing.assert_array_equal(by_name["male_genital"], expect([("", 600, 608), ("", 185, 185)]))
    np.testing.assert_array_equal(by_name["female_genital"], expect([("", 614, 629), ("", 179, 184)]))


def test_allowed_mask_by_demographics() -> None:
    codes = ["65000", "V3000", "1850", "6140", "4019"]
    sex = np.array([FEMALE, FEMALE, MALE, FEMALE, MALE])
    age = np.array([30.0, 60.0, 0.2, 11.9, 70.0])
    mask = allowed_code_mask(codes, sex, age)
    expected = np.array(
        [
            [True, False, False, True, True],  # woman 30: pregnancy ok, perinatal no, prostate no
            [False, False, False, True, True],  # woman 60: too old for pregnancy
            [False, True, True, False, True],  # newborn boy
            [False, False, False, True, True],  # girl 11.9: too young for pregnancy
            [False, False, True, False, True],  # man 70
        ]
    )
    np.testing.assert_array_equal(mask, expected)


# ICD-10-CM codes each rule must cover (and codes next to its ranges it must not), by the
# classification's chapters: pregnancy O00-O9A and the Z33-Z3A pregnancy/delivery codes,
# perinatal P00-P96 with Z05 (newborn observation) and Z38 (liveborn), male N40-N53 and C60-C63,
# female N70-N98 and C51-C58.
ICD10_RULE_CASES = {
    "pregnancy": (
        ["O000", "O80", "O9A211", "O99891", "Z331", "Z3400", "Z370", "Z390", "Z3A20"],
        ["Z38", "Z3800", "N979", "Z30011"],
    ),
    "perinatal": (["P0732", "P599", "P960", "Z3800", "Z051"], ["Q211", "O80", "Z0489", "Z390"]),
    "male_genital": (["N400", "N5201", "N539", "C61", "C600", "C629"], ["N39", "N99", "C64", "C509"]),
    "female_genital": (
        ["N700", "N800", "N952", "N989", "C519", "C569", "C58"],
        ["N99", "N69", "C50911", "C59"],
    ),
}


@pytest.mark.parametrize("name", list(ICD10_RULE_CASES))
def test_rules_cover_icd10_ranges(name: str) -> None:
    inside, outside = ICD10_RULE_CASES[name]
    rule = next(r for r in VALIDITY_RULES if r.name == name)
    assert all(rule.covers(f"ICD10CM:{c}") for c in inside), [
        c for c in inside if not rule.covers(f"ICD10CM:{c}")
    ]
    assert not any(rule.covers(f"ICD10CM:{c}") for c in outside)
    # the same strings unmarked are ICD-9 codes (or none), judged by the ICD-9 ranges only
    assert not rule.covers("O80") and not rule.covers("C61")


def test_allowed_mask_mixes_icd9_and_icd10() -> None:
    codes = ["65000", "ICD10CM:O80", "ICD10CM:P0732", "ICD10CM:C61", "ICD10CM:N800", "ICD10CM:I10"]
    sex = np.array([FEMALE, MALE, FEMALE])
    age = np.array([30.0, 0.1, 70.0])
    expected = np.array(
        [
            [True, True, False, False, True, True],  # woman 30
            [False, False, True, True, False, True],  # newborn boy
            [False, False, False, False, True, True],  # woman 70
        ]
    )
    np.testing.assert_array_equal(allowed_code_mask(codes, sex, age), expected)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("5% Dextrose", "dextrose"),
        ("Potassium Chloride (Powder)", "potassium chloride"),
        ("Sodium Chloride 0.9%  Flush", "sodium chloride flush"),
        ("Heparin 5000 units", "heparin"),
        ("Insulin 100 units/mL", "insulin"),
        ("D5W", "d5w"),
        ("Vitamin B12", "vitamin b12"),
        ("*NF* Ertapenem Sodium", "ertapenem sodium"),
        ("1000", ""),
    ],
)
def test_drug_key_keeps_the_ingredient(name: str, key: str) -> None:
    assert drug_key(name) == key
    assert drug_key(key) == key  # idempotent: an exported key reads back as itself
    assert normalize_code(f"RX:{name}") == f"RX:{key}"


def test_event_types_shapes_and_categories() -> None:
    cases = {
        "4019": ("diagnosis", "401", "401.9"),
        "ICD10CM:E119": ("diagnosis", "ICD10CM:E11", "ICD10CM:E11.9"),
        "ICD9PCS:3893": ("procedure", "ICD9PCS:38", "ICD9PCS:38.93"),
        "ICD9PCS:966": ("procedure", "ICD9PCS:96", "ICD9PCS:96.6"),
        "ICD10PCS:02HV33Z": ("procedure", "ICD10PCS:02H", "ICD10PCS:02HV33Z"),
        "RX:potassium chloride": ("medication", "RX:potassium chloride", "RX:potassium chloride"),
    }
    for code, (kind, category, shown) in cases.items():
        assert (event_type(code), category_of(code), display_code(code)) == (kind, category, shown)
        assert is_known_code(code)
    frame = pl.DataFrame({"c": list(cases)})
    assert frame.select(category_expr("c"))["c"].to_list() == [v[1] for v in cases.values()]
    assert frame.select(event_type_expr("c"))["literal"].to_list() == [v[0] for v in cases.values()]
    bad = ["ICD9PCS:1", "ICD9PCS:38931", "ICD10PCS:02HV33", "ICD10PCS:02HVI3Z", "RX:", "RX:Heparin", "RX:5mg"]
    assert not any(is_known_code(c) for c in bad)
    assert not is_diagnosis_code("ICD9PCS:3893")  # the procedure shape of 38.93 is no diagnosis
