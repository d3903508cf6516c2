"""ICD-9 and ICD-10 side by side, as MIMIC-IV has them: prepare, train (flat and hierarchical),
generate, export and evaluate on a MIMIC-IV-shaped fixture whose later admissions are ICD-10."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from ehrgen.data.codes import ICD10CM_PREFIX, category_of, is_icd10_dx
from ehrgen.data.cohort import Cohort
from ehrgen.data.gem import IcdMap
from ehrgen.data.rules import VALIDITY_RULES
from ehrgen.evaluate import run as evaluate
from ehrgen.generate import run as generate
from ehrgen.module import PromptBartModule
from ehrgen.prepare import run as prepare
from ehrgen.sampling.exporters import write_mimic4_csv
from ehrgen.train import run as train
from tests.conftest import compose_config
from tests.test_train import TINY

pytestmark = pytest.mark.slow


def recode_later_admissions(hosp: Path) -> float:
    """Rewrite ``diagnoses_icd`` so admissions from the median admission time on are coded in
    ICD-10-CM (GEM translation of their ICD-9 codes), as MIMIC-IV switched in October 2015.
    Returns the share of ICD-10 rows."""
    admissions = pl.read_csv(hosp / "admissions.csv", try_parse_dates=True)
    cut = admissions["admittime"].median()
    later = admissions.filter(pl.col("admittime") >= cut)["hadm_id"]
    dx = pl.read_csv(hosp / "diagnoses_icd.csv", schema_overrides={"icd_code": pl.Utf8})
    targets = IcdMap(10).targets(dx["icd_code"].unique())
    dx = (
        dx.join(targets, left_on="icd_code", right_on="code", how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col("hadm_id").is_in(later.implode()) & (pl.col("targets").list.len() > 0))
            .then(pl.col("targets").list.eval(pl.element().str.slice(len(ICD10CM_PREFIX))))
            .otherwise(pl.concat_list("icd_code"))
            .alias("icd_code"),
            pl.when(pl.col("hadm_id").is_in(later.implode()) & (pl.col("targets").list.len() > 0))
            .then(10)
            .otherwise(9)
            .alias("icd_version"),
        )
        .explode("icd_code")
        .with_columns(pl.int_range(1, pl.len() + 1).over("hadm_id").alias("seq_num"))
        .select("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version")
    )
    with gzip.open(hosp / "diagnoses_icd.csv.gz", "wb") as f:
        dx.write_csv(f)
    (hosp / "diagnoses_icd.csv").unlink()
    return float((dx["icd_version"] == 10).mean())


@pytest.fixture(scope="module")
def mimic4_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("mixed")
    simulated = prepare(
        compose_config("prepare", ["data.n_patients=400", f"data.cohort_dir={tmp / 'sim'}"], tmp)
    )
    root = write_mimic4_csv(simulated, tmp / "mimiciv", seed=0)
    share = recode_later_admissions(root / "hosp")
    assert 0.3 < share < 0.7
    return root


@pytest.fixture(scope="module")
def runs(mimic4_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("runs")
    data = ["data=mimic4", f"data.raw_dir={mimic4_raw}", f"data.cohort_dir={tmp / 'cohort'}"]
    out = {}
    for model in ("flat", "hierarchical"):
        cfg = compose_config("train", [*TINY, *data, f"model={model}", "trainer.max_steps=8"], tmp / model)
        out[model] = train(cfg)
    return out


def test_mimic4_with_icd10_prepares_every_row(mimic4_raw: Path, runs: dict) -> None:
    cohort = Cohort(runs["flat"]["cohort_dir"])
    dx = pl.read_csv(mimic4_raw / "hosp" / "diagnoses_icd.csv.gz", schema_overrides={"icd_code": pl.Utf8})
    # an independent reading of the raw file: distinct (admission, code, version) rows
    distinct = dx.unique(["hadm_id", "icd_code", "icd_version"]).height
    assert sum(cohort.meta["counts"]["codes"].values()) == distinct
    assert "icd10_rows" not in cohort.meta["drops"]
    codes = cohort.codes()["code"]
    ten = codes.filter(codes.str.starts_with(ICD10CM_PREFIX))
    assert ten.len() > 20 and all(is_icd10_dx(c) for c in ten)
    assert codes.len() - ten.len() > 20
    # every validity rule has ICD-10 codes to forbid, so the generation checks below are not vacuous
    assert all(any(rule.covers(c) for c in ten) for rule in VALIDITY_RULES)


@pytest.mark.parametrize("model", ["flat", "hierarchical"])
def test_models_generate_both_systems_validly(runs: dict, model: str, tmp_path: Path) -> None:
    summary = runs[model]
    ckpt = summary["best_checkpoint"] or summary["last_checkpoint"]
    tokenizer = PromptBartModule.load(ckpt).tokenizer
    if model == "hierarchical":
        assert any(c.startswith(ICD10CM_PREFIX) for c in tokenizer.categories)
    out = tmp_path / "gen"
    cfg = compose_config(
        "generate",
        [f"ckpt={ckpt}", "n_patients=60", f"out_dir={out}", "formats=[cohort,mimic4,meds]", "progress=false"],
        tmp_path,
    )
    generate(cfg)
    frame = Cohort(out / "cohort").read()
    real_codes = set(Cohort(summary["cohort_dir"]).codes()["code"])
    generated = [c for visits in frame["visits"].to_list() for v in visits for c in v["codes"]]
    assert set(generated) <= real_codes
    assert any(c.startswith(ICD10CM_PREFIX) for c in generated)
    assert any(not c.startswith(ICD10CM_PREFIX) for c in generated)
    for r in frame.iter_rows(named=True):
        for visit in r["visits"]:
            for code in visit["codes"]:
                assert not any(
                    rule.covers(code) and not rule.allows(r["sex"], r["age"]) for rule in VALIDITY_RULES
                )
            if model == "hierarchical":  # each code is drawn inside one of the model's categories
                assert {category_of(c) for c in visit["codes"]} <= set(tokenizer.categories)
    # the MIMIC-IV export reads back into the same codes
    back = Cohort(
        prepare(
            compose_config(
                "prepare",
                ["data=mimic4", f"data.raw_dir={out / 'mimic4'}", f"data.cohort_dir={tmp_path / 'back'}"],
                tmp_path,
            )
        )  # fmt: skip
    ).read()
    assert back.sort("subject_id")["visits"].list.eval(pl.element().struct.field("codes")).to_list() == (
        frame.sort("subject_id")["visits"].list.eval(pl.element().struct.field("codes")).to_list()
    )


def test_evaluate_scores_both_systems(runs: dict, tmp_path: Path) -> None:
    summary = runs["flat"]
    ckpt = summary["best_checkpoint"] or summary["last_checkpoint"]
    generate(compose_config("generate", [f"ckpt={ckpt}", "n_patients=80", f"out_dir={tmp_path / 'gen'}", "progress=false"], tmp_path))  # fmt: skip
    cfg = compose_config(
        "evaluate",
        [
            f"real={summary['cohort_dir']}",
            f"synthetic={tmp_path / 'gen' / 'cohort'}",
            f"out_dir={tmp_path / 'eval'}",
            "bootstrap.n=10",
            "privacy.workers=1",
            "conditioning.min_stratum_patients=10",
            "report.enabled=false",
        ],
        tmp_path,
    )
    metrics = evaluate(cfg)["metrics"]
    # ICD-10 codes are well-formed diagnosis codes, not format errors
    assert metrics["validity/invalid_format_rate"]["value"] == 0.0
    assert metrics["validity/violation_rate_any"]["value"] == 0.0
