"""Out-of-core prepare: event tables processed in parts of whole patients give the same cohort."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from ehrgen.data.partition import number_of_parts, part_bounds, part_expr, part_of
from ehrgen.prepare import run
from tests.test_prepare import ADMISSIONS, DIAGNOSES, PATIENTS, _write

# cohort.json fields that differ between two runs by nature (time, the options that were given)
VOLATILE = ("created", "options")


def _files(cohort: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(cohort)): p.read_bytes()
        for p in sorted(cohort.rglob("*"))
        if p.is_file() and p.name not in ("cohort.json", ".ehrgen-output.json")
    }


def _meta(cohort: Path) -> dict:
    meta = json.loads((cohort / "metadata" / "cohort.json").read_text())
    return {k: v for k, v in meta.items() if k not in VOLATILE}


def _same_cohort(a: Path, b: Path) -> None:
    files_a, files_b = _files(a), _files(b)
    assert files_a.keys() == files_b.keys()
    for name in files_a:
        assert files_a[name] == files_b[name], f"{name} differs"
    meta_a, meta_b = _meta(a), _meta(b)
    for key in meta_a.keys() | meta_b.keys():
        assert meta_a.get(key) == meta_b.get(key), key


def _prepare(compose_cfg, out: Path, *overrides: str) -> Path:
    return run(compose_cfg("prepare", [*overrides, f"data.cohort_dir={out}"]))


def test_parts_are_contiguous_equal_subject_ranges() -> None:
    bounds = part_bounds(pl.Series([9, 3, 7, 1, 5, 11, 2]), 3)
    assert bounds.tolist() == [3, 7]
    ids = pl.Series("subject_id", [None, 0, 1, 2, 3, 5, 6, 7, 11, 99], dtype=pl.Int64)
    expected = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]  # unknown ids fall in the range that holds them
    assert part_of(ids.fill_null(0), bounds).tolist() == expected
    streamed = pl.LazyFrame({"subject_id": ids}).select(part_expr(bounds)).collect(engine="streaming")
    assert streamed.to_series().to_list() == expected, "the spill's expression agrees with part_of"
    assert part_bounds(pl.Series([4, 8]), 5).tolist() == [4, 4, 8, 8], "more parts than patients: empty parts"
    assert number_of_parts(10, None) == 1 and number_of_parts(10, 10) == 1 and number_of_parts(11, 5) == 3


@pytest.mark.parametrize("rows_per_part", [1, 3])
def test_bad_rows_fixture_in_parts(tmp_path: Path, compose_cfg, rows_per_part: int) -> None:
    """Rows naming unknown, dropped or other patients' admissions are counted as in memory."""
    mismatch = [13, 2, 100, 5, "4280"]  # subject 2 naming subject 1's admission (another part)
    tables = {"PATIENTS": PATIENTS, "ADMISSIONS": ADMISSIONS, "DIAGNOSES_ICD": [*DIAGNOSES, mismatch]}
    raw = _write(tmp_path / "raw", tables)
    base = ["data=mimic3", f"data.raw_dir={raw}"]
    whole = _prepare(compose_cfg, tmp_path / "whole", *base, "data.rows_per_part=null")
    parts = _prepare(compose_cfg, tmp_path / "parts", *base, f"data.rows_per_part={rows_per_part}")
    _same_cohort(whole, parts)
    assert _meta(parts)["drops"]["diagnosis_subject_mismatch"] == 1


def test_demo_with_every_event_type_in_parts(tmp_path: Path, compose_cfg, mimic3_demo: Path) -> None:
    base = ["data=mimic3", f"data.raw_dir={mimic3_demo}"]
    whole = _prepare(compose_cfg, tmp_path / "whole", *base, "data.rows_per_part=null")
    parts = _prepare(compose_cfg, tmp_path / "parts", *base, "data.rows_per_part=2000")
    _same_cohort(whole, parts)
    assert set(pl.read_parquet(whole / "metadata" / "codes.parquet")["type"]) == {
        "diagnosis",
        "procedure",
        "medication",
    }


def test_icd_map_chooses_by_the_whole_cohort_in_parts(tmp_path: Path, compose_cfg) -> None:
    """GEM alternatives are chosen by usage over every part, so parts translate as memory does."""
    base = [
        "data=simulated",
        "data.n_patients=1500",
        "data.seed=3",
        "data.event_types=null",
        "data.icd_map.to=10",
    ]
    whole = _prepare(compose_cfg, tmp_path / "whole", *base, "data.rows_per_part=null")
    parts = _prepare(compose_cfg, tmp_path / "parts", *base, "data.rows_per_part=20000")
    _same_cohort(whole, parts)
    meta = json.loads((parts / "metadata" / "cohort.json").read_text())
    assert meta["icd_map"]["codes_added"] > 0
    assert sum(meta["input_rows"][t] for t in ("diagnoses", "procedures", "medications")) > 3 * 20000


def test_parts_log_and_spill_into_the_scratch_folder(tmp_path: Path, compose_cfg, caplog) -> None:
    base = ["data=simulated", "data.n_patients=400", "data.event_types=null", "data.rows_per_part=5000"]
    with caplog.at_level("INFO", logger="ehrgen.data.build"):
        out = _prepare(compose_cfg, tmp_path / "c", *base)
    assert any(
        "processed in" in r.getMessage() and "parts of whole patients" in r.getMessage()
        for r in caplog.records
    )
    assert not (out / ".scratch").exists(), "the spilled event rows are removed with the scratch folder"
