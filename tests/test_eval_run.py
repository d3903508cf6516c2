"""``ehrgen.evaluate`` end to end: config, outputs, known answers, bad inputs, real data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import compose_config
from test_eval_cohorts import copy_cohort, toy_cohort, toy_patients, write_cohort

from ehrgen.data.cohort import cohort_metadata, write_json_atomic
from ehrgen.errors import InputError
from ehrgen.evaluate import run
from ehrgen.report.descriptions import describe

REPO = Path(__file__).resolve().parents[1]
FAST = ["bootstrap.n=10", "privacy.workers=1", "conditioning.min_stratum_patients=10", "report.enabled=false"]


def _cfg(tmp: Path, real: Path, synthetic: Path, out: str = "out", extra: list[str] | None = None):
    overrides = [f"real={real}", f"synthetic={synthetic}", f"out_dir={tmp / out}", *FAST, *(extra or [])]
    return compose_config("evaluate", overrides, tmp)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    real = toy_cohort(root / "real", 400, 150, seed=1)
    syn = write_cohort(
        root / "syn",
        {"train": toy_patients(300, 77, first_id=10**6), "val": toy_patients(100, 78, first_id=2 * 10**6)},
    )
    return {"root": root, "real": real, "syn": syn, "copy": copy_cohort(real, root / "copy")}


def test_config_defaults_are_explicit():
    cfg = compose_config("evaluate", ["real=a", "synthetic=b", "out_dir=c"])
    assert cfg.task_name == "evaluate"
    assert list(cfg.splits.real) == ["train"] and list(cfg.splits.holdout) == ["test"]
    assert cfg.splits.synthetic is None and cfg.holdout is None and cfg.ckpt is None
    assert cfg.bootstrap.n > 0 and cfg.bootstrap.method == "percentile"


def test_run_writes_report(cohorts, tmp_path, capsys):
    payload = run(_cfg(tmp_path, cohorts["real"], cohorts["syn"], extra=["report.enabled=true"]))
    out = tmp_path / "out"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"].keys() == payload["metrics"].keys()
    assert saved["inputs"]["synthetic"]["splits"] == ["train", "val"]
    assert saved["inputs"]["synthetic"]["n_patients"] == 400
    assert saved["inputs"]["holdout"]["splits"] == ["test"]
    sections = {k.split("/")[0] for k in saved["metrics"]}
    assert {"fidelity", "conditioning", "validity", "privacy", "utility", "reference"} <= sections
    for key, entry in saved["metrics"].items():
        assert {"value", "ci_low", "ci_high", "bias", "n_boot"} <= entry.keys(), key
        if entry["ci_low"] is not None:
            assert entry["ci_low"] <= entry["ci_high"]
    assert saved["metrics"]["fidelity/code/jsd"]["n_boot"] == 10
    undescribed = [k for k in saved["metrics"] if not describe(k)[1]]
    assert not undescribed, undescribed
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(list((out / "figures").glob("*.png"))) >= 7
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "<td>code/jsd</td>" in html and "Jensen-Shannon" in html
    assert "fidelity/code/jsd" in capsys.readouterr().out
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_copy_of_train_is_ideal_fidelity_and_full_copy(cohorts, tmp_path):
    m = run(_cfg(tmp_path, cohorts["real"], cohorts["copy"], extra=["privacy.distances=[jaccard]"]))[
        "metrics"
    ]
    assert m["fidelity/code/jsd"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert m["fidelity/code/prevalence_r2"]["value"] == pytest.approx(1.0)
    assert m["fidelity/category/cooccurrence_r2"]["value"] == pytest.approx(1.0)
    assert m["privacy/jaccard/copy_rate"]["value"] == 1.0
    assert m["privacy/jaccard/mia_advantage"]["value"] > 0.8


def test_out_dir_is_not_overwritten_by_default(cohorts, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    cfg = _cfg(
        tmp_path,
        cohorts["real"],
        cohorts["syn"],
        extra=["privacy.enabled=false", "conditioning.enabled=false"],
    )
    with pytest.raises(InputError, match="already exists"):
        run(cfg)
    assert (tmp_path / "out" / "keep.txt").exists()
    cfg.overwrite = True
    with pytest.raises(InputError, match="not written by ehrgen"):  # a foreign folder is never replaced
        run(cfg)
    assert (tmp_path / "out" / "keep.txt").exists()
    (tmp_path / "out" / "keep.txt").unlink()
    run(cfg)  # an empty folder is used
    run(cfg)  # and ehrgen's own evaluation is replaced
    assert (tmp_path / "out" / "metrics.json").exists()
    cfg.out_dir = str(cohorts["syn"])
    with pytest.raises(InputError, match="an input of this command"):
        run(cfg)


def test_missing_and_empty_cohorts(cohorts, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        run(_cfg(tmp_path, cohorts["real"], tmp_path / "nope"))
    empty = tmp_path / "empty"
    (empty / "metadata").mkdir(parents=True)
    write_json_atomic(
        empty / "metadata" / "cohort.json",
        cohort_metadata("test", counts={"patients": {"train": 0, "val": 0, "test": 0}}),
    )
    with pytest.raises(InputError, match="holds no patients"):
        run(_cfg(tmp_path, cohorts["real"], empty))
    with pytest.raises(InputError, match="holds no patients in split"):
        run(_cfg(tmp_path, cohorts["real"], cohorts["syn"], extra=["splits.synthetic=[test]"]))
    with pytest.raises(InputError, match="unknown split"):
        run(_cfg(tmp_path, cohorts["real"], cohorts["syn"], extra=["splits.synthetic=[dev]"]))
    assert not (tmp_path / "out").exists()


def test_holdout_overlapping_train_is_refused(cohorts, tmp_path):
    with pytest.raises(InputError, match="holdout overlaps real"):
        run(_cfg(tmp_path, cohorts["real"], cohorts["syn"], extra=["splits.holdout=[train,test]"]))
    with pytest.raises(InputError, match=r"holdout overlaps real: \d+ patient"):
        run(
            _cfg(
                tmp_path,
                cohorts["real"],
                cohorts["syn"],
                extra=[f"holdout={cohorts['copy']}", "splits.holdout=[train]"],
            )
        )


def test_disjoint_vocabularies_are_flagged(cohorts, tmp_path):
    frame = toy_patients(200, 5)
    # every code renamed into the E9xxx range, which the toy vocabulary never uses
    renamed = pl.element().struct.with_fields(
        pl.field("codes").list.eval(pl.lit("E9") + pl.element().str.slice(1))
    )
    disjoint = frame.with_columns(pl.col("visits").list.eval(renamed))
    syn = write_cohort(tmp_path / "disjoint", {"train": disjoint})
    payload = run(_cfg(tmp_path, cohorts["real"], syn, extra=["privacy.distances=[jaccard]"]))
    assert any("share no codes" in w for w in payload["warnings"])
    m = payload["metrics"]
    assert m["fidelity/code/jsd"]["value"] == pytest.approx(1.0)
    assert m["validity/unknown_code_rate"]["value"] == pytest.approx(1.0)
    assert m["privacy/jaccard/dcr_train_median"]["value"] == 1.0


def test_cli_end_to_end(cohorts, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "ehrgen.evaluate",
        f"real={cohorts['real']}",
        f"synthetic={cohorts['syn']}",
        f"out_dir={tmp_path / 'cli'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        *FAST,
        "report.enabled=true",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "privacy/jaccard/nnaar" in done.stdout
    assert (tmp_path / "cli" / "metrics.json").is_file() and (tmp_path / "cli" / "report.html").is_file()
    bad = subprocess.run(
        [
            *cmd[:3],
            f"real={tmp_path / 'missing'}",
            cmd[4],
            f"out_dir={tmp_path / 'cli2'}",
            f"hydra.run.dir={tmp_path / 'h2'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert bad.returncode != 0
    assert "error:" in bad.stderr and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_mimic3_demo_smoke(demo_cohort, tmp_path):
    """Real data: the demo's train split against its test split (as a stand-in synthetic cohort)."""
    cfg = _cfg(
        tmp_path,
        demo_cohort,
        demo_cohort,
        extra=["splits.synthetic=[test]", "splits.holdout=[val]", "conditioning.min_stratum_patients=5"],
    )
    payload = run(cfg)
    m = payload["metrics"]
    assert 0 < m["fidelity/code/jsd"]["value"] < 1
    assert 0 < m["fidelity/category/jsd"]["value"] < m["fidelity/code/jsd"]["value"]
    assert m["validity/unknown_code_rate"]["value"] == 0.0  # codes.parquet covers every split
    assert m["validity/invalid_format_rate"]["value"] == 0.0
    assert 0 <= m["privacy/jaccard/share_closer_to_train"]["value"] <= 1
    assert payload["inputs"]["real"]["n_patients"] > payload["inputs"]["synthetic"]["n_patients"] > 0


def test_simulator_independent_cohorts_are_near_ideal(tmp_path):
    """Two cohorts prepared from the built-in simulator with different seeds."""
    from ehrgen.prepare import run as prepare

    paths = []
    for seed in (1, 2):
        out = tmp_path / f"sim{seed}"
        prepare(
            compose_config(
                "prepare",
                ["data=simulated", "data.n_patients=4000", f"data.seed={seed}", f"data.cohort_dir={out}"],
                tmp_path,
            )
        )
        paths.append(out)
    m = run(_cfg(tmp_path, paths[0], paths[1], extra=["bootstrap.n=20"]))["metrics"]
    assert m["fidelity/code/jsd"]["value"] < 0.02
    assert m["fidelity/code/prevalence_r2"]["value"] > 0.95
    assert m["fidelity/category/cooccurrence_r2"]["value"] > 0.8
    assert m["validity/violation_rate_any"]["value"] == 0.0
    assert abs(m["privacy/jaccard/share_closer_to_train"]["value"] - 0.5) < 0.05
    assert abs(m["privacy/jaccard/nnaar"]["value"]) < 0.05
    assert m["privacy/jaccard/mia_advantage"]["value"] < 0.1
    assert abs(m["conditioning/classifier/sex_accuracy/ratio"]["value"] - 1) < 0.1
    assert 0.85 < m["utility/mean/auroc_ratio"]["value"] < 1.15


def fake_model_metrics(ckpt: str, cohort: str, splits: list[str]) -> dict:
    """Stand-in for ehrgen.model_metrics.model_metrics: checks the hook's call signature."""
    assert Path(cohort).is_dir() and list(splits) == ["test"]
    return {
        "perplexity": 12.5,
        "code_accuracy": {"value": 0.4, "ci_low": 0.3, "ci_high": 0.5, "bias": 0.0, "n_boot": 9},
    }


def test_checkpoint_hook(cohorts, tmp_path):
    base = [
        "fidelity.enabled=false",
        "conditioning.enabled=false",
        "privacy.enabled=false",
        "utility.enabled=false",
    ]
    target = "model_metrics._target_=test_eval_run.fake_model_metrics"
    m = run(_cfg(tmp_path, cohorts["real"], cohorts["syn"], extra=[*base, "ckpt=/some/last.ckpt", target]))[
        "metrics"
    ]
    assert m["model/perplexity"]["value"] == 12.5 and m["model/perplexity"]["ci_low"] is None
    assert m["model/code_accuracy"]["ci_high"] == 0.5
    bad = "model_metrics._target_=ehrgen.metrics.no_such_module.fn"
    with pytest.raises(InputError, match="model_metrics could not be built"):
        run(_cfg(tmp_path, cohorts["real"], cohorts["syn"], out="o2", extra=[*base, "ckpt=/x.ckpt", bad]))


def test_synthetic_cohort_given_as_real_is_refused(cohorts, tmp_path):
    """With holdout= given, swapped real/synthetic used to run silently."""
    generated = write_cohort(
        tmp_path / "generated", {"train": toy_patients(50, 5, first_id=10**7)}, source="synthetic"
    )
    for extra in ([f"holdout={cohorts['copy']}"], []):
        with pytest.raises(InputError, match=r"real=.*generated is a synthetic cohort.*swapped"):
            run(_cfg(tmp_path, generated, cohorts["real"], extra=extra))
    with pytest.raises(InputError, match=r"holdout=.*generated is a synthetic cohort"):
        run(_cfg(tmp_path, cohorts["real"], cohorts["syn"], extra=[f"holdout={generated}"]))
    assert not (tmp_path / "out").exists()
