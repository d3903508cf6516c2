"""Training callbacks that ehrgen adds to every run (beyond the configurable ones in conf/callbacks/)."""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ehrgen.data.cohort import Cohort
from ehrgen.errors import InputError
from ehrgen.privacy.small_cells import MIN_CELL, safe_expansion_stats
from ehrgen.sampling.demographics import DemographicsModel
from ehrgen.sampling.writers import synthetic_id_offset

log = logging.getLogger(__name__)

GENERATION_KEY = "generation"
RNG_KEY = "ehrgen_rng"


class GenerationContext(Callback):
    """Puts what generation needs beside the weights: demographics, id range, code titles.

    All plain lists/dicts of aggregates (no patient rows), so checkpoints stay
    ``weights_only=True``-loadable and shareable under the data-use agreement: every count
    follows the small-cell rule (:mod:`ehrgen.privacy.small_cells`) and no real id is stored.
    """

    def __init__(self, cohort: Cohort, tokenizer: Any = None):
        codes = cohort.codes()
        max_real_id = int(cohort.scan().select("subject_id").max().collect().item())
        self.payload: dict[str, Any] = {
            "small_cell_rule": {"min_cell": MIN_CELL},
            "synthetic_id_offset": synthetic_id_offset(max_real_id),  # a power of ten, not an id
            "code_descriptions": {
                c: d for c, d in zip(codes["code"], codes["description"], strict=True) if d is not None
            },
            "source": str(cohort.meta.get("source")),
        }
        try:
            self.payload["demographics"] = DemographicsModel.from_cohort(cohort).coarsened().to_dict()
        except InputError as err:
            log.warning(
                "%s; generation from this checkpoint needs age=/sex=, demographics_csv= or cohort=", err
            )
        if tokenizer is not None and tokenizer.level == "category":
            from ehrgen.sampling.hierarchical import expansion_stats

            # code-given-category frequencies (per sex and age band) for stage-2 expansion
            self.payload["expansion"] = safe_expansion_stats(expansion_stats(cohort, tokenizer))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[GENERATION_KEY] = self.payload


class RestoreRNG(Callback):
    """Save and restore torch's (and Python's) RNG states so a resumed run draws the same dropout.

    Lightning restores model, optimiser, scheduler, loop and DataModule state but not the global
    RNGs; without them a run resumed from ``last.ckpt`` diverges from an uninterrupted one.
    Stored as tensors and ints only (``weights_only=True``-safe). The restore waits for the first
    training batch: creating the resumed DataLoader iterator draws from the global RNG, which the
    uninterrupted run did at the start of the epoch, before the state was saved.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint[RNG_KEY] = state

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._pending = checkpoint.get(RNG_KEY)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        torch.set_rng_state(state["torch"])
        version, _, gauss = random.getstate()
        random.setstate((version, tuple(state["python"]), gauss))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
