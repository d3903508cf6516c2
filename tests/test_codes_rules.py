"""ICD-9 code normalisation, the category rule against the official tables, and the validity rules."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ehrgen.data.codes import (
    category_expr,
    category_of,
    display_code,
    is_icd9_dx,
    normalize_code,
    normalize_code_expr,
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
