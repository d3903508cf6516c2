"""Training callbacks that ehrgen adds to every run (beyond the configurable ones in conf/callbacks/)."""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging

from ehrgen.data.cohort import Cohort
from ehrgen.errors import InputError
from ehrgen.privacy.copies import copies, excess_z, item_set_keys
from ehrgen.privacy.small_cells import MIN_CELL, passes, safe_expansion_stats
from ehrgen.sampling.demographics import DemographicsModel
from ehrgen.sampling.sampler import sample_for_check
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


class CopyRateMonitor(Callback):
    """Memorisation control: exact copies of training patients, checked at every validation.

    After each validation epoch the model generates ``n_patients`` patients from demographics
    drawn like the training split's (fixed seed, the sampler's defaults) and counts those whose
    item set equals a training patient's (:mod:`ehrgen.privacy.copies`). The reference is the
    validation split's own collision rate with the training patients: held-out real patients,
    never the test split that reports use. Logged: ``val/copy_rate``, ``val/copy_rate_holdout``,
    ``val/copy_excess`` (the difference) and ``val/copy_excess_z``; the three that involve the
    held-out count are left out when it is a small cell (1-10 patients). The history travels in
    the checkpoint's generation context, so generated cohorts and their reports show copy rate by
    epoch.

    When ``z`` is not None and ``val/copy_excess_z > z`` the model is memorising: its weights are
    rolled back to the last epoch that passed the check (before the checkpoint callbacks save,
    which Lightning runs after every other callback) and training stops, so the run's checkpoints
    hold a model whose copy rate had not passed the held-out one.
    """

    def __init__(
        self,
        cohort: Cohort,
        tokenizer: Any,
        n_patients: int = 2000,
        z: float | None = 2.0,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        if int(n_patients) < 1:
            raise InputError(f"memorisation.n_patients must be >= 1, got {n_patients}")
        if z is not None and not float(z) >= 0:
            raise InputError(f"memorisation.z must be >= 0 or null, got {z}")
        self.n_patients, self.batch_size, self.seed = int(n_patients), int(batch_size), int(seed)
        self.z = None if z is None else float(z)
        self.tokenizer = tokenizer
        self.lo, self.hi = tokenizer.content_range

        def keys(split: str) -> list[bytes]:
            visits = cohort.scan(split).select("visits").collect()["visits"].to_arrow()
            return item_set_keys(tokenizer.encode_batch(visits), self.lo, self.hi)

        self.train_keys = set(keys("train"))
        holdout = keys("val")
        self.n_holdout = len(holdout)
        self.holdout_copies = copies(holdout, self.train_keys)
        self.holdout_reportable = passes([self.holdout_copies], MIN_CELL)
        self.age, self.sex = DemographicsModel.from_cohort(cohort).sample(
            self.n_patients, np.random.default_rng(self.seed)
        )
        self.history: list[dict[str, float]] = []
        self.stopped_epoch: int | None = None
        self._safe_state: dict[str, torch.Tensor] | None = None

    def measure(self, model: Any) -> tuple[int, int]:
        """(copies, patients) among ``n_patients`` generated by ``model`` (a PromptBart)."""
        seqs = sample_for_check(model, self.tokenizer, self.age, self.sex, self.seed, self.batch_size)
        n_copies = copies(item_set_keys(seqs, self.lo, self.hi), self.train_keys)
        return n_copies, self.n_patients

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.n_holdout == 0:
            return
        was_training = pl_module.training
        pl_module.eval()
        n_copies, n = self.measure(pl_module.model)
        pl_module.train(was_training)
        rate, ref = n_copies / n, self.holdout_copies / self.n_holdout
        z = excess_z(n_copies, n, self.holdout_copies, self.n_holdout)
        row = {"copy_rate": rate}
        if self.holdout_reportable:  # the held-out rate is a count of real patients (small-cell rule)
            row.update(copy_rate_holdout=ref, copy_excess=rate - ref, copy_excess_z=z)
        self.history.append({"epoch": float(trainer.current_epoch), **row})
        for name, value in row.items():
            pl_module.log(f"val/{name}", value, on_step=False, on_epoch=True, sync_dist=False)
        if self.z is not None and z > self.z:
            if self._safe_state is not None:
                pl_module.load_state_dict(self._safe_state)
            self.stopped_epoch = int(trainer.current_epoch)
            trainer.should_stop = True
            log.warning(
                "epoch %d: copy rate %.4f passed the held-out patients' %.4f (z=%.1f > %.1f); "
                "weights rolled back to the last epoch that passed, training stops",
                trainer.current_epoch,
                rate,
                ref,
                z,
                self.z,
            )
        else:
            self._safe_state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        context = dict(checkpoint.get(GENERATION_KEY) or {})
        context["memorisation"] = {
            "history": [dict(h) for h in self.history],
            "stopped_epoch": self.stopped_epoch,
            "n_patients": self.n_patients,
            "z": self.z,
        }
        checkpoint[GENERATION_KEY] = context


class EMA(WeightAveraging):
    """Exponential moving average of the weights: validation, checkpoints and generation use it.

    Batches of 16 patients give noisy updates, and generation samples every code from the final
    weights: an average over the last ~``1 / (1 - decay)`` steps removes much of that noise
    without more training. The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates, so early epochs' averages are not dominated by the initial weights. Lightning's
    :class:`~lightning.pytorch.callbacks.WeightAveraging` does the rest: it swaps the average in
    for validation, writes it as the checkpoint's ``state_dict`` (the raw weights ride along to
    resume from) and leaves it in the module when training ends.

    Add it after :class:`CopyRateMonitor`, so the copy check measures (and a roll-back restores)
    the averaged weights that validation sees.
    """

    def __init__(self, decay: float = 0.999) -> None:
        if not 0.0 < float(decay) < 1.0:
            raise InputError(f"ema.decay must lie in (0, 1) (null turns the average off), got {decay}")
        self.decay = float(decay)
        self._raw_at_end: dict[str, torch.Tensor] | None = None
        super().__init__(use_buffers=False, multi_avg_fn=self._update)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._raw_at_end = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # ModelCheckpoint's on_train_end runs after this one and may still write last.ckpt (a run
        # stopped mid-epoch, by max_time or the copy check): keep the raw weights for it, or a
        # resume would continue training from the average.
        self._raw_at_end = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._raw_at_end is not None and "current_model_state" in checkpoint:
            checkpoint["current_model_state"] = self._raw_at_end

    @torch.no_grad()
    def _update(
        self, averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor
    ) -> None:
        n = float(n_averaged)  # one host sync per step, not one per tensor
        decay = min(self.decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
