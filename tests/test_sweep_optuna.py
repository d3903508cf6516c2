"""Optuna sweeps (hydra-optuna-sweeper): the ready-made search space, a real 2-trial study, the summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from test_train import TINY

from ehrgen.config import CONFIG_DIR
from ehrgen.sweep import OPTUNA_RESULTS, SweepSummary, sweep_mode, write_sweep_summary

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs the optional extra ehrgen[optuna]")
optuna = pytest.importorskip("optuna")
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override  # noqa: E402

WEIGHTS = ("model.loss.w_age", "model.loss.w_sex", "model.loss.w_cooc")


def test_search_space_is_what_the_yaml_says() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["sweep=optuna_loss_weights"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 42
    assert (sweeper.direction, sweeper.n_trials, sweeper.n_jobs, sweeper.storage) == ("minimize", 20, 1, None)
    # Parsed exactly as the sweeper parses hydra.sweeper.params.
    parser = OverridesParser.create()
    space = {
        key: create_optuna_distribution_from_override(parser.parse_override(f"{key}={value}"))
        for key, value in sweeper.params.items()
    }
    assert space == {
        "model.loss.w_age": optuna.distributions.LogUniformDistribution(1e-4, 0.1),
        "model.loss.w_sex": optuna.distributions.LogUniformDistribution(1e-4, 0.1),
        "model.loss.w_cooc": optuna.distributions.LogUniformDistribution(1e-3, 0.5),
    }
    # The objective is the weight-independent LM loss, and the summary ranks by it.
    assert cfg.objective == "val/lm"
    assert cfg.hydra.callbacks.sweep_summary.metric == "val/lm"
    assert sweep_mode(cfg) == "min"
    assert cfg.logger.wandb.group == "sweep-optuna_loss_weights"


def _fake_job(sweep: Path, job: str, overrides: list[str], metrics: dict[str, float]) -> None:
    (sweep / job / ".hydra").mkdir(parents=True)
    (sweep / job / "summary.json").write_text(
        json.dumps({"metrics": metrics, "best_checkpoint": f"{job}.ckpt"})
    )
    (sweep / job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))


def test_summary_follows_direction_and_optuna_best_trial(tmp_path: Path) -> None:
    # Three trials; 1 and 2 tie on the objective, Optuna's results name trial 2 (by its parameters).
    for job, w, acc in [("0", 0.5, 0.2), ("1", 0.25, 0.7), ("2", 0.125, 0.7)]:
        _fake_job(tmp_path, job, [f"model.loss.w_cooc={w}", "trainer.max_epochs=1"], {"val/code_acc": acc})
    OmegaConf.save(
        {"name": "optuna", "best_params": {"model.loss.w_cooc": 0.125}, "best_value": 0.7},
        tmp_path / OPTUNA_RESULTS,
    )
    frame = write_sweep_summary(tmp_path, metric="val/code_acc", mode="maximize")
    assert frame["val/code_acc"].to_list() == [0.7, 0.7, 0.2]
    assert frame["overrides"].to_list()[2] == "model.loss.w_cooc=0.5"  # the shared override is left out
    md = (tmp_path / "sweep_summary.md").read_text().splitlines()
    bold = [line for line in md if line.startswith("| **")]
    assert bold == ["| **2** | **model.loss.w_cooc=0.125** | **0.7** |"]
    assert "Best by val/code_acc (max): job 2 (model.loss.w_cooc=0.125)" in md[-2]
    assert md[-1].startswith(f"Optuna best trial ({OPTUNA_RESULTS}): job 2, value 0.7")
    with pytest.raises(ValueError, match="mode must be one of"):
        write_sweep_summary(tmp_path, mode="best")


def test_sweep_mode_reads_the_sweeper_direction() -> None:
    from hydra_plugins.hydra_optuna_sweeper.config import Direction

    assert sweep_mode(OmegaConf.create({"hydra": {"sweeper": {"direction": "maximize"}}})) == "max"
    assert (
        sweep_mode(OmegaConf.create({"hydra": {"sweeper": {"direction": Direction.minimize}}}), "max")
        == "min"
    )
    assert (
        sweep_mode(OmegaConf.create({"hydra": {"sweeper": {"params": {}}}}), "max") == "max"
    )  # grid sweeper
    assert (
        sweep_mode(OmegaConf.create({"hydra": {"sweeper": {"direction": ["minimize", "maximize"]}}})) == "min"
    )
    with pytest.raises(ValueError, match="mode must be one of"):
        SweepSummary(mode="lowest")


@pytest.mark.slow
def test_two_trial_optuna_multirun(tmp_path: Path) -> None:
    env = {**os.environ, "EHRGEN_CACHE": str(tmp_path / "cache")}
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "ehrgen.train", "-m", "sweep=optuna_loss_weights", *TINY,
        "data.n_patients=60", "trainer.max_epochs=1", "model.reconstruction.batches=0",
        "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]  # one job directory per trial
    objective: dict[str, float] = {}
    sampled: list[dict[str, float]] = []
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        objective[job.name] = summary["metrics"]["val/lm"]
        assert list((job / "checkpoints").glob("best-*.ckpt"))
        overrides = dict(
            o.removeprefix("- ").split("=", 1)
            for o in (job / ".hydra/overrides.yaml").read_text().splitlines()
        )
        values = {k: float(overrides[k]) for k in WEIGHTS}
        assert 1e-4 <= values["model.loss.w_age"] <= 0.1 and 1e-4 <= values["model.loss.w_sex"] <= 0.1
        assert 1e-3 <= values["model.loss.w_cooc"] <= 0.5
        # The job trained with the sampled weights (the config it saved, not only the command line).
        job_cfg = OmegaConf.load(job / ".hydra/config.yaml")
        assert {k: OmegaConf.select(job_cfg, k) for k in WEIGHTS} == values
        sampled.append(values)
    assert sampled[0] != sampled[1]

    # Optuna minimised what ehrgen.train returned: the trials' val/lm.
    results = OmegaConf.to_container(OmegaConf.load(sweep / OPTUNA_RESULTS))
    best_job = min(objective, key=objective.get)
    assert results["best_value"] == objective[best_job]
    assert results["best_params"] == pytest.approx(sampled[int(best_job)], rel=1e-12)

    table = pl.read_csv(sweep / "sweep_summary.csv")
    assert table["job"].cast(str).to_list() == sorted(objective, key=objective.get)
    assert table["val/lm"].is_sorted()
    md = (sweep / "sweep_summary.md").read_text().splitlines()
    assert md[2].startswith(f"| **{best_job}** |") and not md[3].startswith("| **")
    assert "data.n_patients" not in md[2]  # shared overrides are not repeated per trial
    assert f"Best by val/lm (min): job {best_job}" in md[-2]
    assert md[-1].startswith(f"Optuna best trial ({OPTUNA_RESULTS}): job {best_job}")
