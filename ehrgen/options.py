"""Checks of the options each entry point reads, run before any work: one line naming the key.

A typo like ``trainer.max_epochs=abc`` or ``data.shard_size=-1`` used to fail deep in Lightning
after the model was built, or to write a cohort with no data files; a negative loss weight
trained silently. Every check here names the key, the value and what was expected.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ehrgen.data.gem import gem_path, icd_map_from_config
from ehrgen.errors import InputError

# Trainer keys that take whole numbers: (minimum, values allowed besides, e.g. -1 for "no limit").
TRAINER_INTS = {
    "max_epochs": (0, (-1, None)),
    "min_epochs": (0, (None,)),
    "max_steps": (1, (-1,)),
    "min_steps": (0, (None,)),
    "log_every_n_steps": (1, ()),
    "check_val_every_n_epoch": (1, (None,)),
    "accumulate_grad_batches": (1, ()),
    "num_sanity_val_steps": (-1, ()),
    "num_nodes": (1, ()),
}
# Keys that take an int (a count of batches) or a fraction in [0, 1].
TRAINER_COUNT_OR_FRACTION = (
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "val_check_interval",
)


def _shown(key: str, value: Any) -> str:
    return f"{key}={value!r}"


def number(cfg: DictConfig | dict, key: str, kind: type = int, minimum: float | None = None) -> Any:
    """``cfg[key]`` as ``kind`` (None stays None), at least ``minimum``; else one line naming ``key``."""
    head, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, head) if head and isinstance(cfg, DictConfig) else cfg
    value = node.get(leaf) if node is not None else None
    if value is None:
        return None
    expected = "a whole number" if kind is int else "a number"
    if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
        raise InputError(f"{_shown(key, value)}: expected {expected}")
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise InputError(f"{_shown(key, value)}: expected {expected}") from None
    if kind is float and not math.isfinite(out):
        raise InputError(f"{_shown(key, value)}: expected a finite number")
    if minimum is not None and out < minimum:
        raise InputError(f"{_shown(key, value)}: expected {expected} >= {minimum:g}")
    return out


def check_prepare_options(cfg: DictConfig) -> None:
    """``data.*`` options every source shares (split and shard layout)."""
    number(cfg, "data.shard_size", int, 1)
    number(cfg, "data.row_group_size", int, 1)
    number(cfg, "data.rows_per_part", int, 1)
    number(cfg, "data.split_seed", int)
    fractions = cfg.data.get("split_fractions")
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or min(values) < 0 or not math.isclose(sum(values), 1.0):
        raise InputError(
            f"data.split_fractions={fractions!r}: expected three non-negative numbers summing to 1"
        )
    icd_map = icd_map_from_config(cfg.data.get("icd_map"))
    if icd_map is not None:
        gem_path(icd_map.to, icd_map.gem_dir)  # a missing GEM folder or file fails before any work


def check_train_options(cfg: DictConfig) -> None:
    """Trainer, data-loading, model and loss options of ``ehrgen.train``."""
    check_prepare_options(cfg)
    for key, (minimum, allowed) in TRAINER_INTS.items():
        if key in cfg.trainer and cfg.trainer[key] not in allowed:
            number(cfg, f"trainer.{key}", int, minimum)
    for key in TRAINER_COUNT_OR_FRACTION:
        value = cfg.trainer.get(key)
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            continue
        if isinstance(value, float) and 0.0 <= value <= 1.0:
            continue
        raise InputError(
            f"trainer.{key}={value!r}: expected a whole number of batches or a fraction in [0, 1]"
        )
    number(cfg, "trainer.gradient_clip_val", float, 0.0)
    for key, minimum in (("batch_size", 1), ("eval_batch_size", 1), ("max_length", 2), ("num_workers", 0)):
        number(cfg, f"data.datamodule.{key}", int, minimum)
    number(cfg, "data.min_count", int, 1)
    if not number(cfg, "model.lr", float, 0.0):
        raise InputError(f"model.lr={cfg.model.lr!r}: expected a number > 0")
    number(cfg, "model.weight_decay", float, 0.0)
    number(cfg, "model.warmup_steps", int, 0)
    init = cfg.model.get("age_profile_init", "zero")
    if init not in ("zero", "data"):
        raise InputError(f"model.age_profile_init={init!r}: expected 'zero' or 'data'")
    for key in ("w_age", "w_sex", "w_cooc", "tau"):
        number(cfg, f"model.loss.{key}", float, 0.0)  # a negative weight rewards the model for that loss


# Model options a checkpoint must share with the run that resumes it (the weights' shapes).
SHAPE_KEYS = (
    "d_model", "encoder_layers", "decoder_layers", "attention_heads", "ffn_dim",
    "max_length", "prompt_length", "prompt_hidden", "pretrained", "carry", "age_bands",
)  # fmt: skip


def check_resume_checkpoint(path: Path, model: DictConfig, tokenizer: dict[str, Any], label: str) -> None:
    """Refuse, in one line, a checkpoint this run cannot resume (unreadable, foreign, other shapes).

    Loaded with ``weights_only=True`` (no pickled code runs, whatever the torch version or
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``) and memory-mapped, so the check costs little.
    """
    import torch  # here, not at the top: prepare imports this module and never needs torch

    from ehrgen.module import CHECKPOINT_KEY

    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for truncated, foreign or unsafe files
        raise InputError(
            f"{label}: not a readable ehrgen checkpoint ({type(err).__name__}); "
            "it is truncated, not a checkpoint, or holds objects that are not plain tensors and values"
        ) from None
    saved = raw.get(CHECKPOINT_KEY) if isinstance(raw, dict) else None
    if not isinstance(saved, dict) or "state_dict" not in raw:
        raise InputError(f"{label}: not an ehrgen training checkpoint (no '{CHECKPOINT_KEY}' section)")
    import inspect

    from ehrgen.models.prompt_bart import PromptBart

    # an option a checkpoint predates had the constructor's default (e.g. carry=False)
    defaults = {k: v.default for k, v in inspect.signature(PromptBart).parameters.items()}
    then = dict(saved.get("config") or {})
    base = {k: defaults.get(k) for k in SHAPE_KEYS}
    net_then = {**base, **dict(then.get("net") or {}), "level": then.get("level")}
    net_now = {**base, **OmegaConf.to_container(model.net, resolve=True), "level": model.get("level")}
    differ = [k for k in ("level", *SHAPE_KEYS) if net_then.get(k) != net_now.get(k)]
    if differ:
        shown = ", ".join(f"{k} {net_then.get(k)!r} (now {net_now.get(k)!r})" for k in differ)
        raise InputError(f"{label} was trained with other model options: {shown}; use a new run directory")
    if saved.get("tokenizer") != tokenizer:
        raise InputError(
            f"{label} was trained on another vocabulary (another cohort or data.min_count); "
            "use a new run directory or the same data options"
        )
