"""Training callbacks that ehrgen adds to every run (beyond the configurable ones in conf/callbacks/)."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ehrgen.data.cohort import Cohort
from ehrgen.sampling.demographics import DemographicsModel

GENERATION_KEY = "generation"
RNG_KEY = "ehrgen_rng"


class GenerationContext(Callback):
    """Puts what generation needs beside the weights: demographics, id range, code titles.

    All plain lists/dicts of aggregates (no patient rows), so checkpoints stay
    ``weights_only=True``-loadable and shareable under the data-use agreement.
    """

    def __init__(self, cohort: Cohort, tokenizer: Any = None):
        codes = cohort.codes()
        self.payload = {
            "demographics": DemographicsModel.from_cohort(cohort).to_dict(),
            "max_real_subject_id": int(cohort.scan().select("subject_id").max().collect().item()),
            "code_descriptions": {
                c: d for c, d in zip(codes["code"], codes["description"], strict=True) if d is not None
            },
            "source": str(cohort.meta.get("source")),
        }
        if tokenizer is not None and tokenizer.level == "category":
            from ehrgen.sampling.hierarchical import expansion_stats

            # code-given-category frequencies (per sex and age band) for stage-2 expansion
            self.payload["expansion"] = expansion_stats(cohort, tokenizer)

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
