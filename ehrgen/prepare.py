"""Raw EHR tables -> cohort directory (sharded Parquet + metadata).

python -m ehrgen.prepare                                   # built-in simulator
python -m ehrgen.prepare data=mimic3 data.raw_dir=PATH data.cohort_dir=PATH [overwrite=true]
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ehrgen.config import CONFIG_DIR
from ehrgen.data.build import build_cohort, row_accounting
from ehrgen.data.cohort import SCHEMA_VERSION, Cohort, atomic_directory
from ehrgen.data.gem import icd_map_from_config
from ehrgen.errors import InputError, one_line_errors
from ehrgen.options import check_prepare_options, number

log = logging.getLogger(__name__)


def instantiate_source(cfg: DictConfig) -> object:
    """``cfg.data.source`` built from config; a source's own one-line error is raised as it is
    (Hydra wraps exceptions raised inside a ``_target_`` with the call's arguments)."""
    try:
        return instantiate(cfg.data.source)
    except InstantiationException as err:
        if isinstance(err.__cause__, InputError):
            raise err.__cause__ from None
        raise


def cohort_dir_for(cfg: DictConfig) -> Path:
    """``data.cohort_dir``, or a cache folder keyed by the source and its split/shard options."""
    if cfg.data.get("cohort_dir"):
        return Path(str(cfg.data.cohort_dir)).expanduser().absolute()
    source = instantiate_source(cfg)
    icd_map = icd_map_from_config(cfg.data.get("icd_map"))
    key = {
        **source.cache_key(),
        **({"icd_map": icd_map.cache_key()} if icd_map is not None else {}),
        "schema_version": SCHEMA_VERSION,
        "split_seed": cfg.data.split_seed,
        "split_fractions": list(cfg.data.split_fractions),
        "shard_size": cfg.data.shard_size,
        "row_group_size": cfg.data.row_group_size,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(str(cfg.paths.cache_dir)).expanduser().absolute() / "cohorts" / f"{cfg.data.name}-{digest}"


def run(cfg: DictConfig) -> Path:
    """Prepare the cohort described by ``cfg.data``; return its directory."""
    check_prepare_options(cfg)
    source = instantiate_source(cfg)
    out = cohort_dir_for(cfg)
    started = time.perf_counter()
    inputs = [getattr(source, "raw_dir", None)]
    with atomic_directory(out, bool(cfg.get("overwrite", False)), kind="cohort", inputs=inputs) as tmp:
        scratch = tmp / ".scratch"
        scratch.mkdir()
        tables = source.load(scratch)
        meta = build_cohort(
            tables,
            tmp,
            split_seed=int(cfg.data.split_seed),
            split_fractions=tuple(float(f) for f in cfg.data.split_fractions),
            shard_size=int(cfg.data.shard_size),
            row_group_size=int(cfg.data.row_group_size),
            icd_map=icd_map_from_config(cfg.data.get("icd_map")),
            scratch=scratch / "events",
            rows_per_part=number(cfg, "data.rows_per_part", int, 1),
            extra_meta={"options": OmegaConf.to_container(cfg.data, resolve=True)},
        )
        shutil.rmtree(scratch)
    for table, rows in row_accounting(meta).items():
        log.info("%s: %d rows = %d used + %d dropped", table, rows["input"], rows["used"], rows["dropped"])
    counts = meta["counts"]
    dropped = sum(meta["drops"].values())
    log.info(
        "cohort %s: %d patients (train/val/test %s), %d visits, %d unique codes, %d rows dropped, %.1fs",
        out,
        sum(counts["patients"].values()),
        "/".join(str(counts["patients"][s]) for s in ("train", "val", "test")),
        sum(counts["visits"].values()),
        meta["n_unique_codes"],
        dropped,
        time.perf_counter() - started,
    )
    return out


def ensure_cohort(cfg: DictConfig) -> Cohort:
    """The configured cohort, preparing it first when it does not exist yet (training's entry)."""
    out = cohort_dir_for(cfg)
    if not (out / "metadata" / "cohort.json").is_file():
        if out.is_file() or (out.exists() and any(out.iterdir())):
            raise InputError(
                f"data.cohort_dir={out} exists but is not a cohort directory; point data.cohort_dir "
                "at a cohort written by `python -m ehrgen.prepare`, or at a new or empty folder"
            )
        log.info("cohort %s not found: preparing it from data=%s", out, cfg.data.name)
        try:
            run(cfg)
        except (InputError, OSError):
            # Parallel sweep jobs may race to prepare the same cached cohort: the loser uses it.
            if not (out / "metadata" / "cohort.json").is_file():
                raise
    return Cohort(out)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="prepare")
@one_line_errors
def main(cfg: DictConfig) -> None:
    path = run(cfg)
    print(f"cohort written to {path}")


if __name__ == "__main__":
    main()
