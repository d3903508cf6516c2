"""Diagnoses, procedures and medications end to end on the real MIMIC-III demo: prepare, train,
generate (every export), evaluate per event type."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from ehrgen.data.codes import EVENT_TYPES, event_type
from ehrgen.data.cohort import Cohort
from ehrgen.evaluate import run as evaluate
from ehrgen.generate import run as generate
from ehrgen.prepare import run as prepare
from ehrgen.train import run as train
from tests.conftest import compose_config
from tests.test_train import TINY

pytestmark = pytest.mark.slow
RANK = {kind: i for i, kind in enumerate(EVENT_TYPES)}


@pytest.fixture(scope="module")
def trained(mimic3_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("typed")
    data = ["data=mimic3", f"data.raw_dir={mimic3_demo}", f"data.cohort_dir={tmp / 'cohort'}"]
    return train(compose_config("train", [*TINY, *data, "trainer.max_steps=10", "data.datamodule.max_length=512", "model.net.max_length=512"], tmp))  # fmt: skip


def visit_codes(frame: pl.DataFrame) -> list[list[list[str]]]:
    return frame.sort("subject_id")["visits"].list.eval(pl.element().struct.field("codes")).to_list()


def test_a_model_trains_and_generates_every_event_type(trained: dict, tmp_path: Path) -> None:
    ckpt = trained["best_checkpoint"] or trained["last_checkpoint"]
    out = tmp_path / "gen"
    generate(compose_config("generate", [f"ckpt={ckpt}", "n_patients=60", f"out_dir={out}", "formats=[cohort,mimic3,mimic4,meds]", "progress=false"], tmp_path))  # fmt: skip
    frame = Cohort(out / "cohort").read()
    visits = [v for patient in visit_codes(frame) for v in patient]
    kinds = {event_type(c) for v in visits for c in v}
    assert kinds == set(EVENT_TYPES)
    assert all([RANK[event_type(c)] for c in v] == sorted(RANK[event_type(c)] for c in v) for v in visits)
    assert set(Cohort(out / "cohort").meta["counts"]["events"]) == {"diagnoses", "procedures", "medications"}
    # every export reads back into the same codes, procedures and medications included
    for source in ("mimic3", "mimic4", "meds"):
        back = prepare(compose_config("prepare", [f"data={source}", f"data.raw_dir={out / source}", f"data.cohort_dir={tmp_path / source}"], tmp_path))  # fmt: skip
        assert visit_codes(Cohort(back).read()) == visit_codes(frame), source

    cfg = compose_config(
        "evaluate",
        [f"real={trained['cohort_dir']}", f"synthetic={out / 'cohort'}", f"out_dir={tmp_path / 'eval'}"]
        + [
            "bootstrap.n=10",
            "privacy.workers=1",
            "conditioning.min_stratum_patients=10",
        ],
        tmp_path,
    )
    metrics = evaluate(cfg)["metrics"]
    for kind in EVENT_TYPES:
        assert metrics[f"fidelity/{kind}/jsd"]["value"] is not None, kind
    assert metrics["fidelity/code/cooccurrence_cross_type_r2"]["value"] is not None
    assert metrics["validity/invalid_format_rate"]["value"] == 0.0
    report = (tmp_path / "eval" / "report.html").read_text()
    for kind in EVENT_TYPES:  # one prevalence panel per event type
        assert f"prevalence_{kind}" in report
