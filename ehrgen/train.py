"""Train PromptBart on a cohort (prepared first when missing).

python -m ehrgen.train                          # built-in simulated cohort, flat model
python -m ehrgen.train model=hierarchical       # diagnosis categories, codes expanded at generation
python -m ehrgen.train data=mimic3 data.raw_dir=/data/mimic-iii-1.4 logger=wandb
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf, open_dict

from ehrgen.callbacks import EMA, CopyRateMonitor, GenerationContext, RestoreRNG
from ehrgen.config import CONFIG_DIR
from ehrgen.data.build import token_cooccurrence
from ehrgen.data.cohort import write_json_atomic
from ehrgen.data.vocab import build_tokenizer
from ehrgen.errors import InputError, one_line_errors
from ehrgen.examples import log_examples, synthetic_examples
from ehrgen.module import PromptBartModule
from ehrgen.options import check_resume_checkpoint, check_train_options
from ehrgen.prepare import ensure_cohort

log = logging.getLogger(__name__)


def _wandb_ready(cfg: DictConfig, run_dir: Path) -> None:
    """Offline unless an API key is configured; reuse the run id of this run dir (resume/requeue)."""
    if "_target_" not in cfg.logger.get("wandb", {}):
        return
    with open_dict(cfg):
        if cfg.logger.wandb.get("group") is None and HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            if hydra_cfg.mode == RunMode.MULTIRUN:  # a sweep's jobs share one W&B group
                cfg.logger.wandb.group = f"{cfg.task_name}-{Path(hydra_cfg.sweep.dir).name}"
        has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file()
        if os.environ.get("WANDB_MODE") == "offline" or not has_key:
            cfg.logger.wandb.offline = True
        id_file = run_dir / "wandb_id.txt"
        if cfg.logger.wandb.get("id") is None:
            if id_file.is_file():
                cfg.logger.wandb.id = id_file.read_text().strip()
            else:
                cfg.logger.wandb.id = secrets.token_hex(4)
                run_dir.mkdir(parents=True, exist_ok=True)
                id_file.write_text(cfg.logger.wandb.id)
        cfg.logger.wandb.resume = "allow"


def _instantiate_all(node: DictConfig | None) -> list[Any]:
    return [instantiate(c) for c in (node or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


def _resume_path(cfg: DictConfig, run_dir: Path, tokenizer: dict[str, Any]) -> str | None:
    """The checkpoint to resume (``ckpt_path``, else the run dir's last.ckpt), checked to fit this run."""
    if cfg.get("ckpt_path"):
        path = Path(str(cfg.ckpt_path)).expanduser()
        if not path.is_file():
            raise InputError(f"ckpt_path={path} does not exist")
        label = f"ckpt_path={path}"
    else:
        path = run_dir / "checkpoints" / "last.ckpt"
        if not path.is_file():
            return None
        label = f"{path} (resumed because paths.run_dir holds it)"
    check_resume_checkpoint(path, cfg.model, tokenizer, label)
    return str(path)


def _calibrate(cfg: DictConfig, cohort_dir: Path, checkpoints: list[str | None]) -> dict[str, Any] | None:
    """Fit the logit offsets of each checkpoint on ``calibration.split`` (ehrgen.calibration)."""
    from ehrgen.calibration import calibrate_checkpoint
    from ehrgen.data.cohort import Cohort

    options = cfg.get("calibration") or {}
    split = options.get("split")
    paths = list(dict.fromkeys(p for p in checkpoints if p))
    if not split or not paths:
        return None
    if not Cohort(cohort_dir).meta["counts"]["patients"].get(str(split)):
        log.warning("calibration.split=%s holds no patients: checkpoints left uncalibrated", split)
        return None
    records = {
        path: calibrate_checkpoint(
            path,
            cohort_dir,
            [str(split)],
            int(options.get("max_patients", 5000)),
            int(options.get("batch_size", 32)),
            int(options.get("match_patients", 4000)),
            int(cfg.get("seed") or 0),
        )
        for path in paths
    }
    return records[paths[0]]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit the model described by ``cfg``; return a summary (run dir, best checkpoint, metrics)."""
    check_train_options(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)
    run_dir = Path(str(cfg.paths.run_dir)).absolute()
    cohort = ensure_cohort(cfg)
    tokenizer = build_tokenizer(cohort.path, level=cfg.model.level, min_count=int(cfg.data.min_count))
    resume = _resume_path(cfg, run_dir, tokenizer.to_dict())
    datamodule = instantiate(cfg.data.datamodule)(cohort_dir=str(cohort.path), tokenizer=tokenizer)
    module = PromptBartModule(
        model=cfg.model, tokenizer=tokenizer.to_dict(), cooc=token_cooccurrence(cohort.path, tokenizer)
    )
    if module.model.time_head is not None:
        module.set_time_support(cohort)
    if resume is None and cfg.model.get("age_profile_init", "zero") == "data":
        module.init_age_profile(cohort)

    _wandb_ready(cfg, run_dir)
    loggers: list[Logger] = _instantiate_all(cfg.get("logger"))
    callbacks: list[Callback] = [
        *_instantiate_all(cfg.get("callbacks")),
        GenerationContext(cohort, tokenizer),
        RestoreRNG(),
    ]
    memorisation = cfg.get("memorisation") or {}
    monitor = None
    if int(memorisation.get("n_patients") or 0) > 0:
        monitor = CopyRateMonitor(
            cohort,
            tokenizer,
            n_patients=int(memorisation.n_patients),
            z=memorisation.get("z"),
            batch_size=int(memorisation.get("batch_size", 256)),
            seed=int(cfg.get("seed") or 0),
        )
        callbacks.append(monitor)
    decay = (cfg.get("ema") or {}).get("decay")
    if decay is not None:  # after the monitor: it checks (and rolls back) the averaged weights
        callbacks.append(EMA(float(decay)))
    # submitit owns requeueing on SLURM (it resubmits on timeout/preemption); Lightning must not.
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
    trainer: L.Trainer = instantiate(
        cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=plugins
    )
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))  # config only, never data

    with warnings.catch_warnings():
        # Lightning warns that a mid-epoch resume is unreliable unless the DataLoader itself is
        # stateful; the DataModule restores the data position (state_dict) and RestoreRNG the RNG,
        # and tests/test_train.py checks the resumed losses equal an uninterrupted run's.
        warnings.filterwarnings(
            "ignore", message="You're resuming from a checkpoint that ended before the epoch"
        )
        if resume is not None:  # a resumed run writes into its own checkpoint directory
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        # weights_only=True explicitly: safe on every torch version and despite
        # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (checkpoints hold tensors and plain values only).
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    best = next((c.best_model_path for c in checkpoints if c.best_model_path), None)
    last = next((c.last_model_path for c in checkpoints if c.last_model_path), None)
    if cfg.get("test") and best:
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)

    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "cohort_dir": str(cohort.path),
        "best_checkpoint": best,
        "last_checkpoint": last,
        "global_step": int(trainer.global_step),
        "memorisation": None
        if monitor is None
        else {"history": monitor.history, "stopped_epoch": monitor.stopped_epoch},
        "metrics": {
            k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1
        },
    }
    if trainer.is_global_zero:
        summary["calibration"] = _calibrate(cfg, cohort.path, [best, last])
        ckpt = best or last
        n_examples = int(cfg.get("examples", 0))
        if ckpt and n_examples > 0:
            examples = synthetic_examples(
                ckpt, run_dir / "examples", n_examples, seed=int(cfg.get("seed") or 0)
            )
            summary["examples"] = examples
            log_examples(loggers, examples)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "summary.json", summary)
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.finish()  # one W&B run per job, also inside a multirun sweep
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"\nrun directory:   {summary['run_dir']}")
    print(f"best checkpoint: {summary['best_checkpoint']}")
    shown = {k: v for k, v in summary["metrics"].items() if k.startswith("val/")}
    if shown:
        print(
            "validation:      "
            + "  ".join(f"{k.removeprefix('val/')}={v:.4g}" for k, v in sorted(shown.items()))
        )
    for i, patient in enumerate(summary.get("examples", []), 1):
        print(f"\nsynthetic patient {i}: {patient['sex']}, age {patient['age']:.0f}")
        for j, visit in enumerate(patient["visits"], 1):
            more = f"; ... (+{len(visit) - 6} more)" if len(visit) > 6 else ""
            print(f"  visit {j}: " + "; ".join(visit[:6]) + more)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    """Train; return the sweep objective (``objective``, default val/loss) for sweepers like Optuna."""
    summary = run(cfg)
    _print_summary(summary)
    objective = str(cfg.get("objective") or "val/loss")
    value = summary["metrics"].get(objective)
    # In a sweep a missing objective (a typo, validation switched off) would fail or mislead
    # every trial; a single run without it (no validation) is fine and returns None.
    if value is None and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise InputError(
            f"objective={objective} was not logged; logged metrics: {sorted(summary['metrics'])}"
        )
    print(json.dumps({"val/loss": summary["metrics"].get("val/loss"), objective: value}))
    return value


if __name__ == "__main__":
    main()
