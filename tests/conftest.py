"""Shared fixtures: the real MIMIC-III demo, Hydra composition of the real conf/, tmp cohorts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict
from slurm_cluster import slurm_cluster_env

from ehrgen.config import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
MIMIC3_DEMO = Path(os.environ.get("EHRGEN_MIMIC3_DEMO", REPO.parent / "shared" / "data" / "mimic3-demo"))
ICD9_TABLES = Path(os.environ.get("EHRGEN_ICD9_TABLES", REPO.parent / "shared" / "data" / "icd9"))
# CI sets EHRGEN_REQUIRE_DATA=1: a missing real-data folder then fails instead of skipping.
REQUIRE_DATA = os.environ.get("EHRGEN_REQUIRE_DATA") == "1"
# Nothing in the test suite may talk to W&B's servers.
os.environ.setdefault("WANDB_MODE", "offline")


def _missing(reason: str) -> None:
    if REQUIRE_DATA:
        pytest.fail(f"{reason} and EHRGEN_REQUIRE_DATA=1", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mimic3_demo() -> Path:
    """The real MIMIC-III Clinical Database Demo v1.4 (ODbL); skip when a clone lacks it."""
    if not (MIMIC3_DEMO / "DIAGNOSES_ICD.csv").is_file():
        _missing(f"MIMIC-III demo not found at {MIMIC3_DEMO} (set EHRGEN_MIMIC3_DEMO)")
    return MIMIC3_DEMO


@pytest.fixture(scope="session")
def icd9_tables() -> Path:
    """Official ICD-9-CM tables (shared/data/icd9); skip when absent."""
    if not (ICD9_TABLES / "icd9cm_dx_codes_v32.csv").is_file():
        _missing(f"ICD-9-CM tables not found at {ICD9_TABLES} (set EHRGEN_ICD9_TABLES)")
    return ICD9_TABLES


def compose_config(
    config_name: str, overrides: list[str] | None = None, tmp: Path | None = None
) -> DictConfig:
    """Compose the real conf/ like the command line would, with paths pointed into ``tmp``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=False)
    if tmp is not None:
        with open_dict(cfg):
            cfg.paths.cache_dir = str(tmp / "cache")
            cfg.paths.output_dir = str(tmp / "outputs")
            # ${hydra:runtime.output_dir} only resolves inside @hydra.main; keep explicit overrides.
            if "run_dir" in cfg.paths and OmegaConf.is_interpolation(cfg.paths, "run_dir"):
                cfg.paths.run_dir = str(tmp / "run")
    return cfg


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``compose_cfg("prepare", ["data=mimic3", ...])`` with caches and outputs under tmp_path."""

    def _compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
        return compose_config(config_name, overrides, tmp_path)

    return _compose


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory: pytest.TempPathFactory, mimic3_demo: Path) -> Path:
    """The MIMIC-III demo prepared once per session (read-only for tests)."""
    from ehrgen.prepare import run

    out = tmp_path_factory.mktemp("demo") / "cohort"
    cfg = compose_config(
        "prepare", ["data=mimic3", f"data.raw_dir={mimic3_demo}", f"data.cohort_dir={out}"], out.parent
    )
    return run(cfg)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[dict[str, str]]:
    """The local single-node SLURM cluster (scripts/slurm_local.sh); exports SLURM_CONF."""
    yield from slurm_cluster_env()
